"""The PPO core without SUMO: GAE by hand, masks, shared/independent networks, and learning the optimum
of small deterministic problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.ppo.core import PPO, ActorCritic, Batch, PPOConfig, compute_gae, ppo_loss


@pytest.fixture(autouse=True)
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------- GAE
def test_gae_hand_computed():
    # one 3-step sequence ending in a terminal, then a 1-step sequence cut before its end
    r = [1.0, 2.0, 3.0, 1.0]
    v = [0.5, 1.0, 1.5, 0.0]
    d = [0, 0, 1, 0]
    adv, ret = compute_gae(r, v, d, gamma=0.9, lam=0.8, last_value=2.0)
    # t=2: delta = 3 - 1.5 = 1.5                      A = 1.5
    # t=1: delta = 2 + 0.9*1.5 - 1.0 = 2.35           A = 2.35 + 0.72*1.5 = 3.43
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4            A = 1.4 + 0.72*3.43 = 3.8696
    # t=3: delta = 1 + 0.9*2.0 - 0.0 = 2.8 (bootstraps from last_value; t=2's done cut the link)
    np.testing.assert_allclose(adv, [3.8696, 3.43, 1.5, 2.8], rtol=1e-6)
    np.testing.assert_allclose(ret, np.array([3.8696, 3.43, 1.5, 2.8]) + np.array(v), rtol=1e-6)


def test_gae_lambda_one_gives_discounted_returns():
    r = np.array([1.0, 1.0, 1.0])
    adv, ret = compute_gae(r, np.zeros(3), [0, 0, 1], gamma=0.5, lam=1.0)
    np.testing.assert_allclose(ret, [1.75, 1.5, 1.0])


# ------------------------------------------------------------------------------------------- masks
def test_masked_actions_are_never_chosen_and_entropy_is_finite():
    torch.manual_seed(0)
    pol = ActorCritic(4, 5)
    obs = torch.randn(200, 4)
    mask = torch.zeros(200, 5, dtype=torch.bool)
    mask[:, 1] = mask[:, 3] = True
    a, logp, v = pol.act(obs, mask, obs)
    assert set(a.tolist()) <= {1, 3} and len(set(a.tolist())) == 2
    assert torch.isfinite(logp).all() and torch.isfinite(v).all()
    lp, ent, _ = pol.evaluate(obs, mask, a, obs)
    assert torch.isfinite(ent).all() and (ent <= np.log(2) + 1e-5).all()
    assert pol.act(obs, mask, None, greedy=True)[0].tolist() == pol.logits(obs, mask).argmax(-1).tolist()


def test_independent_networks_are_batched_per_agent():
    torch.manual_seed(0)
    pol = ActorCritic(3, 4, n_agents=5, shared=False)
    obs = torch.randn(8, 3)
    mask = torch.ones(8, 4, dtype=torch.bool)
    idx = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    batched = pol.logits(obs, mask, idx)
    for j in range(8):  # the batched gather equals running agent j's own network on its row alone
        one = pol.logits(obs[j : j + 1], mask[j : j + 1], idx[j : j + 1])
        torch.testing.assert_close(batched[j : j + 1], one)
    # different agents, same input -> different outputs (they do not share weights)
    same = obs[:1].repeat(5, 1)
    out = pol.logits(same, mask[:5], torch.arange(5))
    assert not torch.allclose(out[0], out[1])
    shared = ActorCritic(3, 4, n_agents=5, shared=True)
    assert sum(p.numel() for p in pol.parameters()) == 5 * sum(p.numel() for p in shared.parameters())


# ------------------------------------------------------------------------------- learning problems
def _batch(obs, mask, actions, logp, values, adv, ret):
    t = torch.as_tensor
    obs = t(np.asarray(obs, dtype=np.float32))
    return Batch(
        obs=obs,
        mask=t(np.asarray(mask, dtype=bool)),
        actions=t(np.asarray(actions, dtype=np.int64)),
        logp=t(np.asarray(logp, dtype=np.float32)),
        values=t(np.asarray(values, dtype=np.float32)),
        advantages=t(np.asarray(adv, dtype=np.float32)),
        returns=t(np.asarray(ret, dtype=np.float32)),
        critic_in=obs,
        agent_idx=torch.zeros(len(actions), dtype=torch.int64),
    )


def test_ppo_learns_contextual_bandit_optimum():
    """3 contexts x 4 actions (action 3 masked out in context 2); reward 1 for the best arm of each
    context, 0.2 for the others. PPO must end up choosing the best valid arm in every context."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    best = np.array([2, 0, 1])
    cfg = PPOConfig(lr=3e-3, minibatch_size=64, update_epochs=4, ent_coef=0.0)
    pol = ActorCritic(3, 4, hidden=16)
    ppo = PPO(pol, cfg)
    masks = np.ones((3, 4), dtype=bool)
    masks[2, 3] = False
    for _ in range(30):
        ctx = rng.integers(0, 3, size=128)
        obs = np.eye(3, dtype=np.float32)[ctx]
        mask = masks[ctx]
        a, logp, v = pol.act(torch.from_numpy(obs), torch.from_numpy(mask), torch.from_numpy(obs))
        a = a.numpy()
        r = np.where(a == best[ctx], 1.0, 0.2)
        adv, ret = compute_gae(r, v.numpy(), np.ones(128), cfg.gamma, cfg.gae_lambda)
        logs = ppo.update(_batch(obs, mask, a, logp.numpy(), v.numpy(), adv, ret))
        assert all(np.isfinite(logs[k]) for k in ("policy_loss", "value_loss", "entropy", "approx_kl")), logs
    greedy = pol.act(torch.eye(3), torch.from_numpy(masks), None, greedy=True)[0].numpy()
    assert greedy.tolist() == best.tolist()
    probs = pol.log_probs(torch.eye(3), torch.from_numpy(masks)).exp().detach().numpy()
    assert (probs[np.arange(3), best] > 0.9).all()
    assert probs[2, 3] == 0.0


def test_ppo_learns_chain_walk_with_gae():
    """A 6-cell chain, start at 0, goal at 5, reward -1 per step, 12 steps max; left is masked at cell
    0. The optimum (always right, 5 steps) needs multi-step credit assignment through GAE."""
    torch.manual_seed(1)
    n, horizon = 6, 12
    cfg = PPOConfig(lr=3e-3, minibatch_size=64, ent_coef=0.01, gamma=0.99, gae_lambda=0.95)
    pol = ActorCritic(n, 2, hidden=32)
    ppo = PPO(pol, cfg)
    eye = np.eye(n, dtype=np.float32)

    def mask_of(s):
        return np.array([s > 0, True])

    def rollout(episodes, greedy=False):
        O, M, A, LP, V, R, D = [], [], [], [], [], [], []
        lengths = []
        for _ in range(episodes):
            s, steps = 0, 0
            while True:
                o, m = eye[s], mask_of(s)
                a, lp, v = pol.act(torch.from_numpy(o[None]), torch.from_numpy(m[None]), torch.from_numpy(o[None]), greedy=greedy)
                a = int(a[0])
                s = max(s - 1, 0) if a == 0 else s + 1
                steps += 1
                done = s == n - 1 or steps == horizon
                O.append(o), M.append(m), A.append(a), LP.append(float(lp[0])), V.append(float(v[0]))
                R.append(-1.0), D.append(float(done))
                if done:
                    lengths.append(steps)
                    break
        return O, M, A, LP, V, R, D, lengths

    for _ in range(40):
        O, M, A, LP, V, R, D, _ = rollout(16)
        adv, ret = compute_gae(R, V, D, cfg.gamma, cfg.gae_lambda)
        ppo.update(_batch(O, M, A, LP, V, adv, ret))
    *_, lengths = rollout(1, greedy=True)
    assert lengths == [n - 1]


def test_extra_loss_hook_is_added_and_logged():
    """The hook RELED uses: an extra term per minibatch (here behaviour cloning towards action 2 with
    zero PPO advantages) moves the policy and shows up in the logs."""
    torch.manual_seed(0)
    calls = []

    def bc(mb, policy):
        calls.append(len(mb))
        target = torch.full((len(mb),), 2, dtype=torch.int64)
        loss = -policy.log_prob(mb.obs, mb.mask, target, mb.agent_idx).mean()
        return 1.0 * loss, {"bc_loss": loss.detach()}

    pol = ActorCritic(3, 4, hidden=16)
    ppo = PPO(pol, PPOConfig(lr=1e-2, minibatch_size=32, update_epochs=2), extra_loss=bc)
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    mask = np.ones((64, 4), dtype=bool)
    zeros = np.zeros(64)
    for _ in range(20):
        logs = ppo.update(_batch(obs, mask, np.zeros(64), np.log(np.full(64, 0.25)), zeros, zeros, zeros))
    assert calls and calls[0] == 32 and "bc_loss" in logs
    greedy = pol.act(torch.from_numpy(obs), torch.from_numpy(mask), None, greedy=True)[0]
    assert (greedy == 2).all()


def test_ppo_loss_clips_the_ratio():
    """With advantages > 0 and the new policy far above the old one, the clipped surrogate's gradient
    vanishes (ratio beyond 1 + clip)."""
    torch.manual_seed(0)
    pol = ActorCritic(2, 2, hidden=8)
    obs = torch.randn(16, 2)
    mask = torch.ones(16, 2, dtype=torch.bool)
    a = torch.zeros(16, dtype=torch.int64)
    lp = pol.log_prob(obs, mask, a).detach()
    mb = Batch(obs, mask, a, lp - 1.0, torch.zeros(16), torch.ones(16), torch.zeros(16), obs, torch.zeros(16, dtype=torch.int64))
    cfg = PPOConfig(norm_adv=False, ent_coef=0.0, vf_coef=0.0)
    loss, logs = ppo_loss(pol, mb, cfg)
    loss.backward()
    assert float(logs["clipfrac"]) == 1.0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in pol.actor.parameters())


def test_the_action_prior_makes_the_first_candidate_the_untrained_policys_mode():
    """`action_prior` adds a fixed logit to action 0: an untrained network (near-zero logits) then takes
    the env's first candidate with probability e^p / (e^p + k - 1) among k valid actions; 0 leaves every
    action alike. The prior is a buffer, not a parameter: no gradient reaches it, it travels with the
    weights, and a state dict from before it existed loads with the policy's own prior."""
    torch.manual_seed(0)
    obs = torch.randn(500, 8)
    mask = torch.zeros(500, 6, dtype=torch.bool)
    mask[:, :3] = True
    plain = ActorCritic(8, 6, hidden=16)
    primed = ActorCritic(8, 6, hidden=16, action_prior=3.0)
    # the same weights, from a state dict without the prior (an older checkpoint): only the prior differs
    primed.load_state_dict({k: v for k, v in plain.state_dict().items() if k != "prior"})
    assert float(primed.prior[0]) == 3.0 and "prior" not in dict(primed.named_parameters())
    p_plain = plain.log_probs(obs, mask).exp()
    p_primed = primed.log_probs(obs, mask).exp()
    assert p_plain[:, :3].mean(0).tolist() == pytest.approx([1 / 3] * 3, abs=0.02)
    e3 = float(np.exp(3.0))
    assert p_primed[:, 0].mean().item() == pytest.approx(e3 / (e3 + 2), abs=0.02)
    assert float(p_primed[:, 3:].max()) == 0.0  # masked actions stay impossible
    actions, _, _ = primed.act(obs, mask)
    assert 0.85 < float((actions == 0).float().mean()) < 0.95
    # greedy: the prior decides where the network is undecided
    greedy, _, _ = primed.act(obs, mask, greedy=True)
    assert bool((greedy == 0).all())
