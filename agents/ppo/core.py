"""A small PPO core (CleanRL style): one dataclass of hyperparameters, one place for each piece.

* `compute_gae`    - generalised advantage estimation over flat, concatenated sequences
* `masked_logits`  - invalid actions get a large negative logit (never sampled, zero probability)
* `ActorCritic`    - actor and critic MLPs, shared by all agents or one per agent (batched either way)
* `ppo_loss`       - clipped policy loss, (clipped) value loss, entropy bonus
* `PPO.update`     - epochs x minibatches, advantage normalisation, gradient clipping, and a hook for
                     extra loss terms: ``extra_loss(minibatch, policy) -> (tensor, logs)`` is added to
                     the PPO loss of every minibatch (RELED adds ``sum_i w_i * L_BC,i`` through it)

The core knows nothing about SUMO: `agents.marl` turns the env's per-agent decisions into a `Batch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from agents.ppo.config import PPOConfig

MASKED_LOGIT = -1e8  # finite: softmax gives exactly 0, and 0 * logit stays finite in the entropy


# ---------------------------------------------------------------------------------------------- GAE
def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    gamma: float = 0.99,
    lam: float = 0.95,
    last_value: float = 0.0,
    bootstrap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns (= advantage + value) for transitions laid out one after another.

    Transition t is followed by t+1 unless ``dones[t]`` is 1 (its sequence ends there), so the sequences
    of several agents can be concatenated, each ending with a done. A sequence that ends because a time
    limit cut it, not because the agent arrived, goes on beyond the cut: ``bootstrap[t]`` holds the
    critic's value of where the agent stood then (0 for a real end), and the done transition is worth
    ``r_t + gamma * bootstrap[t]`` (Pardo et al., "Time Limits in Reinforcement Learning", 2018). A last
    transition that is not done bootstraps from ``last_value`` (a rollout cut mid-sequence).

        delta_t = r_t + gamma * (V_{t+1} * (1 - d_t) + b_t * d_t) - V_t
        A_t     = delta_t + gamma * lam * (1 - d_t) * A_{t+1}
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    dones = np.asarray(dones, dtype=np.float64)
    boot = np.zeros(len(rewards)) if bootstrap is None else np.asarray(bootstrap, dtype=np.float64)
    n = len(rewards)
    adv = np.zeros(n, dtype=np.float64)
    last = 0.0
    for t in range(n - 1, -1, -1):
        nonterminal = 1.0 - dones[t]
        nxt = values[t + 1] if t + 1 < n else last_value
        delta = rewards[t] + gamma * (nxt * nonterminal + boot[t] * dones[t]) - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv.astype(np.float32), (adv + values).astype(np.float32)


# --------------------------------------------------------------------------------------- networks
def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~mask.bool(), MASKED_LOGIT)


class AgentLinear(nn.Module):
    """A linear layer that is either shared or has one weight matrix per agent.

    Per-agent weights are gathered by agent index and applied in one batched matmul, so inference for
    all deciding agents is a single call either way.
    """

    def __init__(self, n_in: int, n_out: int, n_agents: int = 1, shared: bool = True, std: float = 2**0.5):
        super().__init__()
        self.shared = shared
        k = 1 if shared else n_agents
        w = torch.empty(k, n_out, n_in)
        for i in range(k):
            nn.init.orthogonal_(w[i], std)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(k, n_out))

    def forward(self, x: torch.Tensor, agent_idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.shared:
            return torch.nn.functional.linear(x, self.weight[0], self.bias[0])
        w, b = self.weight[agent_idx], self.bias[agent_idx]
        return torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + b


class MLP(nn.Module):
    def __init__(
        self, n_in: int, n_out: int, hidden: int, n_agents: int, shared: bool, out_std: float, agent_id: bool = False
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                AgentLinear(n_in, hidden, n_agents, shared),
                AgentLinear(hidden, hidden, n_agents, shared),
                AgentLinear(hidden, n_out, n_agents, shared, std=out_std),
            ]
        )
        # agent indication for shared networks: embedding[agent] added to the first layer's output
        self.embedding = nn.Parameter(torch.zeros(n_agents, hidden)) if (agent_id and shared) else None

    def forward(self, x: torch.Tensor, agent_idx: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, agent_idx)
            if i == 0 and self.embedding is not None:
                x = x + self.embedding[agent_idx]
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class ActorCritic(nn.Module):
    """Masked categorical actor on the agent's observation; critic on `critic_size` inputs (the agent's
    own observation for IPPO, agent-specific global state for MAPPO)."""

    def __init__(
        self,
        obs_size: int,
        n_actions: int,
        critic_size: int | None = None,
        hidden: int = 64,
        n_agents: int = 1,
        shared: bool = True,
        agent_id: bool = False,
        action_prior: float = 0.0,
    ):
        super().__init__()
        self.obs_size, self.n_actions = obs_size, n_actions
        # a logit bonus for action 0 (the env's first candidate: live-fastest or free-flow shortest), so the
        # network learns a residual over that choice. A buffer, not a parameter: no gradient, but it travels
        # with the weights (to rollout workers, into checkpoints), since the exploration schedule moves it
        self.register_buffer("prior", torch.zeros(n_actions))
        self.set_prior(action_prior)
        self.critic_size = critic_size or obs_size
        self.n_agents, self.shared = n_agents, shared
        self.actor = MLP(obs_size, n_actions, hidden, n_agents, shared, out_std=0.01, agent_id=agent_id)
        self.critic = MLP(self.critic_size, 1, hidden, n_agents, shared, out_std=1.0, agent_id=agent_id)

    def set_prior(self, value: float) -> None:
        self.prior[0] = float(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before the prior travelled with the weights: its policy had the tree's prior
        state_dict.setdefault(prefix + "prior", self.prior.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def logits(self, obs, mask, agent_idx=None) -> torch.Tensor:
        raw = self.actor(obs, agent_idx)
        return masked_logits(raw + self.prior, mask)  # + 0 leaves every bit of a prior-free policy as it was

    def dist(self, obs, mask, agent_idx=None) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits(obs, mask, agent_idx), validate_args=False)

    def value(self, critic_in, agent_idx=None) -> torch.Tensor:
        return self.critic(critic_in, agent_idx).squeeze(-1)

    def log_probs(self, obs, mask, agent_idx=None) -> torch.Tensor:
        """log pi(. | o) over all actions (masked ones ~ -1e8)."""
        return torch.log_softmax(self.logits(obs, mask, agent_idx), dim=-1)

    def log_prob(self, obs, mask, actions, agent_idx=None) -> torch.Tensor:
        """log pi(a | o): what a behaviour-cloning term needs."""
        return self.log_probs(obs, mask, agent_idx).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def evaluate(self, obs, mask, actions, critic_in, agent_idx=None):
        """(log pi(a|o), entropy, V) for a training minibatch. Masked actions have probability 0 and
        contribute 0 * (-1e8) = 0 to the entropy."""
        lp = self.log_probs(obs, mask, agent_idx)
        entropy = -(lp.exp() * lp).sum(-1)
        return lp.gather(-1, actions.unsqueeze(-1)).squeeze(-1), entropy, self.value(critic_in, agent_idx)

    @torch.no_grad()
    def act(self, obs, mask, critic_in=None, agent_idx=None, greedy: bool = False, generator=None):
        """Batched action selection for all deciding agents: (actions, log-probs, values); values are
        None without critic input (evaluation needs none). Plain log_softmax + multinomial: several times
        faster than torch.distributions for a handful of rows. `generator`: draw from it instead of
        torch's global stream (evaluations that sample leave the training stream alone)."""
        lp = self.log_probs(obs, mask, agent_idx)
        a = lp.argmax(-1) if greedy else torch.multinomial(lp.exp(), 1, generator=generator).squeeze(-1)
        logp = lp.gather(-1, a.unsqueeze(-1)).squeeze(-1)
        v = self.value(critic_in, agent_idx) if critic_in is not None else None
        return a, logp, v


# ------------------------------------------------------------------------------------------- batch
@dataclass
class Batch:
    """Flat training samples. `extra` carries method-specific per-sample tensors (sliced alongside)."""

    obs: torch.Tensor
    mask: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    critic_in: torch.Tensor
    agent_idx: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, idx) -> Batch:
        return Batch(
            **{f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name != "extra"},
            extra={k: v[idx] for k, v in self.extra.items()},
        )


ExtraLoss = Callable[[Batch, ActorCritic], "tuple[torch.Tensor, dict[str, float]]"]


def ppo_loss(policy: ActorCritic, mb: Batch, cfg: PPOConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The PPO loss of one minibatch: clipped surrogate + vf_coef * value loss - ent_coef * entropy."""
    logp, entropy, v = policy.evaluate(mb.obs, mb.mask, mb.actions, mb.critic_in, mb.agent_idx)
    logratio = logp - mb.logp
    ratio = logratio.exp()
    adv = mb.advantages
    if cfg.norm_adv and len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    if cfg.clip_vloss:
        v_clipped = mb.values + (v - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max((v - mb.returns) ** 2, (v_clipped - mb.returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((v - mb.returns) ** 2).mean()
    ent = entropy.mean()
    loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
    with torch.no_grad():
        logs = {
            "policy_loss": pg_loss.detach(),
            "value_loss": v_loss.detach(),
            "entropy": ent.detach(),
            "approx_kl": ((ratio - 1) - logratio).mean(),
            "clipfrac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean(),
        }
    return loss, logs


class PPO:
    """Optimises an ActorCritic on Batches. ``extra_loss`` (optional) adds a term to every minibatch."""

    def __init__(self, policy: ActorCritic, cfg: PPOConfig, extra_loss: ExtraLoss | None = None):
        self.policy = policy
        self.cfg = cfg
        self.extra_loss = extra_loss
        self.opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        n = len(batch)
        if n == 0:
            return {}
        sums: dict[str, float] = {}
        count = 0
        grad_norm = 0.0
        stop = False
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(n)
            for start in range(0, n, cfg.minibatch_size):
                mb = batch[perm[start : start + cfg.minibatch_size]]
                loss, logs = ppo_loss(self.policy, mb, cfg)
                if self.extra_loss is not None:
                    extra, extra_logs = self.extra_loss(mb, self.policy)
                    loss = loss + extra
                    logs = {**logs, **{k: torch.as_tensor(v) for k, v in extra_logs.items()}}
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm))
                self.opt.step()
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
                count += 1
                if cfg.target_kl is not None and float(logs["approx_kl"]) > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        out = {k: v / count for k, v in sums.items()}
        y, v = batch.returns.numpy(), batch.values.numpy()
        var = float(np.var(y))
        out["explained_variance"] = float("nan") if var == 0 else float(1 - np.var(y - v) / var)
        out["n_samples"] = n
        out["n_minibatch_steps"] = count
        return out
