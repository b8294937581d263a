"""Policies that travel (issue 30): every learned method's checkpoint runs on another city with another
agent count, and a checkpoint whose observation differs from the env's is refused with both named.
Real SUMO runs: trained on helsinki, evaluated on kouvola."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents.runner import TrainConfig, read_metrics, train
from evaluation.evaluate import EvaluateError, evaluate_checkpoint

TRAIN = dict(scenario="helsinki", agents=6, horizon=600.0, episodes=1, eval_every=1, seed=3)


@pytest.fixture(scope="module")
def nav_demos(helsinki, tmp_path_factory) -> Path:
    """The navigation app's demonstrations of the training agents, also as LEED's one-shot set."""
    from llm.experts import write_expert_demos

    root = tmp_path_factory.mktemp("demos")
    summary = write_expert_demos(TrainConfig.of(**{k: TRAIN[k] for k in ("scenario", "agents", "horizon")}),
                                 "navigation", root / "nav")  # fmt: skip
    assert summary["agents"] == 6 and summary["demo_samples"] > 0
    shutil.copytree(root / "nav", root / "nav" / "first_round", ignore=shutil.ignore_patterns("first_round"))
    return root / "nav"


@pytest.fixture(scope="module")
def trained(helsinki, nav_demos, tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for method in ("ippo", "mappo", "reled", "leed"):
        out = tmp_path_factory.mktemp(method) / "run"
        demos = {"demos": str(nav_demos)} if method in ("reled", "leed") else {}
        train(TrainConfig.of(method=method, **TRAIN, **demos), out, progress=False)
        runs[method] = out
    return runs


@pytest.mark.parametrize("method", ["ippo", "mappo", "reled", "leed"])
def test_every_learned_method_runs_on_another_city_with_another_agent_count(trained, kouvola, method):
    res = evaluate_checkpoint(trained[method], str(kouvola.path), episodes=1, agents=4, horizon=600.0)
    assert res["trained_on"] == "helsinki" and not res["same_city"] and res["agents"] == 4
    assert res["method"] == method and res["loaded"]["actor"]
    # RELED and LEED learn a per-agent embedding of helsinki's six agents: elsewhere every agent acts
    # with their mean; the critic (one that knows those agents, or MAPPO's helsinki-sized state) stays out
    assert res["loaded"]["agent_embedding"] == ("mean" if method in ("reled", "leed") else None)
    assert res["loaded"]["critic"] is (method == "ippo")
    (ep,) = res["episodes"]
    assert ep["decisions"] > 0 and math.isfinite(ep["return"]) and 0 < ep["mean_travel_time"] <= 600.0


def test_on_its_own_city_a_reled_policy_keeps_its_agents_embedding(trained, helsinki):
    """The same agents get their own rows: the evaluation repeats the run's final one exactly."""
    run = trained["reled"]
    last_eval = [r for r in read_metrics(run) if r["phase"] == "eval"][-1]
    res = evaluate_checkpoint(run, "helsinki", episodes=1, agents=6, horizon=600.0)
    assert res["same_city"] and res["loaded"] == {"actor": True, "critic": True, "agent_embedding": "own"}
    assert res["episodes"][0]["mean_travel_time"] == last_eval["mean_travel_time"]
    assert res["episodes"][0]["decisions"] == last_eval["decisions"]
    # the mean embedding is another policy: on the same city with another agent count it is used too
    other = evaluate_checkpoint(run, "helsinki", episodes=1, agents=5, horizon=600.0)
    assert other["loaded"]["agent_embedding"] == "mean" and other["agents"] == 5


def test_a_checkpoint_with_another_observation_is_refused_naming_both(trained, kouvola):
    with pytest.raises(EvaluateError) as err:
        evaluate_checkpoint(trained["ippo"], str(kouvola.path), agents=4, horizon=300.0,
                            sets=["env.observation=candidate"])  # fmt: skip
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("the checkpoint's observation (observation 'live', max_actions 6, ")
    assert "differs from this environment's (observation 'candidate', max_actions 6, " in msg


# ------------------------------------------------------------------------------- several cities
CITIES = dict(scenario="helsinki,kouvola", method="ippo", agents=6, horizon=600.0, episodes=6, eval_every=3, seed=1)


def _cities(rows: list[dict], phase: str = "train") -> list[tuple[int, str]]:
    return [(r["episode"], r["city"]) for r in rows if r["phase"] == phase]


def test_training_on_two_cities_draws_one_per_episode_by_seed(helsinki, kouvola, tmp_path):
    from agents.cities import city_of
    from tests.test_train import _assert_same_params, _comparable

    train(TrainConfig.of(**CITIES), tmp_path / "a", progress=False)
    rows = read_metrics(tmp_path / "a")
    names = ["helsinki", "kouvola"]
    drawn = _cities(rows)
    assert drawn == [(e, names[city_of(1, e, 2)]) for e in range(1, 7)]
    assert {c for _, c in drawn} == set(names)  # this seed draws both
    # each evaluation runs on every city, one row each, and the two differ
    assert _cities(rows, "eval") == [(e, c) for e in (0, 3, 6) for c in names]
    evals = [r for r in rows if r["phase"] == "eval" and r["episode"] == 6]
    assert evals[0]["mean_travel_time"] != evals[1]["mean_travel_time"]
    # reproducible, and a run stopped after 3 episodes and resumed equals the one that went straight on
    train(TrainConfig.of(**{**CITIES, "episodes": 3}), tmp_path / "b", progress=False)
    train(TrainConfig.of(**CITIES), tmp_path / "b", progress=False, resume=True)
    assert _comparable(read_metrics(tmp_path / "b")) == _comparable(rows)
    _assert_same_params(tmp_path / "a", tmp_path / "b")
    # another seed draws another sequence
    assert [names[city_of(2, e, 2)] for e in range(1, 7)] != [c for _, c in drawn]


def test_training_on_two_cities_with_two_workers_draws_the_same_cities(helsinki, kouvola, tmp_path):
    from tests.test_train import _comparable

    for out in ("w1", "w2"):
        train(TrainConfig.of(**CITIES, rollout_workers=2), tmp_path / out, progress=False)
    a, b = read_metrics(tmp_path / "w1"), read_metrics(tmp_path / "w2")
    assert _comparable(a) == _comparable(b)
    train(TrainConfig.of(**CITIES), tmp_path / "inproc", progress=False)
    assert _cities(a) == _cities(read_metrics(tmp_path / "inproc"))
    assert sorted({r["worker"] for r in a if r["phase"] == "train"}) == [0, 1]


def test_a_run_on_two_cities_logs_each_citys_curve_to_wandb(helsinki, kouvola, tmp_path, monkeypatch):
    """An offline W&B run (real wandb files, read back): every row's figures also under its city."""
    from evaluation.tracking import tracked_train
    from tests.tools.wandb_records import offline_runs, read_run_records

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = TrainConfig.of(**{**CITIES, "episodes": 2, "eval_every": 2})
    tracked_train(cfg, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    history = read_run_records(offline_runs(tmp_path / "run")[-1])["history"]
    assert len(history) == len(rows)
    for h, row in zip(history, rows):
        key = f"{row['phase']}/{row['city']}/mean_travel_time"
        assert h[key] == pytest.approx(row["mean_travel_time"])
        assert h[f"{row['phase']}/mean_travel_time"] == pytest.approx(row["mean_travel_time"])
    # the run's summary holds each city's last evaluation, not only the last city's
    summary = read_run_records(offline_runs(tmp_path / "run")[-1])["summary"]
    for city in ("helsinki", "kouvola"):
        (last,) = [r for r in rows if r["phase"] == "eval" and r["city"] == city and r["episode"] == 2]
        assert summary[f"final/{city}/mean_travel_time"] == pytest.approx(last["mean_travel_time"])


def _city_demos(root: Path, city: str) -> Path:
    from llm.experts import write_expert_demos

    folder = root / city
    summary = write_expert_demos(TrainConfig.of(scenario=city, agents=6, horizon=600.0), "navigation", folder)
    assert summary["agents"] == 6 and summary["demo_samples"] > 0
    return folder


def test_reled_trains_on_two_cities_with_one_demonstrations_set_each(helsinki, kouvola, nav_demos, tmp_path):
    """The expert samples of both cities are learned from; an episode's DTW distances replace only its
    city's agents' (the other city's keep theirs), and the weights of every agent decay with k."""
    import json

    demos = f"{nav_demos},{_city_demos(tmp_path, 'kouvola')}"
    cfg = TrainConfig.of(**{**CITIES, "method": "reled", "episodes": 4, "eval_every": 2}, demos=demos)
    train(cfg, tmp_path / "run", progress=False)
    method = json.loads((tmp_path / "run" / "config.json").read_text())["method"]
    assert method["ppo"]["agent_id"] is False  # on several cities no method knows its agent
    names = method["demo_agents"]
    per_city = {c: [n for n in names if n.startswith(c + "/")] for c in ("helsinki", "kouvola")}
    assert per_city["helsinki"] and per_city["kouvola"] and len(names) == len(per_city["helsinki"] + per_city["kouvola"])
    n = len(names)
    rows = [r for r in read_metrics(tmp_path / "run") if r["phase"] == "train"]
    assert {r["city"] for r in rows} == {"helsinki", "kouvola"}  # seed 1 draws both in 4 episodes
    before = [None] * n
    for r in rows:
        mine = [i for i, a in enumerate(names) if a.startswith(r["city"] + "/")]
        other = [i for i in range(n) if i not in mine]
        assert len(r["dtw"]) == len(r["bc_weights"]) == n
        assert all(r["dtw"][i] is not None for i in mine)  # every agent of the city drove
        assert [r["dtw"][i] for i in other] == [before[i] for i in other]
        before = r["dtw"]
    from agents.reled import phi

    for r in rows:  # w_i = w0 * eta**k * phi(DTW_i): a city not driven yet has phi = 1, and decays all the same
        d = np.array([np.nan if x is None else x for x in r["dtw"]])
        assert r["bc_weights"] == pytest.approx((5.0 * 0.9 ** r["reled_k"] * phi(d, 100.0)).tolist(), abs=1e-3)
    (warm,) = [r for r in read_metrics(tmp_path / "run") if "pretrain_agreement" in r]  # the warm start on both
    assert warm["pretrain_agreement"] > warm["pretrain_agreement_before"]
    # resumed, the run goes on exactly: the weights' state per city travels in the checkpoint
    train(TrainConfig.of(**{**CITIES, "method": "reled", "episodes": 2, "eval_every": 2}, demos=demos),
          tmp_path / "half", progress=False)  # fmt: skip
    train(cfg, tmp_path / "half", progress=False, resume=True)
    from tests.test_train import _comparable

    assert _comparable(read_metrics(tmp_path / "half")) == _comparable(read_metrics(tmp_path / "run"))
    # the policy on one of its cities (no per-agent rows), and fine-tuned on kouvola with kouvola's demos:
    # the loaded policy replaces the behaviour-cloning warm start
    res = evaluate_checkpoint(tmp_path / "run", "helsinki", episodes=1, agents=6, horizon=600.0)
    assert res["loaded"] == {"actor": True, "critic": True, "agent_embedding": None}
    kouvola_demos = demos.split(",")[1]
    train(TrainConfig.of(scenario="kouvola", method="reled", agents=6, horizon=600.0, episodes=1, eval_every=0,
                         demos=kouvola_demos), tmp_path / "tuned", init=tmp_path / "run",
          progress=False)  # fmt: skip
    (row,) = [r for r in read_metrics(tmp_path / "tuned") if r["phase"] == "train"]
    assert "pretrain_steps" not in row and row["reled_k"] == 0 and row["update_skipped"] is False
    # on rollout workers each episode's DTW travels with its city: one iteration drives both here
    train(TrainConfig.of(**{**CITIES, "method": "reled", "episodes": 2, "eval_every": 0, "rollout_workers": 2},
                         demos=demos), tmp_path / "workers", progress=False)  # fmt: skip
    wrows = read_metrics(tmp_path / "workers")
    assert sorted(r["city"] for r in wrows if r["phase"] == "train") == ["helsinki", "kouvola"]
    (update,) = [r for r in wrows if r["phase"] == "update"]
    assert len(update["dtw"]) == n and None not in update["dtw"] and update["reled_k"] == 0


def test_mappo_trains_on_two_cities_with_one_padded_critic(helsinki, kouvola, tmp_path):
    """The central critic sees each city's global state padded to the larger one's, then the city's one-hot;
    the actor alone runs on a third setting (kouvola, another agent count)."""
    import torch

    from agents.episode import make_env
    from agents.marl import PPOLearner
    from agents.methods import ppo_config

    cfg = TrainConfig.of(**{**CITIES, "method": "mappo", "episodes": 3, "eval_every": 3})
    train(cfg, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run")
    assert {r["city"] for r in rows if r["phase"] == "train"} == {"helsinki", "kouvola"}
    assert all(r["update_skipped"] is False for r in rows if r["phase"] == "train")
    envs = [make_env(sc, cfg, {"control": "policy"}) for sc in (helsinki, kouvola)]
    try:
        learner = PPOLearner(ppo_config(cfg), critic="central", name="mappo")
        learner.setup_cities(envs)
        sizes = [e.state_size for e in envs]
        assert sizes[0] != sizes[1] and learner.state_size == max(sizes) + 2
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["method"]["policy"]
        critic_in = [v for k, v in state.items() if k.startswith("critic.") and v.dim() == 3][0].shape[-1]
        assert critic_in == learner.state_size + envs[0].obs_size
        learner.switch_env(envs[1])
        envs[1].reset(seed=5)
        g = learner.global_state(envs[1])
        assert g.shape == (learner.state_size,) and g[-2:].tolist() == [0.0, 1.0]
        assert np.array_equal(g[: sizes[1]], envs[1].state()) and not g[sizes[1] : -2].any()
    finally:
        for e in envs:
            e.close()
    res = evaluate_checkpoint(tmp_path / "run", str(kouvola.path), episodes=1, agents=4, horizon=600.0)
    assert res["loaded"]["actor"] and not res["loaded"]["critic"] and res["episodes"][0]["decisions"] > 0
    # a fine-tune on one city starts from the actor (the critic is another size there) and learns
    tuned = TrainConfig.of(scenario="kouvola", method="mappo", agents=4, horizon=600.0, episodes=1, eval_every=0)
    train(tuned, tmp_path / "tuned", init=tmp_path / "run", progress=False)
    start = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["method"]["policy"]
    after = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=False)["method"]["policy"]
    first = next(k for k in start if k.startswith("actor."))
    assert start[first].shape == after[first].shape and not torch.equal(start[first], after[first])


# ------------------------------------------------------------------------------- cosim generalize
GEN = ["generalize", "-s", "helsinki", "--held-out", "kouvola", "--seeds", "2", "--episodes", "2", "--eval-every", "2",
       "--agents", "6", "--horizon", "600", "--eval-episodes", "2", "--fine-tune", "1"]  # fmt: skip


def _cosim(*args: str, timeout: float = 600):
    import os
    import subprocess
    import sys

    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)  # fmt: skip


def test_cosim_generalize_writes_the_table_the_report_and_wandb(helsinki, kouvola, tmp_path, monkeypatch):
    import json
    import statistics

    from tests.tools.wandb_records import offline_runs, read_run_records

    out = tmp_path / "gen"
    # one run fails (an injected fault after its first metrics row): the study goes on without it, says so,
    # exits 1 with the table of the rest, and a rerun tries it again
    monkeypatch.setenv("COSIM_INJECT_FAULT", "kouvola-s1")
    p = _cosim(*GEN, "--out", str(out))
    assert p.returncode == 1 and "warning: 1 run(s) failed (kouvola-s1)" in p.stderr, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert list(res["failed"]) == ["kouvola-s1"] and "injected fault" in res["failed"]["kouvola-s1"]
    partial = res["cities"]["kouvola"]
    assert partial["policies"]["in_city"]["n"] == 1 and partial["policies"]["zero_shot"]["n"] == 2
    assert partial["gap"]["n"] == 1 and partial["policies"]["fine_tuned"]["n"] == 2
    html = (out / "report.html").read_text()
    assert "id='generalization-table'" in html and "<li><code>kouvola-s1</code>: RuntimeError: injected fault" in html
    monkeypatch.delenv("COSIM_INJECT_FAULT")
    p = _cosim(*GEN, "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "training kouvola-s1" in p.stderr and "training multi-s0" not in p.stderr
    assert p.stdout.strip().splitlines()[-1] == str(out / "report.html")
    res = json.loads((out / "results.json").read_text())
    assert res["train"] == ["helsinki"] and res["held_out"] == ["kouvola"] and res["seeds"] == 2
    assert res["failed"] == {}
    city = res["cities"]["kouvola"]
    pol, runs = city["policies"], city["runs"]
    # the policies over the training seeds, the baselines (one run each) over their test episodes
    assert {k: (pol[k]["n"], pol[k]["over"]) for k in pol} == {
        "shortest": (2, "episodes"), "sumo-rerouting": (2, "episodes"), "navigation": (2, "episodes"),
        "zero_shot": (2, "seeds"), "in_city": (2, "seeds"), "fine_tuned": (2, "seeds")}  # fmt: skip
    assert pol["shortest"]["mean"] == pytest.approx(statistics.mean(runs["shortest"][0]["per_episode"]))
    # the zero-shot runs are the helsinki policies, the in-city ones kouvola's, each on the same test seeds
    assert [Path(r["run"]).name for r in runs["zero_shot"]] == ["multi-s0", "multi-s1"]
    assert [Path(r["run"]).name for r in runs["in_city"]] == ["kouvola-s0", "kouvola-s1"]
    assert all(r["agents"] == 6 and len(r["per_episode"]) == 2 for v in runs.values() for r in v)
    gaps = [z["mean_travel_time"] / i["mean_travel_time"] for z, i in zip(runs["zero_shot"], runs["in_city"])]
    assert city["gap"]["mean"] == pytest.approx(statistics.mean(gaps))
    assert pol["zero_shot"]["mean"] == pytest.approx(statistics.mean(r["mean_travel_time"] for r in runs["zero_shot"]))
    html = (out / "report.html").read_text()
    assert "id='generalization-table'" in html and "<th>kouvola</th>" in html
    assert f"<b>{city['gap']['mean']:.3f}</b>" in html
    summary = read_run_records(offline_runs(out / "wandb-summary")[-1])["summary"]
    assert summary["generalize/kouvola/gap"] == pytest.approx(city["gap"]["mean"])
    assert summary["generalize/kouvola/zero_shot"] == pytest.approx(pol["zero_shot"]["mean"])
    # a rerun keeps the finished runs (no training) and their test episodes, and gives the same table
    before = {f: f.stat().st_mtime_ns for f in [*out.glob("runs/*/checkpoint.pt"), *out.glob("runs/*/test-*.json")]}
    assert len(before) == 2 * (3 + 3 * 2)  # 3 baselines and 3 policies x 2 seeds, each with its test file
    p = _cosim(*GEN, "--out", str(out))
    assert p.returncode == 0 and "training" not in p.stderr, p.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in [*out.glob("runs/*/checkpoint.pt"), *out.glob("runs/*/test-*.json")]} == before
    again = json.loads((out / "results.json").read_text())
    assert again["cities"] == res["cities"]
    # another study into the same folder is refused
    p = _cosim(*[a if a != "2" else "3" for a in GEN[:8]], *GEN[8:], "--out", str(out))
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: {out} holds another generalisation study (other cities or settings); choose another --out"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-s", "helsinki,kouvola", "--held-out", "kouvola"],
         "error: held-out cities kouvola are also training cities: a zero-shot result needs cities the policy never "
         "saw (--allow-overlap to evaluate there anyway)"),
        (["-s", "helsinki", "--held-out", "kouvola,atlantis"], "error: unknown city 'atlantis'; known cities: "),
        (["-s", "helsinki", "--held-out", "kouvola", "--fine-tune", "-2"], "error: --fine-tune must be >= 0 episodes, got -2"),
        (["-s", "helsinki,kouvola", "--held-out", "adlershof", "-m", "shortest"],
         "error: training on several cities (--scenario helsinki,kouvola) is for learning methods; shortest learns"),
    ],
)  # fmt: skip
def test_cosim_generalize_bad_input_is_one_line_before_anything_runs(tmp_path, args, message):
    p = _cosim("generalize", *args, "--out", str(tmp_path / "gen"), timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), p.stderr
    assert not (tmp_path / "gen").exists()
