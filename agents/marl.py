"""IPPO and MAPPO on the PPO core, for the env's semi-MDP.

Every agent decides only at junctions, so an agent's transitions are (obs, action) at one decision and
the reward summed until its next decision or the end of its trip (the env delivers the reward of an
action with the agent's next decision or at termination). The reward an agent gets before its first
decision belongs to no action and is not learned from. Reaching the horizon counts as terminal: the
timeout penalty is in the reward and the time of day is in the observation. A training time limit
(``run.time_limit``) is not part of the task: an agent it cuts is bootstrapped from the critic's value
of its final observation (`compute_gae`'s ``bootstrap``).

* IPPO: the critic sees the agent's own observation.
* MAPPO: the critic sees agent-specific global state, ``[env.state(), own observation]``, taken at the
  decision step (the global state alone is identical for all agents deciding in one step, so it could
  not tell their values apart; the MAPPO paper's "agent-specific" state does the same).
  Trained on several cities, the global state is each city's padded to the largest city's, with a
  one-hot of the city at the end: one critic for all, which is training-only (a policy on another
  city needs only the actor).
Both share every hyperparameter (one `PPOConfig`); parameters are shared across agents unless
``PPOConfig.shared`` is False.

Extending (RELED/LEED): pass ``extra_loss(minibatch, policy) -> (loss, logs)`` to the constructor (or
set ``learner.ppo.extra_loss`` later); it is added to every PPO minibatch loss. A per-agent expert term
``sum_i w_i * L_BC,i`` uses ``policy.log_prob(obs_E, mask_E, a_E, agent_idx_E)`` on expert samples. A
subclass may look at the finished episode (``env.trajectory(agent)``) in ``end_episode`` before calling
``super().end_episode``, and return extra logs (per-agent weights, DTW distances) in the dict it returns:
they land in the episode's metrics row.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from agents.base import Method, TrainError
from agents.ppo.core import PPO, ActorCritic, Batch, ExtraLoss, PPOConfig, compute_gae


class _CityShape:
    """What a learner keeps of one city's env when it trains on several: which city, and its sizes."""

    def __init__(self, env) -> None:
        self.key = str(env.scenario.path)
        self.name = env.scenario.name
        self.state_size = env.state_size
        self.agents = list(env.possible_agents)


class _Step:
    __slots__ = ("obs", "mask", "state_row", "action", "logp", "value", "reward", "done", "bootstrap")

    def __init__(self, obs, mask, state_row, action, logp, value):
        self.obs, self.mask, self.state_row = obs, mask, state_row
        self.action, self.logp, self.value = action, logp, value
        self.reward = 0.0
        self.done = False
        self.bootstrap = 0.0  # the value beyond a time limit's cut (0: the sequence really ended)


class PPOLearner(Method):
    """IPPO (``critic="local"``) or MAPPO (``critic="central"``)."""

    learns = True
    collect_only = False  # set in rollout workers: end_episode keeps the samples (take_payload) for the learner
    _payload: dict | None = None
    _sample_eval = False  # this episode is an evaluation that samples (PPOConfig.eval_actions)
    _eval_draws = None
    city_envs: list = []  # training on several cities: one env per city (`setup_cities`)
    city = 0  # the city of the current episode, an index into city_envs

    def __init__(self, cfg: PPOConfig, critic: str = "local", name: str = "ippo", extra_loss: ExtraLoss | None = None):
        super().__init__()
        if critic not in ("local", "central"):
            raise ValueError(f"critic must be local or central, not {critic!r}")
        self.cfg = cfg
        self.critic = critic
        self.name = name
        self.extra_loss = extra_loss
        self.policy: ActorCritic | None = None
        self.ppo: PPO | None = None

    # -------------------------------------------------------------------------------- setup
    def setup(self, env) -> None:
        self.agent_names = list(env.possible_agents)
        self.index = {a: i for i, a in enumerate(self.agent_names)}
        self.obs_size, self.n_actions = env.obs_size, env.config.max_actions
        self.state_size = 0
        if self.critic == "central":  # several cities: the largest city's state, then which city it is
            sizes = [e.state_size for e in self.city_envs] if self.city_envs else [env.state_size]
            self.state_size = max(sizes) + (len(sizes) if len(sizes) > 1 else 0)
        self.policy = ActorCritic(
            self.obs_size,
            self.n_actions,
            critic_size=self.state_size + self.obs_size,
            hidden=self.cfg.hidden,
            n_agents=len(self.agent_names),
            shared=self.cfg.shared,
            agent_id=self.cfg.agent_id,
            action_prior=self.cfg.action_prior,
        )
        self.ppo = PPO(self.policy, self.cfg, self.extra_loss)
        self.timers = {"torch_infer": 0.0, "torch_update": 0.0}

    def describe(self) -> dict:
        return {
            "ppo": asdict(self.cfg),
            "critic": self.critic,
            "parameters": sum(p.numel() for p in self.policy.parameters()),
        }

    # -------------------------------------------------------------------------------- acting
    def setup_cities(self, envs: list) -> None:
        # the envs themselves stay out of checkpoints and of what goes to rollout workers: only which
        # city each is (its scenario's folder) and the sizes read here
        self.city_envs = [_CityShape(e) for e in envs]
        self.setup(envs[0])

    def switch_env(self, env) -> None:
        # another city's agents (only shared networks without per-agent rows train on several cities:
        # TrainConfig.check), so their index is only the order of the batch
        if self.city_envs:
            self.city = self.city_of_env(env)
        if list(env.possible_agents) != self.agent_names:
            self.agent_names = list(env.possible_agents)
            self.index = {a: i for i, a in enumerate(self.agent_names)}

    def city_of_env(self, env) -> int:
        key = str(env.scenario.path)
        for i, c in enumerate(self.city_envs):
            if c.key == key:
                return i
        raise ValueError(f"{key} is not one of this run's cities")

    def global_state(self, env) -> np.ndarray:
        """MAPPO's global state: the env's own, or on several cities the env's padded to the largest
        city's with the city's one-hot at the end (the critic is trained only; the actor never sees it)."""
        s = env.state()
        if len(s) == self.state_size:
            return s
        out = np.zeros(self.state_size, dtype=np.float32)
        out[: len(s)] = s
        out[self.state_size - len(self.city_envs) + self.city] = 1.0
        return out

    def schedule(self, episode: int) -> None:
        self.policy.set_prior(self.cfg.prior_at(episode))

    def begin_episode(self, env, train: bool) -> None:
        self.traj: dict[str, list[_Step]] = {}
        self.states: list[np.ndarray] = []
        self._eval_draws = None  # an evaluation that samples: a generator seeded at its first decision
        self._sample_eval = not train and self.cfg.eval_actions == "sample"

    def act(self, env, obs: dict, train: bool) -> dict:
        names = env.deciding_agents
        if not names:
            return {}
        o = np.stack([obs[a]["observation"] for a in names])
        m = np.stack([obs[a]["action_mask"] for a in names]).astype(bool)
        idx = np.fromiter((self.index[a] for a in names), dtype=np.int64, count=len(names))
        state_row = -1
        critic_in = None
        if train:  # greedy evaluation needs no critic (and MAPPO then skips the costly env.state())
            critic_in = o
            if self.critic == "central":
                self.states.append(self.global_state(env))
                state_row = len(self.states) - 1
                critic_in = np.concatenate([np.broadcast_to(self.states[-1], (len(names), self.state_size)), o], axis=1)
        if self._sample_eval and self._eval_draws is None:  # the env is reset by now: its seed is known
            self._eval_draws = torch.Generator().manual_seed(int(env.sumo_seed))
        t0 = time.perf_counter()
        a, logp, v = self.policy.act(
            torch.from_numpy(o),
            torch.from_numpy(m),
            None if critic_in is None else torch.from_numpy(critic_in),
            torch.from_numpy(idx),
            greedy=not train and not self._sample_eval,
            generator=self._eval_draws,
        )
        a, logp = a.numpy(), logp.numpy()
        v = v.numpy() if v is not None else None
        self.timers["torch_infer"] += time.perf_counter() - t0
        if train:
            for j, name in enumerate(names):
                self.traj.setdefault(name, []).append(
                    _Step(o[j], m[j], state_row, int(a[j]), float(logp[j]), float(v[j]))
                )
        return {name: int(a[j]) for j, name in enumerate(names)}

    def observe(self, env, rew: dict, term: dict, trunc: dict, infos: dict) -> None:
        traj = self.traj
        for name, r in rew.items():
            if r:
                t = traj.get(name)
                if t:
                    t[-1].reward += r
        for done in (term, trunc):
            for name, d in done.items():
                if d:
                    t = traj.get(name)
                    if t:
                        t[-1].done = True
        cut = [n for n, d in trunc.items() if d and traj.get(n) and "final_observation" in infos.get(n, ())]
        if cut:
            self._bootstrap(env, cut, infos)

    def _bootstrap(self, env, names: list[str], infos: dict) -> None:
        """The critic's value of where each agent stood when a time limit cut it: one batched pass."""
        o = np.stack([infos[n]["final_observation"] for n in names])
        idx = torch.from_numpy(np.fromiter((self.index[n] for n in names), dtype=np.int64, count=len(names)))
        critic_in = o
        if self.critic == "central":
            critic_in = np.concatenate(
                [np.broadcast_to(self.global_state(env), (len(names), self.state_size)), o], axis=1
            )
        with torch.no_grad():
            v = self.policy.value(torch.from_numpy(np.ascontiguousarray(critic_in, dtype=np.float32)), idx).numpy()
        for n, value in zip(names, v):
            self.traj[n][-1].bootstrap = float(value)

    # -------------------------------------------------------------------------------- learning
    def episode_payload(self) -> dict | None:
        """This episode's samples as arrays: one sequence per agent (learner order), each ending done.
        What a rollout worker sends to the learner; None when no agent decided."""
        steps: list[_Step] = []
        agent_idx: list[int] = []
        for name in self.agent_names:
            t = self.traj.get(name)
            if not t:
                continue
            t[-1].done = True  # the episode is over for everyone
            steps.extend(t)
            agent_idx.extend([self.index[name]] * len(t))
        if not steps:
            return None
        p = {
            "obs": np.stack([s.obs for s in steps]),
            "mask": np.stack([s.mask for s in steps]),
            "action": np.array([s.action for s in steps], dtype=np.int64),
            "logp": np.array([s.logp for s in steps], dtype=np.float32),
            "value": np.array([s.value for s in steps], dtype=np.float64),
            "reward": np.array([s.reward for s in steps], dtype=np.float64),
            "done": np.array([s.done for s in steps], dtype=np.float64),
            "bootstrap": np.array([s.bootstrap for s in steps], dtype=np.float64),
            "agent_idx": np.array(agent_idx, dtype=np.int64),
        }
        if self.critic == "central":
            p["state_row"] = np.array([s.state_row for s in steps], dtype=np.int64)
            p["states"] = np.stack(self.states)
        return p

    def batch_from(self, payloads: list[dict]) -> Batch:
        """One PPO batch from the samples of one or more episodes; GAE runs over every agent sequence."""

        def cat(key: str) -> np.ndarray:
            return np.concatenate([p[key] for p in payloads]) if len(payloads) > 1 else payloads[0][key]

        values = cat("value")
        adv, ret = compute_gae(cat("reward"), values, cat("done"), self.cfg.gamma, self.cfg.gae_lambda,
                               bootstrap=cat("bootstrap"))  # fmt: skip
        obs = torch.from_numpy(cat("obs"))
        if self.critic == "central":
            states = np.concatenate([p["states"][p["state_row"]] for p in payloads])
            critic_in = torch.from_numpy(np.concatenate([states, obs.numpy()], axis=1))
        else:
            critic_in = obs
        return Batch(
            obs=obs,
            mask=torch.from_numpy(cat("mask")),
            actions=torch.from_numpy(cat("action")),
            logp=torch.from_numpy(cat("logp")),
            values=torch.from_numpy(values.astype(np.float32)),
            advantages=torch.from_numpy(adv),
            returns=torch.from_numpy(ret),
            critic_in=critic_in,
            agent_idx=torch.from_numpy(cat("agent_idx")),
        )

    def build_batch(self) -> Batch:
        return self.batch_from([self.episode_payload()])

    def learn(self, payloads: list[dict | None]) -> dict:
        """One PPO update on the episodes' samples (the learner side of synchronous parallel rollouts)."""
        return self.update_on(payloads)

    def update_on(self, payloads: list[dict | None]) -> dict:
        """The PPO update itself (subclasses that override `learn` for their own bookkeeping call this)."""
        payloads = [p for p in payloads if p is not None]
        if not payloads:
            return {"update_skipped": True}
        t0 = time.perf_counter()
        logs = self.ppo.update(self.batch_from(payloads))
        self.timers["torch_update"] = self.timers.get("torch_update", 0.0) + time.perf_counter() - t0
        logs["update_skipped"] = False
        logs["action_prior"] = float(self.policy.prior[0])
        return logs

    def end_episode(self, env, train: bool, faulted: bool) -> dict:
        if not train:
            return {}
        payload = None if faulted else self.episode_payload()  # SUMO failed mid-episode: its data is dropped
        self.traj, self.states = {}, []
        if self.collect_only:  # a rollout worker: the learner updates on every worker's episode at once
            self._payload = payload
            return {}
        return self.update_on([payload])

    def take_payload(self) -> dict | None:
        p, self._payload = self._payload, None
        return p

    # -------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "optimizer": self.ppo.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.ppo.opt.load_state_dict(state["optimizer"])

    def load_weights(self, state: dict, same_agents: bool = True, observation: tuple[str, str] = ("", "")) -> dict:
        if not isinstance(state, dict) or "policy" not in state:
            raise TrainError("the checkpoint holds no policy weights (a method that learns nothing?)")
        return load_policy(self.policy, state["policy"], same_agents=same_agents, observation=observation)


PER_AGENT = "actor.embedding"  # agent indication (RELED's default): one learned row per training agent


def load_policy(policy, saved: dict, *, same_agents: bool = True, observation: tuple[str, str] = ("", "")) -> dict:
    """Load a checkpoint's policy weights into a policy set up for (possibly) another city.

    The actor must fit; the critic is loaded only if it fits too. The actor's per-agent embedding
    (``agent_id``, on by default for RELED and LEED on one city) belongs to the training city's agents:
    it is loaded as it is for those same agents, and elsewhere every agent gets the mean of the learned
    rows (the policy's average agent), whatever the agent count. `observation` names the checkpoint's observation and this env's,
    for the error when they differ (a TrainError, like every other misfit).
    Returns what was loaded: {"actor": bool, "critic": bool, "agent_embedding": "own" | "mean" | None}."""
    own = policy.state_dict()
    actor = {k: v for k, v in saved.items() if k.startswith("actor.")}
    rows = actor.pop(PER_AGENT, None)
    bad = [k for k, v in actor.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if bad or not actor:
        k = bad[0] if bad else "actor.*"
        got = tuple(saved[k].shape) if k in saved else None
        want = tuple(own[k].shape) if k in own else None
        first = next((n for n in actor if n.endswith(".weight")), None)
        if first in own and saved[first].shape[-1] != own[first].shape[-1]:
            raise TrainError(
                f"the checkpoint's observation ({observation[0] or 'saved'}, {saved[first].shape[-1]} features) "
                f"differs from this environment's ({observation[1] or 'here'}, {own[first].shape[-1]} features)"
            )
        hint = ""
        if got and want and len(got) == 3 and got[0] != want[0]:
            hint = (f"; the checkpoint has one network per agent ({got[0]} agents): evaluate it with "
                    f"--agents {got[0]} or train with shared parameters")  # fmt: skip
        raise TrainError(
            f"the checkpoint's policy does not fit this environment ({k}: saved {got}, needed {want}){hint}"
        )
    embedding = None
    if rows is not None:
        if PER_AGENT not in own:
            raise TrainError("the checkpoint's policy has a per-agent embedding (agent_id) and this one none")
        if same_agents and tuple(rows.shape) == tuple(own[PER_AGENT].shape):
            actor[PER_AGENT], embedding = rows, "own"
        else:
            actor[PER_AGENT] = rows.mean(0, keepdim=True).expand_as(own[PER_AGENT]).clone()
            embedding = "mean"
    critic_fits = (
        embedding != "mean"
        and set(own) == set(saved)
        and all(tuple(own[k].shape) == tuple(v.shape) for k, v in saved.items())
    )
    policy.load_state_dict(saved if critic_fits else {**own, **actor})
    return {"actor": True, "critic": critic_fits, "agent_embedding": embedding}
