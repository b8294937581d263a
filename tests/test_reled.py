"""RELED's hybrid expert-agent optimisation (this project's formalisation), LEED and the ablations.

The weight formula on hand-made trajectories, the loss algebra on a fixed batch, behaviour cloning on a
fixed dataset, and short runs on helsinki with a demonstrations folder recorded here from real rollouts
(agents/ does not import llm/, so the folder is written in the format of `llm.sed` by `record_demos`).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agents.base import TrainError
from agents.methods import METHODS, resolve_demos, set_demo_provider
from agents.ppo.core import PPO, ActorCritic, Batch, PPOConfig, ppo_loss
from agents.reled import RELEDConfig, RELEDLearner, dtw_distance, load_demos, phi, reled_weights
from agents.runner import CHECKPOINT, TrainConfig, read_metrics, train

SMALL = dict(agents=15, horizon=600.0)
TIMING = {"wall_s", "episode_wall_s", "decisions_per_s", "peak_rss_mb", "learner_peak_rss_mb"}  # measured, not computed


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one torch thread (the runner does the same); two threads on a busy 2-core machine
    make these loops ~50x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING and not k.startswith("t_")} for r in rows]


# ------------------------------------------------------------------------- demonstrations on disk
def record_demos(env, policy, seed: int, folder: Path, plans: dict[str, list[str]]) -> int:
    """Run one episode with `policy(env, obs) -> actions` and write it as a demonstrations folder in the
    format of `cosim demos` (demos.npz, agents.json, expert_traces.json, plans.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    obs, _ = env.reset(seed=seed)
    index = {a: i for i, a in enumerate(env.possible_agents)}
    d = {k: [] for k in ("agent", "obs", "mask", "action", "reward", "done")}
    last: dict[str, int] = {}
    while env.agents:
        acts = policy(env, obs)
        for a, act in acts.items():
            last[a] = len(d["agent"])
            for k, v in zip(d, (index[a], obs[a]["observation"], obs[a]["action_mask"], act, 0.0, False)):
                d[k].append(v)
        obs, rew, term, trunc, infos = env.step(acts)
        for a, r in rew.items():
            if a in last:
                d["reward"][last[a]] += r
    n = len(d["agent"])
    np.savez_compressed(
        folder / "demos.npz", agent=np.array(d["agent"], dtype=np.int64),
        obs=np.array(d["obs"], dtype=np.float32).reshape(n, env.obs_size),
        mask=np.array(d["mask"], dtype=np.int8).reshape(n, env.config.max_actions),
        action=np.array(d["action"], dtype=np.int64), reward=np.array(d["reward"], dtype=np.float32),
        done=np.array(d["done"], dtype=bool),
    )  # fmt: skip
    g = env.graph
    traces = {a: [[*map(float, g.xy[g.index[e]]), t] for t, e in env.trajectory(a)] for a in env.possible_agents}
    (folder / "agents.json").write_text(json.dumps(env.possible_agents))
    (folder / "expert_traces.json").write_text(json.dumps(traces))
    (folder / "plans.json").write_text(json.dumps({a: {"edges": e, "candidate": 0} for a, e in plans.items()}))
    return n


@pytest.fixture(scope="module")
def demos(helsinki, tmp_path_factory) -> Path:
    """DIR: a seeded random policy's rollout as the 'expert' (varied actions, so agents stray from it);
    DIR/first_round: the free-flow policy's. plans.json holds the free-flow routes in both."""
    from cosim import EnvConfig, VehicleRoutingEnv
    from cosim.policies import random_actions, shortest_actions

    folder = tmp_path_factory.mktemp("demos") / "sed"
    env = VehicleRoutingEnv(helsinki, EnvConfig(n_agents=SMALL["agents"], horizon=SMALL["horizon"]))
    try:
        g = env.graph
        plans = {t.id: [g.edges[i] for i in g.path(g.index[t.origin], g.index[t.destination])] for t in env.trips}
        rng = np.random.default_rng(0)
        assert record_demos(env, lambda e, o: random_actions(e, o, rng), 7, folder, plans) > 20
        assert record_demos(env, shortest_actions, 7, folder / "first_round", plans) > 10
    finally:
        env.close()
    return folder


def _fake_env(n_agents: int, obs_size: int, n_actions: int):
    return SimpleNamespace(possible_agents=[f"a{i}" for i in range(n_agents)], obs_size=obs_size,
                           config=SimpleNamespace(max_actions=n_actions), state_size=0)  # fmt: skip


def _synthetic_demos(folder: Path, n_agents=4, per_agent=24, obs_size=8, n_actions=4, seed=0) -> Path:
    """A fixed dataset whose expert action is a learnable rule: the valid action with the largest
    feature among the first n_actions observation entries."""
    rng = np.random.default_rng(seed)
    n = n_agents * per_agent
    obs = rng.normal(size=(n, obs_size)).astype(np.float32)
    mask = (rng.random((n, n_actions)) < 0.7).astype(np.int8)
    mask[np.arange(n), rng.integers(n_actions, size=n)] = 1
    action = np.where(mask.astype(bool), obs[:, :n_actions], -np.inf).argmax(1)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "demos.npz", agent=np.repeat(np.arange(n_agents), per_agent), obs=obs, mask=mask,
             action=action, reward=np.zeros(n, np.float32), done=np.zeros(n, bool))  # fmt: skip
    (folder / "agents.json").write_text(json.dumps([f"a{i}" for i in range(n_agents)]))
    (folder / "expert_traces.json").write_text(json.dumps({f"a{i}": [[0, 0, 0], [100, 0, 10]] for i in range(n_agents)}))
    return folder


# ----------------------------------------------------------------------------------- the weights
def test_weight_formula_on_hand_made_trajectories():
    expert = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    same = expert.copy()
    near = expert + [0.0, 30.0]  # one lane over
    far = np.array([[0.0, 0.0], [0.0, 400.0], [300.0, 400.0], [300.0, 0.0]])  # around the block
    d = np.array([dtw_distance(x, expert) for x in (same, near, far)])
    assert d[0] == 0.0 and 0 < d[1] < d[2]
    assert dtw_distance(expert[::-1], expert) > 0  # order matters (a trajectory, not a point set)
    assert dtw_distance(np.repeat(expert, 2, axis=0), expert) == 0.0  # time warping: same route, slower
    assert math.isnan(dtw_distance(np.zeros((0, 2)), expert))

    cfg = RELEDConfig(w0=2.0, eta=0.9, d0=300.0)
    w0 = reled_weights(d, 0, cfg)
    assert w0[0] == 0.0 and w0[0] < w0[1] < w0[2] < 2.0  # farther -> larger, bounded by w0
    assert w0[2] == pytest.approx(2.0 * d[2] / (d[2] + 300.0))
    for k in (1, 5, 20):  # the whole signal decays geometrically with the iteration
        np.testing.assert_allclose(reled_weights(d, k, cfg), w0 * 0.9**k)
    assert reled_weights(np.array([np.nan]), 0, cfg)[0] == 2.0  # no trajectory: full pull
    ex = RELEDConfig(w0=1.0, eta=1.0, d0=300.0, phi="exp")
    assert reled_weights(np.array([300.0]), 7, ex)[0] == pytest.approx(1 - math.exp(-1))
    assert np.all(np.diff(phi(np.linspace(0, 1e5, 50), 300.0)) > 0) and phi(np.array([1e12]), 300.0)[0] <= 1.0
    fixed = RELEDConfig(w0=0.5, adaptive=False)
    np.testing.assert_array_equal(reled_weights(d, 30, fixed), [0.5, 0.5, 0.5])


def test_settings_are_checked():
    from agents.config import RELEDSettings

    assert RELEDConfig.from_settings(RELEDSettings(w0=3, eta=0.5), adaptive=True).eta == 0.5
    for bad, msg in (({"eta": 0}, "eta must be"), ({"eta": 1.5}, "eta must be"), ({"w0": -1}, "w0 must"),
                     ({"d0": 0}, "d0 must"), ({"phi": "cubic"}, "phi must"), ({"pretrain": -1}, "pretrain must")):  # fmt: skip
        with pytest.raises(TrainError, match=msg):
            RELEDConfig.from_settings(RELEDSettings(**bad), adaptive=True)
    # types and names are the configuration tree's: `--set w0=x`, `--set lambda=1`
    from core.settings import SettingsError, resolve

    with pytest.raises(SettingsError, match=r"algorithm\.reled\.w0 must be a number, got 'x'"):
        resolve(TrainConfig, sets=["w0=x"])
    with pytest.raises(SettingsError, match=r"--set lambda: unknown setting"):
        resolve(TrainConfig, sets=["lambda=1"])


# ------------------------------------------------------------------------------------ the loss
def _learner(folder: Path, **rcfg) -> RELEDLearner:
    torch.manual_seed(0)
    rcfg = {"pretrain": 0, **rcfg}
    learner = RELEDLearner(PPOConfig(minibatch_size=32, update_epochs=2), folder, RELEDConfig(**rcfg))
    learner.setup(_fake_env(4, 8, 4))
    return learner


def _batch(n=64, obs_size=8, n_actions=4, seed=1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, n_actions, dtype=torch.bool)
    return Batch(
        obs=torch.randn(n, obs_size, generator=g), mask=mask,
        actions=torch.randint(n_actions, (n,), generator=g), logp=torch.full((n,), -math.log(n_actions)),
        values=torch.randn(n, generator=g), advantages=torch.randn(n, generator=g), returns=torch.randn(n, generator=g),
        critic_in=torch.randn(n, obs_size, generator=g), agent_idx=torch.randint(4, (n,), generator=g),
    )  # fmt: skip


def test_combined_loss_equals_ppo_loss_when_weights_are_zero(tmp_path):
    learner = _learner(_synthetic_demos(tmp_path / "d"))
    batch = _batch()
    learner.weights[:] = 0.0
    learner._set_sample_coef()
    term, logs = learner.bc_loss(batch, learner.policy)
    assert float(term.detach()) == 0.0 and logs["bc_nll"] > 0  # the expert term vanishes, its NLL is still logged
    base, _ = ppo_loss(learner.policy, batch, learner.cfg)
    assert torch.equal(base + term, base)

    # one whole update with the zero-weight term == one plain PPO update, parameter for parameter
    plain = ActorCritic(8, 4, hidden=learner.cfg.hidden, n_agents=4)
    plain.load_state_dict(learner.policy.state_dict())
    torch.manual_seed(5)
    learner.ppo.update(batch)
    torch.manual_seed(5)
    PPO(plain, learner.cfg).update(batch)
    for (k, a), b in zip(learner.policy.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), k

    # nonzero weights: the term is (1/M) sum_i w_i * mean NLL_i
    learner.weights[:] = [0.0, 1.0, 2.0, 0.5]
    learner._set_sample_coef()
    term, _ = learner.bc_loss(batch, learner.policy)
    with torch.no_grad():
        nll = -learner.policy.log_prob(learner.bc_obs, learner.bc_mask, learner.bc_act, learner.bc_agent)
    per_agent = [nll[learner.bc_agent == i].mean() for i in range(4)]
    expected = sum(w * l for w, l in zip(learner.weights, per_agent)) / 4
    assert float(term.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_bc_alone_drives_the_policy_to_the_expert_actions(tmp_path):
    learner = _learner(_synthetic_demos(tmp_path / "d"))
    learner.weights[:] = 1.0
    learner._set_sample_coef()
    before = learner.expert_agreement()
    opt = torch.optim.Adam(learner.policy.actor.parameters(), lr=3e-3)
    for _ in range(300):
        loss, logs = learner.bc_loss(None, learner.policy)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.6 and learner.expert_agreement() == 1.0
    assert float(logs["bc_nll"]) < 0.1


def test_agent_indication_makes_per_agent_choices_imitable(tmp_path):
    """Two agents, identical observations, different expert actions (an LLM plan per trip): a shared policy
    can only learn the marginal; with agent indication (the RELED family's default) it imitates both.
    The zero-initialised embedding leaves the initial policy exactly that of the plain shared network."""
    folder = tmp_path / "d"
    folder.mkdir()
    rng = np.random.default_rng(0)
    obs = np.tile(rng.normal(size=(8, 8)).astype(np.float32), (2, 1))
    action = np.r_[np.zeros(8, int), np.ones(8, int)]
    np.savez(folder / "demos.npz", agent=np.r_[np.zeros(8, int), np.ones(8, int)], obs=obs, mask=np.ones((16, 4), np.int8),
             action=action, reward=np.zeros(16, np.float32), done=np.zeros(16, bool))  # fmt: skip
    (folder / "agents.json").write_text(json.dumps(["a0", "a1"]))
    (folder / "expert_traces.json").write_text(json.dumps({}))
    fits = {}
    for agent_id in (False, True):
        torch.manual_seed(0)
        learner = RELEDLearner(PPOConfig(agent_id=agent_id), folder, RELEDConfig(pretrain=300))
        learner.setup(_fake_env(2, 8, 4))
        if agent_id:
            assert torch.equal(learner.policy.actor.embedding, torch.zeros(2, 64))
            torch.manual_seed(0)
            plain = ActorCritic(8, 4, hidden=64, n_agents=2)
            x, m, i = torch.from_numpy(obs), torch.ones(16, 4, dtype=torch.bool), torch.from_numpy(np.r_[np.zeros(8, int), np.ones(8, int)])
            assert torch.equal(plain.logits(x, m, i), learner.policy.logits(x, m, i))
        else:
            assert learner.policy.actor.embedding is None
        fits[agent_id] = learner.pretrain()["pretrain_agreement"]
    assert fits[False] <= 0.5 + 1e-6 and fits[True] == 1.0


def test_bc_batch_subsamples_unbiasedly(tmp_path):
    learner = _learner(_synthetic_demos(tmp_path / "d"), bc_batch=16)
    learner.weights[:] = 1.0
    learner._set_sample_coef()
    full = learner.bc_coef @ -learner.policy.log_prob(learner.bc_obs, learner.bc_mask, learner.bc_act, learner.bc_agent)
    est = np.mean([float(learner.bc_loss(None, learner.policy)[0].detach()) for _ in range(3000)])
    assert est == pytest.approx(float(full.detach()), rel=0.03)


# ----------------------------------------------------------------------------- runs on helsinki
def test_reled_run_logs_weights_and_finite_losses(demos, tmp_path):
    out = tmp_path / "reled"
    opts = {"demos": str(demos), "w0": 1.0, "eta": 0.5, "d0": 300.0, "pretrain": 200}
    cfg = TrainConfig.of(method="reled", episodes=2, seed=0, eval_every=1, options=opts, **SMALL)
    res = train(cfg, out, progress=False)
    rows = read_metrics(out)
    assert [(r["phase"], r["episode"]) for r in rows] == [("eval", 0), ("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]
    doc = json.loads((out / "config.json").read_text())["method"]
    names = doc["demo_agents"]
    assert doc["demos"]["folder"] == str(demos) and doc["reled"]["adaptive"] and 0 < len(names) <= SMALL["agents"]
    assert doc["ppo"]["agent_id"] is True  # the RELED family's default: shared networks with agent indication
    # the warm start ran once, before the first (evaluation) episode, and brought the policy to the expert
    assert rows[0]["pretrain_steps"] == 200 and rows[0]["pretrain_agreement"] > rows[0]["pretrain_agreement_before"] + 0.1
    assert all("pretrain_steps" not in r for r in rows[1:])
    tr = [r for r in rows if r["phase"] == "train"]
    for k, r in enumerate(tr):
        for key in ("policy_loss", "value_loss", "bc_nll", "bc_term", "dtw_mean", "bc_weight_mean", "expert_agreement"):
            assert math.isfinite(r[key]), (key, r[key])
        assert r["reled_k"] == k and r["reled_decay"] == 0.5**k
        assert len(r["bc_weights"]) == len(r["dtw"]) == len(names)
        w, d = np.array(r["bc_weights"]), np.array([np.nan if x is None else x for x in r["dtw"]])
        assert np.all((w >= 0) & (w <= 0.5**k + 1e-6))
        assert r["bc_weight_min"] <= r["bc_weight_mean"] <= r["bc_weight_max"] and r["dtw_min"] <= r["dtw_max"]
        fin = np.isfinite(d)
        assert fin.sum() + r["dtw_missing"] == len(d)
        np.testing.assert_allclose(w[fin], 0.5**k * d[fin] / (d[fin] + 300.0), rtol=1e-3, atol=1e-4)  # as logged (rounded)
    assert tr[0]["dtw_max"] > 0  # a random expert: some agents strayed from it
    assert res["last_eval"]["episode"] == 2 and math.isfinite(res["last_eval"]["mean_travel_time"])


def test_variants_use_their_demos_and_weights(demos, tmp_path):
    base = dict(episodes=1, seed=0, eval_every=0, options={"demos": str(demos), "w0": 0.3, "pretrain": 0}, **SMALL)
    rows = {}
    for m in ("leed", "reled-fixedw", "reled-nosed"):
        train(TrainConfig.of(method=m, **base), tmp_path / m, progress=False)
        (rows[m],) = read_metrics(tmp_path / m)
        doc = json.loads((tmp_path / m / "config.json").read_text())["method"]
        first = m in ("leed", "reled-nosed")
        assert doc["demos"]["folder"] == str(demos / "first_round" if first else demos)
        assert doc["reled"]["adaptive"] == (m == "reled-nosed")
    for m in ("leed", "reled-fixedw"):  # fixed weight: w0 for everyone, no DTW
        assert set(rows[m]["bc_weights"]) == {0.3} and "dtw" not in rows[m]
    assert "dtw" in rows["reled-nosed"] and rows["reled-nosed"]["bc_weight_max"] < 0.3

    # expert-replay replays plans.json (here the free-flow routes): exactly the shortest baseline
    for m in ("expert-replay", "shortest"):
        train(TrainConfig.of(method=m, episodes=1, seed=1, eval_every=0, options={"demos": str(demos)} if m != "shortest" else {},
                          **SMALL), tmp_path / m, progress=False)  # fmt: skip
    (rep,), (sp,) = read_metrics(tmp_path / "expert-replay"), read_metrics(tmp_path / "shortest")
    assert rep["mean_travel_time"] == sp["mean_travel_time"] and rep["decisions"] == sp["decisions"]
    assert all(METHODS[m].needs_demos for m in ("reled", "leed", "reled-nosed", "reled-fixedw", "expert-replay"))
    from core.settings import locate

    assert {k: locate(TrainConfig, k) for k in ("w0", "eta", "d0", "phi", "bc_batch", "pretrain")} == {
        k: f"algorithm.reled.{k}" for k in ("w0", "eta", "d0", "phi", "bc_batch", "pretrain")}  # `--set w0=…` reaches RELED


def test_resume_equals_uninterrupted(demos, tmp_path, monkeypatch):
    cfg = dict(method="reled", seed=4, eval_every=0, options={"demos": str(demos), "eta": 0.7, "pretrain": 50}, **SMALL)
    train(TrainConfig.of(episodes=3, **cfg), tmp_path / "straight", progress=False)
    train(TrainConfig.of(episodes=1, **cfg), tmp_path / "resumed", progress=False)
    train(TrainConfig.of(episodes=3, **cfg), tmp_path / "resumed", resume=True, progress=False)
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["reled_k"] for r in a if r["phase"] == "train"] == [0, 1, 2]
    assert _comparable(a) == _comparable(b)
    ca = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)["method"]
    cb = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["method"]
    assert ca["reled"]["k"] == cb["reled"]["k"] == 3 and cb["reled"]["pretrained"]  # warm start not redone
    for k in ca["policy"]:
        assert torch.equal(ca["policy"][k], cb["policy"][k]), k

    # the resolved settings (defaults included) are checked too: a changed default cannot slip into a resume
    from agents import reled

    original = reled.RELEDConfig.from_settings.__func__

    def changed_default(cls, settings, adaptive):
        cfg = original(cls, settings, adaptive)
        cfg.d0 = 55.0  # as if the default had been edited between the run and its resumption
        return cfg

    monkeypatch.setattr(reled.RELEDConfig, "from_settings", classmethod(changed_default))
    with pytest.raises(TrainError, match=r"trained with d0=100.0 \(now d0=55.0\)"):
        train(TrainConfig.of(episodes=4, **cfg), tmp_path / "resumed", resume=True, progress=False)
    monkeypatch.undo()

    # other demonstrations under the same path: the resume is refused
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(demos, changed)
    traces = json.loads((changed / "expert_traces.json").read_text())
    (changed / "expert_traces.json").write_text(json.dumps({a: t[:1] for a, t in traces.items()}))
    cfg["options"] = {"demos": str(changed), "pretrain": 0}
    train(TrainConfig.of(episodes=1, **cfg), tmp_path / "c", progress=False)
    (changed / "expert_traces.json").write_text(json.dumps(traces))
    with pytest.raises(TrainError, match="differ from those this run was trained on"):
        train(TrainConfig.of(episodes=2, **cfg), tmp_path / "c", resume=True, progress=False)


# ------------------------------------------------------------------------- demos: where they come from
def test_demo_provider_and_errors(demos, tmp_path, helsinki):
    cfg = TrainConfig.of(method="leed", episodes=1, seed=9, agents=15)
    old = set_demo_provider(None)
    try:
        with pytest.raises(TrainError, match="--demos DIR is required, or run through the cosim CLI"):
            resolve_demos(cfg, first_round=True)
        with pytest.raises(TrainError, match="--demos DIR is required"):
            train(TrainConfig.of(method="reled", episodes=1, **SMALL), tmp_path / "x", progress=False)
        assert not (tmp_path / "x").exists()

        calls = []

        def provider(tree, first_round):
            calls.append((tree.scenario.name, tree.env.n_agents, tree.run.seed, first_round))
            random.random(), np.random.random(), torch.rand(3)  # SED may draw numbers: the run must not notice
            return demos / "first_round" if first_round else demos

        set_demo_provider(provider)
        states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
        assert resolve_demos(cfg, first_round=True) == demos / "first_round"
        assert calls == [("helsinki", 15, 9, True)]
        assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
        assert torch.equal(torch.get_rng_state(), states[2])
        cfg.algorithm.demos = str(demos)  # --demos wins over the provider
        assert resolve_demos(cfg) == demos and resolve_demos(cfg, True) == demos / "first_round" and len(calls) == 1
    finally:
        set_demo_provider(old)

    cfg.algorithm.demos = str(demos / "first_round")  # a folder without first_round/
    with pytest.raises(TrainError, match="has no first_round/ folder"):
        resolve_demos(cfg, first_round=True)
    with pytest.raises(TrainError, match="does not exist"):
        load_demos(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="lacks demos.npz"):
        load_demos(tmp_path / "empty")
    small = _synthetic_demos(tmp_path / "syn", obs_size=5)  # another observation size
    with pytest.raises(TrainError, match="observations of size 5"):
        train(TrainConfig.of(method="reled", episodes=1, options={"demos": str(small)}, **SMALL), tmp_path / "y", progress=False)


def test_cli_demos_and_settings(demos, tmp_path):
    run = [sys.executable, "-m", "agents.cli", "train", "--episodes", "1", "--eval-every", "0", "--agents", "10",
           "--horizon", "300", "--quiet"]  # fmt: skip
    r = subprocess.run([*run, "--method", "reled", "--demos", str(demos), "--set", "w0=0.25", "--set", "lr=0.0005",
                        "--set", "pretrain=10", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["config"]["algorithm"]["demos"] == str(demos) and cfg["config"]["algorithm"]["ppo"]["lr"] == 0.0005
    assert {k: cfg["config"]["algorithm"]["reled"][k] for k in ("w0", "pretrain")} == {"w0": 0.25, "pretrain": 10}
    assert cfg["method"]["reled"]["w0"] == 0.25
    r = subprocess.run([*run, "--method", "ippo", "--demos", str(demos), "--out", str(tmp_path / "i")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip() == "error: --demos is for methods that learn from demonstrations, not 'ippo'"
    r = subprocess.run([*run, "--method", "ippo", "--set", "w0=1", "--out", str(tmp_path / "i")],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "algorithm.reled.w0 is a setting of reled, leed" in r.stderr


def test_reled_with_two_rollout_workers(demos, tmp_path):
    """The warm start runs once, in the learner (before the first evaluation, as in one process); each
    update's weights follow the workers' DTW distances."""
    out = tmp_path / "reled2"
    opts = {"demos": str(demos), "w0": 1.0, "eta": 0.5, "d0": 300.0, "pretrain": 100}
    cfg = TrainConfig.of(method="reled", episodes=4, seed=0, eval_every=4, rollout_workers=2, options=opts, **SMALL)
    train(cfg, out, progress=False)
    rows = read_metrics(out)
    updates = [r for r in rows if r["phase"] == "update"]
    assert [r["reled_k"] for r in updates] == [0, 1] and [r["episode"] for r in updates] == [2, 4]
    assert rows[0]["phase"] == "eval" and rows[0]["pretrain_steps"] == 100
    assert all("pretrain_steps" not in r for r in rows[1:])
    for k, r in enumerate(updates):
        assert r["reled_decay"] == 0.5**k and math.isfinite(r["policy_loss"]) and math.isfinite(r["bc_term"])
        d = np.array([np.nan if x is None else x for x in r["dtw"]])
        w = np.array(r["bc_weights"])
        fin = np.isfinite(d)
        assert fin.any() and r["dtw_max"] > 0
        np.testing.assert_allclose(w[fin], 0.5**k * d[fin] / (d[fin] + 300.0), rtol=1e-3, atol=1e-4)
    assert sorted({r["worker"] for r in rows if r["phase"] == "train"}) == [0, 1]


def test_reled_warm_start_without_evaluations_goes_out_with_the_first_weights(demos, tmp_path):
    out = tmp_path / "reled3"
    opts = {"demos": str(demos), "pretrain": 50}
    cfg = TrainConfig.of(method="reled", episodes=2, seed=0, eval_every=0, rollout_workers=2, options=opts, **SMALL)
    train(cfg, out, progress=False)
    rows = read_metrics(out)
    assert [r["phase"] for r in rows] == ["train", "train", "update"]
    assert rows[-1]["pretrain_steps"] == 50 and rows[-1]["pretrain_agreement"] > rows[-1]["pretrain_agreement_before"]
