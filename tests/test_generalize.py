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
