"""Policies that travel (issue 30): every learned method's checkpoint runs on another city with another
agent count, and a checkpoint whose observation differs from the env's is refused with both named.
Real SUMO runs: trained on helsinki, evaluated on kouvola."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

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
