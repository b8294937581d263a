"""SED at scale (issue 16): prompt-prefix reuse, concurrent remote calls, re-asking only what needs it,
rollouts on worker processes, and `cosim bench sed`.

The remote backend is an OpenAI-compatible stub on 127.0.0.1 that answers after a fixed delay and
records when each request arrived (the remote APIs cannot exist here); the local model and SUMO are
real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from langchain_core.language_models import FakeListChatModel

from llm.sed import SED, SEDConfig, write_outputs
from tests.tools.openai_stub import serve


@pytest.fixture
def stub_env(monkeypatch):
    """A stub answering after 0.5 s, and the environment that points the openai backend at it."""
    server, handler = serve(0.5)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stub-not-a-secret")
    yield handler
    server.shutdown()
    server.server_close()


def _overlap(records) -> int:
    """The most requests the stub was holding at one moment."""
    events = sorted([(r["arrived"], 1) for r in records] + [(r["answered"], -1) for r in records])
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def test_concurrent_calls_overlap_and_each_answer_lands_with_its_subset(helsinki, stub_env, tmp_path):
    cfg = SEDConfig(agents=16, subset_size=2, rounds=1, rollouts=2, llm="openai:stub", max_concurrency=8,
                    cache_path=str(tmp_path / "cache.sqlite"), rollout_workers=1)  # fmt: skip
    sed = SED(helsinki, cfg)
    try:
        assert len(sed.subsets) >= 6 and sed.concurrency == 8
        from llm.sed import _Ask

        asks = [_Ask(s) for s in sed.subsets]
        sed.cache = None
        results = sed._ask_many(asks, rnd=1)
        records = list(stub_env.records)
        assert len(records) == len(asks)
        assert _overlap(records) >= min(8, len(asks)) - 1  # they were in flight together
        assert sed._llm_seconds < 0.5 * len(asks) / 2  # well under the sequential sum of the delays
        by_ids = {tuple(r["ids"]): r["routes"] for r in records}
        for ask, v in zip(asks, results):
            assert v.valid
            assert [v.choice[a] for a in ask.agents] == by_ids[tuple(ask.agents)]  # its own answer
        # one at a time when asked so: no overlap
        stub_env.records.clear()
        sed.cfg.max_concurrency = 1
        sed._ask_many(asks[:3], rnd=1)
        assert _overlap(stub_env.records) == 1
    finally:
        sed.close()


def test_the_cache_answers_a_concurrent_rerun_without_calls(helsinki, stub_env, tmp_path):
    def run(out):
        cfg = SEDConfig(agents=8, subset_size=2, rounds=1, rollouts=2, llm="openai:stub", max_concurrency=4,
                        cache_path=str(tmp_path / "cache.sqlite"), rollout_workers=1)  # fmt: skip
        sed = SED(helsinki, cfg)
        try:
            return write_outputs(sed, sed.run(), out)
        finally:
            sed.close()

    first = run(tmp_path / "one")
    n = len(stub_env.records)
    second = run(tmp_path / "two")
    assert n == first["prompts"] == first["subsets"] and first["llm_calls"] == n
    assert len(stub_env.records) == n  # the re-run sent nothing
    assert second["llm_calls"] == second["prompts"] == 0 and second["cache_hits"] == n
    assert json.loads((tmp_path / "one" / "plans.json").read_text()) == json.loads(
        (tmp_path / "two" / "plans.json").read_text()
    )


def _answers(sed, route_of):
    return [json.dumps({"routes": [route_of(a) for a in s]}) for s in sed.subsets]


def test_a_refinement_round_re_asks_only_the_subsets_that_need_it(helsinki, tmp_path):
    """Round 1's bounds are measured first (SUMO is deterministic for a seed); the threshold is then put
    between the subsets' largest bounds, so some subsets are over it and the others are not."""
    cfg = SEDConfig(agents=12, subset_size=3, rounds=1, rollouts=3, seed=3, rollout_workers=1, max_concurrency=1)
    sed = SED(helsinki, cfg, model=FakeListChatModel(responses=[]))
    try:
        sed.model = FakeListChatModel(responses=_answers(sed, lambda a: 1))
        probe = sed.run()
        worst = [max(probe.rounds[0].bound[a] for a in s) for s in sed.subsets]
        levels = sorted(set(round(w, 9) for w in worst))
        assert len(levels) >= 2, f"no spread in the subsets' bounds: {worst}"
        threshold = (levels[0] + levels[1]) / 2
        over = [i for i, w in enumerate(worst) if w > threshold]
        assert 0 < len(over) < len(sed.subsets)

        sed.cfg.rounds, sed.cfg.threshold = 2, threshold
        sed.log.clear()
        # round 1 as before; round 2 answers route 2 for whoever is asked
        sed.model = FakeListChatModel(responses=_answers(sed, lambda a: 1) + [json.dumps({"routes": [2] * 3})] * 10)
        result = sed.run()
        r1, r2 = result.rounds
        assert r1.asked_subsets == list(range(len(sed.subsets))) and r1.kept_subsets == []
        assert r2.asked_subsets == over and r2.kept_subsets == [i for i in range(len(sed.subsets)) if i not in over]
        asked_round2 = [tuple(rec["agents"]) for rec in sed.log if rec["round"] == 2]
        assert asked_round2 == [tuple(sed.subsets[i]) for i in over]
        assert r2.prompts == len(over) and r2.agents_asked == sum(len(sed.subsets[i]) for i in over)
        assert "Feedback from the previous round" in sed.log[-1]["prompt"][1]["content"]
        kept_round2 = [a for i in r2.kept_subsets for a in sed.subsets[i]]
        best = result.plans if result.best_round == 2 else None
        if best is not None:  # the kept subsets' plans are round 1's, the re-asked ones changed
            assert all(result.choices[a] == 1 for a in kept_round2)
            assert all(result.choices[a] == 2 for i in over for a in sed.subsets[i] if len(sed.candidates[a]) > 2)
        summary = write_outputs(sed, result, tmp_path / "demos")
        rounds = json.loads((tmp_path / "demos" / "rounds.json").read_text())
        assert rounds[1]["asked_subsets"] == over and rounds[1]["kept_subsets"] == r2.kept_subsets
        assert summary["subset_members"] == sed.subsets
    finally:
        sed.close()


def test_an_invalid_subset_is_asked_again_next_round_and_valid_ones_are_kept(helsinki):
    cfg = SEDConfig(agents=8, subset_size=4, rounds=2, rollouts=2, threshold=1e9, reasks=0, rollout_workers=1,
                    max_concurrency=1)  # fmt: skip
    sed = SED(helsinki, cfg, model=FakeListChatModel(responses=[]))
    try:
        assert len(sed.subsets) == 2
        good = json.dumps({"routes": [0] * len(sed.subsets[0])})
        sed.model = FakeListChatModel(responses=[good, "not a plan", json.dumps({"routes": [1] * len(sed.subsets[1])})])
        result = sed.run()
        assert [r.asked_subsets for r in result.rounds] == [[0, 1], [1]]
        assert result.rounds[0].invalid_answers == 1 and result.rounds[1].invalid_answers == 0
        assert result.accepted_round == 2  # everything valid now, and no bound over the huge threshold
    finally:
        sed.close()


def test_rollouts_on_worker_processes_equal_rollouts_here(helsinki, monkeypatch):
    import llm.sed

    monkeypatch.setattr(llm.sed, "POOL_WORTH_S", 0.0)  # start the workers after the first rollout
    sed = SED(helsinki, SEDConfig(agents=20, rollouts=3, rollout_workers=2), model=FakeListChatModel(responses=[]))
    try:
        plans = {a: c[min(1, len(c) - 1)].edges for a, c in sed.candidates.items()}
        seeds = [5, 6, 7]
        pooled = sed.rollouts(plans, seeds)
        assert sed._pool is not None and sed._pool.n == 2
        pids = {s.proc.pid for s in sed._pool.slots}
        assert len(pids) == 2 and os.getpid() not in pids
        sed.cfg.rollout_workers = 1
        here = [llm.sed.execute_plans(sed.env, plans, s) for s in seeds]
        assert [t for t, _ in pooled] == [t for t, _ in here]
        assert [tr for _, tr in pooled] == [tr for _, tr in here]
        assert len(pooled[0][0]) == 20  # every agent arrived and has a travel time
        pool = sed._pool
    finally:
        sed.close()
    assert all(not s.proc.is_alive() for s in pool.slots)  # closing SED stops its workers


@pytest.mark.slow
def test_prompt_prefix_reuse_gives_the_uncached_answers(helsinki):
    """The real local model: the same prompts with the previous call's prefix reused and with the model
    state cleared before every call give identical answers; reuse evaluates fewer prompt tokens."""
    sed = SED(helsinki, SEDConfig(agents=12, subset_size=4, rounds=1, rollouts=2, llm="local"))
    try:
        assert sed.grammar
        from llm.sed import _Ask

        a, b = sed.subsets[:2]
        feedback = f"Feedback from the previous round (measured in simulation):\n- {a[0]}: route 0 took 400 s.\n\n"
        # a, b, then a again with feedback: its head (system prompt and road data) is a's first prompt,
        # which the state cache kept while b was asked
        asks = [_Ask(a), _Ask(b), _Ask(a, feedback)]

        def answers(reuse: bool):
            sed.model.reuse_prefix = reuse
            sed.model.client.reset()
            sed.log.clear()
            sed._ask_many(asks, rnd=1)
            return [(r["response"], r["prompt_tokens"], r["prompt_eval_tokens"]) for r in sed.log]

        reused, fresh = answers(True), answers(False)
        assert [r[0] for r in reused] == [f[0] for f in fresh]
        assert all(json.loads(r[0])["routes"] for r in reused)
        assert all(f[2] == f[1] for f in fresh)  # every prompt token evaluated
        assert all(r[2] < r[1] for r in reused[1:])  # the shared head came from the cache
        assert reused[2][2] < reused[1][2] / 2  # a's road data too: from the state saved after a's call
    finally:
        sed.model.reuse_prefix = True
        sed.close()


def test_bench_sed_reports_the_cost_per_agent(helsinki, stub_env, tmp_path):
    env = dict(os.environ, COSIM_HOME=os.environ.get("COSIM_HOME", ""))
    p = subprocess.run(
        [sys.executable, "-m", "cosim", "bench", "sed", "--scenario", str(helsinki.path), "--agents", "8",
         "--llm", "openai:stub", "--max-concurrency", "4", "--rounds", "1", "--set", "sed.subset_size=2",
         "--set", "sed.rollouts=2", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads(p.stdout)
    for key in ("llm_seconds", "prompts", "seconds_per_agent_round", "rollout_seconds", "prompt_tokens",
                "completion_tokens", "mean_travel_time"):  # fmt: skip
        assert key in row, key
    assert row["prompts"] == row["subsets"] == len(stub_env.records) and row["agents"] == 8
    assert row["prompt_tokens"] == 100 * row["prompts"] and row["completion_tokens"] == 10 * row["prompts"]
    assert row["agents_asked"] == 8 and row["max_concurrency"] == 4
    assert row["seconds_per_agent_round"] == pytest.approx(row["llm_seconds"] / 8, abs=1e-3)
    assert row["llm_seconds"] < 0.5 * row["prompts"]  # the 0.5-s answers overlapped
    assert row["rollout_seconds"] > 0 and row["mean_travel_time"] > 0
