"""Comparisons end to end (`cosim compare`), W&B tracking offline, generalisation (`cosim evaluate`)
and bad input. Real SUMO runs on helsinki with tiny fleets, short horizons and a few episodes; W&B
runs offline (nothing leaves the machine)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from evaluation.compare import CompareError, compare, wants_demos
from evaluation.results import final_row, read_rows
from evaluation.tracking import (
    Tracker,
    config_hash,
    flatten,
    group_name,
    scrub,
    tracked_train,
)
from tests.tools.wandb_records import offline_runs, read_run_records

SECRET = "sk-test-0123456789-do-not-leak"
TINY = dict(seeds=2, episodes=3, agents=12, horizon=900.0, eval_every=1, workers=2)


def run_cli(command: str, *args: str, env_extra: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "cosim", command, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(helsinki, tmp_path_factory):
    """shortest + ippo, 2 seeds x 3 episodes each, W&B offline, a secret in the environment."""
    out = tmp_path_factory.mktemp("cmp") / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("COSIM_TEST_API_KEY", SECRET)
        mp.delenv("COSIM_INJECT_FAULT", raising=False)
        t0 = time.perf_counter()
        res = compare("helsinki", "shortest,ippo", out=out, log=lambda m: None, **TINY)
        res["_test_seconds"] = time.perf_counter() - t0
    return out, res


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_results_json_matches_the_runs_metrics(tiny):
    out, res = tiny
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["methods"] == res["methods"] and len(on_disk["runs"]) == 4
    assert all(r["status"] == "ok" for r in res["runs"]), [r.get("error") for r in res["runs"]]
    for r in res["runs"]:
        rows = read_rows(r["dir"])
        last = final_row(rows)
        assert last["phase"] == "eval" and last["episode"] == TINY["episodes"]
        for k in ("mean_travel_time", "arrival_rate", "return", "teleports"):
            assert r["final"][k] == pytest.approx(last[k]), (r["name"], k)
        assert r["env_steps"] == [x for x in rows if x["phase"] == "train"][-1]["env_steps"]
    for m in ("shortest", "ippo"):
        vals = [final_row(read_rows(out / "runs" / f"{m}-s{s}"))["mean_travel_time"] for s in range(2)]
        st = res["methods"][m]["final"]["mean_travel_time"]
        assert st["mean"] == pytest.approx(np.mean(vals)) and st["std"] == pytest.approx(np.std(vals, ddof=1))
        assert st["min"] == min(vals) and st["max"] == max(vals) and st["n"] == 2
        assert res["methods"][m]["runs_ok"] == 2 and res["methods"][m]["runs_failed"] == 0
    # sample efficiency: the reference is the learned baseline (ippo); target = 1.1 x its mean final value
    ref = res["reference"]
    assert ref["methods"] == ["ippo"] and ref["method"] == "ippo"
    assert ref["target"] == pytest.approx(1.1 * res["methods"]["ippo"]["final"]["mean_travel_time"]["mean"])
    for r in res["runs"]:
        evals = [x for x in read_rows(r["dir"]) if x["phase"] == "eval"]
        hit = next((x for x in evals if x["mean_travel_time"] <= ref["target"]), None)
        if hit is None:
            assert r["sample_efficiency"] is None
        else:
            assert r["sample_efficiency"]["episode"] == hit["episode"]
            assert r["sample_efficiency"]["env_steps"] == hit["env_steps"]
    # when each ippo run first evaluated strictly below shortest's final level
    level = res["methods"]["shortest"]["final"]["mean_travel_time"]["mean"]
    firsts = []
    for r in res["runs"]:
        if r["method"] != "ippo":
            assert r["first_beats"] == {}
            continue
        evals = [x for x in read_rows(r["dir"]) if x["phase"] == "eval"]
        hit = next((x["episode"] for x in evals if x["mean_travel_time"] < level), None)
        assert r["first_beats"] == {"shortest": hit}
        firsts.append(hit)
    fb = res["methods"]["ippo"]["first_beats"]["shortest"]
    assert fb["level"] == level and fb["of"] == 2 and fb["reached"] == sum(f is not None for f in firsts)
    assert res["methods"]["shortest"]["first_beats"] == {}
    # every run recorded routes for the map only for its first seed
    assert (out / "runs" / "ippo-s0" / "routes.json").exists() and not (out / "runs" / "ippo-s1" / "routes.json").exists()


@pytest.mark.slow
def test_offline_wandb_runs_hold_the_logged_metrics(tiny):
    out, res = tiny
    groups = {}
    for r in res["runs"]:
        folders = offline_runs(r["dir"])
        assert folders and folders[-1].name.startswith("offline-run-"), r["dir"]
        rec = read_run_records(folders[-1])
        rows = read_rows(r["dir"])
        assert rec["run"]["job_type"] == r["method"] and rec["run"]["name"] == r["name"]
        assert f"compare-{res['id']}" in rec["run"]["tags"]
        assert rec["config"]["algorithm.method"] == r["method"] and rec["config"]["run.seed"] == r["seed"]
        assert rec["config"]["env.n_agents"] == TINY["agents"]
        groups.setdefault(r["method"], set()).add(rec["run"]["group"])
        # one history row per metrics row, with the same numbers
        assert len(rec["history"]) == len(rows)
        for h, row in zip(rec["history"], rows):
            key = f"{row['phase']}/mean_travel_time"
            assert h[key] == pytest.approx(row["mean_travel_time"]) and h["env_steps"] == row["env_steps"]
        train_h = [h for h in rec["history"] if "train/decisions" in h]
        assert all(h["train/sps"] > 0 for h in train_h if h["train/decisions"])
        s = rec["summary"]
        assert s["status"] == "ok" and s["episodes"] == TINY["episodes"]
        assert s["final/mean_travel_time"] == pytest.approx(r["final"]["mean_travel_time"])
        assert s["time/t_sumo_s"] > 0 and 0 < s["time/share_sumo"] <= 1
    # grouped by scenario + config hash without the seed: one group per method, different between methods
    assert all(len(g) == 1 for g in groups.values())
    assert groups["shortest"] != groups["ippo"] and next(iter(groups["ippo"])).startswith("helsinki-")


@pytest.mark.slow
def test_no_secret_reaches_any_file(tiny):
    out, _ = tiny
    leaks = [p for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks
    cfg = read_run_records(offline_runs(out / "runs" / "ippo-s0")[-1])["config"]
    assert not any("API_KEY" in k.upper() for k in cfg)


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(tiny, tmp_path):
    from tests.tools.browser import check_page, dump_dom, find_chromium

    out, res = tiny
    html = (out / "report.html").read_text()
    import re

    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    if not find_chromium():
        if os.environ.get("CI"):  # CI installs it (./dev test): a missing browser there is a failure
            pytest.fail("chromium is not installed; ./dev test should have installed it")
        pytest.skip("chromium is not installed (./dev test installs it on Debian as root)")
    shot = tmp_path / "report.png"
    page = check_page(out / "report.html", screenshot=shot)
    assert page.network_requests == [], page.network_requests
    assert page.requests and page.requests[0].startswith("file:")
    imgs = page.dom["imgs"]
    assert len(imgs) >= 3 and all(i["ok"] and i["w"] > 200 for i in imgs), imgs  # bars, curves, map
    tables = {t["id"]: t["rows"] for t in page.dom["tables"]}
    assert tables["results"] == 1 + 2 and tables["runs"] == 1 + 4 and tables["first-beats"] == 1 + 1
    assert {"Results", "Learning curves", "City map and example routes", "Runs"} <= set(page.dom["headings"])
    assert page.dom["external"] == [] and page.dom["height"] > 1500
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("COSIM_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    dom = dump_dom(out / "report.html")
    assert "id=\"results\"" in dom and "id=\"runs\"" in dom and dom.count("data:image/png;base64,") >= 3


@pytest.mark.slow
def test_rerun_resumes_and_a_different_comparison_is_refused(tiny):
    out, res = tiny
    before = {r["name"]: (Path(r["dir"]) / "metrics.jsonl").read_text() for r in res["runs"]}
    again = compare("helsinki", "shortest,ippo", out=out, log=lambda m: None, **TINY)
    assert [r["status"] for r in again["runs"]] == ["ok"] * 4
    assert again["methods"]["ippo"]["final"] == res["methods"]["ippo"]["final"]
    assert {r["name"]: (Path(r["dir"]) / "metrics.jsonl").read_text() for r in res["runs"]} == before
    for change in (dict(TINY, episodes=4), dict(TINY, seeds=3)):
        with pytest.raises(CompareError, match="holds a different comparison"):
            compare("helsinki", "shortest,ippo", out=out, log=lambda m: None, **change)
    with pytest.raises(CompareError, match="different comparison.*methods"):
        compare("helsinki", "shortest,mappo", out=out, log=lambda m: None, **TINY)


# ---------------------------------------------------------------------------------- faults in the grid
@pytest.mark.slow
def test_a_failing_run_and_a_dying_worker_are_marked_and_the_others_finish(helsinki, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # shortest-s1 raises after its first row; random-s0's worker process exits abruptly (breaks the pool)
    monkeypatch.setenv("COSIM_INJECT_FAULT", "shortest-s1,random-s0:exit")
    out = tmp_path / "faulty"
    res = compare("helsinki", "shortest,random", seeds=2, episodes=1, out=out, agents=8, horizon=600.0,
                  eval_every=1, workers=2, log=lambda m: None)  # fmt: skip
    status = {r["name"]: r for r in res["runs"]}
    assert status["shortest-s1"]["status"] == "failed" and "injected fault" in status["shortest-s1"]["error"]
    assert status["random-s0"]["status"] == "failed" and "died" in status["random-s0"]["error"]
    for ok in ("shortest-s0", "random-s1"):
        assert status[ok]["status"] == "ok" and status[ok]["final"]["mean_travel_time"] > 0
    assert res["methods"]["shortest"]["runs_failed"] == 1 and res["methods"]["shortest"]["final"]["mean_travel_time"]["n"] == 1
    on_disk = json.loads((out / "results.json").read_text())
    assert {r["name"]: r["status"] for r in on_disk["runs"]} == {k: v["status"] for k, v in status.items()}
    html = (out / "report.html").read_text()
    assert "2 of 4 runs failed" in html and "injected fault" in html
    # the failed W&B run is finished with status failed
    rec = read_run_records(offline_runs(out / "runs" / "shortest-s1")[-1])
    assert rec["summary"]["status"] == "failed" and "injected fault" in rec["summary"]["error"]


# ------------------------------------------------------------------------------------ demonstrations
def _fake_demos(scenario, out: Path, agents: int) -> Path:
    from llm.sed import SED, SEDConfig, write_outputs
    from tests.tools.fake_llm import PromptAnsweringModel

    sed = SED(scenario, SEDConfig(agents=agents, rounds=2, rollouts=2, subset_size=3, threshold=0.0),
              model=PromptAnsweringModel())  # fmt: skip
    try:
        write_outputs(sed, sed.run(), out)
    finally:
        sed.close()
    return out


@pytest.mark.slow
def test_demos_are_handed_to_the_methods_that_want_them(helsinki, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("COSIM_INJECT_FAULT", raising=False)
    demos = _fake_demos(helsinki, tmp_path / "demos", agents=6)
    with pytest.raises(CompareError, match="cover 6 agents"):
        compare("helsinki", "reled", seeds=1, episodes=1, out=tmp_path / "x", agents=7, demos=demos, log=lambda m: None)
    with pytest.raises(CompareError, match="replay needs route plans"):
        compare("helsinki", "replay,ippo", seeds=1, episodes=1, out=tmp_path / "x", agents=6, log=lambda m: None)
    out = tmp_path / "cmp"
    res = compare("helsinki", "reled,expert-replay,replay,shortest", seeds=1, episodes=1, out=out, agents=6,
                  horizon=1200.0, demos=demos, ppo={"w0": 0.5}, log=lambda m: None)  # fmt: skip
    assert [r["status"] for r in res["runs"]] == ["ok"] * 4, [r.get("error") for r in res["runs"]]

    def config(name):
        return json.loads((out / "runs" / name / "config.json").read_text())["config"]

    # one folder for every method that wants demonstrations; RELED's own setting lands in its section
    assert config("reled-s0")["algorithm"]["demos"] == str(demos.resolve())
    assert config("reled-s0")["algorithm"]["reled"]["w0"] == 0.5
    assert config("expert-replay-s0")["algorithm"]["demos"] == str(demos.resolve())
    assert config("shortest-s0")["algorithm"]["demos"] is None and config("replay-s0")["algorithm"]["demos"] is None
    assert config("replay-s0")["algorithm"]["plans"] == str(out / "expert_plans.json")
    plans = json.loads((out / "expert_plans.json").read_text())
    assert plans == {a: p["edges"] for a, p in json.loads((demos / "plans.json").read_text()).items()}
    rows = read_rows(out / "runs" / "reled-s0")
    assert any("bc_weight_mean" in r for r in rows if r["phase"] == "train")
    assert res["demos"]["rounds"] == 2 and len(res["demos"]["bound_per_round"]) == 2
    # the LLM tables are in the W&B runs of the methods that used the demonstrations, not in the others
    for name, has in (("reled-s0", True), ("expert-replay-s0", True), ("shortest-s0", False)):
        rec = read_run_records(offline_runs(out / "runs" / name)[-1])
        logged = {k for h in rec["history"] for k in h}
        assert ({"llm/sed_rounds", "llm/sed_bounds", "llm/plans"} <= logged) == has, name
        if has:
            assert rec["summary"]["sed/rounds"] == 2 and rec["summary"]["llm/sed_rounds"]["_type"] == "table-file"
            assert rec["summary"]["llm/sed_rounds"]["nrows"] == 2 and rec["summary"]["llm/plans"]["nrows"] == 6
    html = (out / "report.html").read_text()
    assert "id='sed'" in html and "SED rounds" in html
    assert "the LLM expert's kept SED plan" in html  # drawn on the map


def test_which_methods_want_demonstrations(monkeypatch):
    from agents import methods

    for m in ("reled", "leed", "reled-nosed", "reled-fixedw", "expert-replay"):
        assert wants_demos(m), m
    for m in ("ippo", "mappo", "shortest", "random", "sumo-rerouting", "replay"):
        assert not wants_demos(m), m
    # a method registered later that declares it is handed the demonstrations too
    monkeypatch.setitem(methods.METHODS, "toy-expert", methods.MethodSpec("toy-expert", lambda cfg: None, "t", True, needs_demos=True))
    assert wants_demos("toy-expert")


# ------------------------------------------------------------------------------------------ Ray
@pytest.mark.slow
def test_ray_executor_runs_a_tiny_grid(helsinki, tmp_path, monkeypatch):
    if not os.environ.get("CI"):  # the dev extra installs Ray, so CI always runs this
        pytest.importorskip("ray")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("COSIM_INJECT_FAULT", raising=False)
    before = _defunct()
    res = compare("helsinki", "shortest", seeds=2, episodes=1, out=tmp_path / "ray", agents=6, horizon=600.0,
                  executor="ray", workers=2, log=lambda m: None)  # fmt: skip
    assert [r["status"] for r in res["runs"]] == ["ok", "ok"] and res["executor"] == "ray"
    assert (tmp_path / "ray" / "report.html").exists()
    # every process of the local cluster was collected: none left defunct under this process or, as
    # orphans, under PID 1 (which in a container may never collect them)
    assert _defunct() - before == set()


def _defunct() -> set[tuple[int, str]]:
    """(pid, name, parent) of ended, never-collected processes whose parent is this process or PID 1."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if rest[0] == "Z" and int(rest[1]) in (os.getpid(), 1):
            out.add((int(stat.parent.name), name, int(rest[1])))
    return out


def test_ray_not_installed_is_a_clear_error(helsinki, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(CompareError, match="needs Ray.*pip install"):
        compare("helsinki", "shortest", seeds=1, episodes=1, out=tmp_path / "r", executor="ray", log=lambda m: None)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(methods="ippo,nosuch"), "unknown method 'nosuch'"),
        (dict(methods=" , "), "at least one method"),
        (dict(scenario="atlantis"), "atlantis"),
        (dict(seeds=0), "--seeds must be a positive number"),
        (dict(seeds=-2), "--seeds must be a positive number"),
        (dict(episodes=0), "--episodes must be a positive number"),
        (dict(agents=0), "--agents must be a positive number"),
        (dict(workers=0), "--workers must be a positive number"),
        (dict(executor="slurm"), "--executor must be local or ray"),
        (dict(eval_every=0), "--eval-every must be >= 1"),
        (dict(reference=["mappo"]), "--reference mappo not among"),
        (dict(ppo={"lrr": 1}), "--set lrr: unknown setting"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(helsinki, tmp_path, kwargs, message):
    args = dict(scenario="helsinki", methods="shortest,ippo", seeds=1, episodes=1, out=tmp_path / "o", log=lambda m: None)
    args.update(kwargs)
    with pytest.raises(UserError, match=message):
        compare(args.pop("scenario"), args.pop("methods"), args.pop("seeds"), args.pop("episodes"), args.pop("out"), **args)
    assert not (tmp_path / "o").exists()


def test_out_folders_that_are_not_this_comparison_are_refused(helsinki, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CompareError, match="not empty and is not an earlier `cosim compare` output"):
        compare("helsinki", "shortest", 1, 1, busy, log=lambda m: None)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(CompareError, match="not a folder"):
        compare("helsinki", "shortest", 1, 1, afile, log=lambda m: None)
    with pytest.raises(CompareError, match="not a folder"):
        compare("helsinki", "replay", 1, 1, tmp_path / "d", demos=tmp_path / "missing", log=lambda m: None)
    assert (busy / "notes.txt").read_text() == "mine"


def test_cli_errors_are_one_line_with_exit_status_2(helsinki, tmp_path):
    for args, text in (
        (["--methods", "ippo,warp-drive", "--seeds", "2", "--episodes", "1"], "unknown method 'warp-drive'"),
        (["--methods", "ippo", "--seeds", "0", "--episodes", "1"], "--seeds must be a positive number"),
    ):
        p = run_cli("compare", "--scenario", "helsinki", "--out", str(tmp_path / "o"), *args, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], p.stderr


# ------------------------------------------------------------------------------------------ tracking
def test_config_flattening_grouping_and_scrubbing(monkeypatch):
    from agents.runner import TrainConfig

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-123")
    a = TrainConfig.of(method="ippo", seed=0, ppo={"lr": 0.01})
    b = TrainConfig.of(method="ippo", seed=7, ppo={"lr": 0.01})
    c = TrainConfig.of(method="ippo", seed=0, ppo={"lr": 0.02})
    assert group_name(a) == group_name(b) != group_name(c) and group_name(a).startswith("helsinki-")
    assert config_hash(a) != config_hash(TrainConfig.of(method="mappo", ppo={"lr": 0.01}))
    assert flatten({"ppo": {"lr": 1, "x": {"y": 2}}, "k": []}) == {"ppo.lr": 1, "ppo.x.y": 2, "k": []}
    dirty = {"openai_api_key": "x", "note": "key tok-abcdef-123 inside", "nested": [{"password": 1, "ok": 2}]}
    assert scrub(dirty) == {"note": "key *** inside", "nested": [{"ok": 2}]}
    t = Tracker(TrainConfig.of(demos="/d/tok-abcdef-123"), "/tmp/none")
    assert t.config()["algorithm.demos"] == "/d/***" and t.config()["env.reward_scale"] == 60.0


@pytest.fixture
def tiny_cfg():
    from agents.runner import TrainConfig

    return TrainConfig.of(method="shortest", episodes=1, seed=0, eval_every=0, agents=5, horizon=300.0)


def test_training_survives_a_broken_wandb(helsinki, tmp_path, monkeypatch, tiny_cfg, capsys):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken(*a, **k):
        raise RuntimeError("wandb exploded")

    monkeypatch.setattr(wandb, "init", broken)
    res = tracked_train(tiny_cfg, tmp_path / "run")
    assert res["episodes"] == 1 and res["wandb"] is None and "wandb exploded" in res["wandb_warning"]
    assert "warning: W&B init failed" in capsys.readouterr().err
    assert len(read_rows(tmp_path / "run")) == 1


def test_a_hanging_wandb_init_is_time_limited(helsinki, tmp_path, monkeypatch, tiny_cfg):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("COSIM_WANDB_INIT_TIMEOUT", "1")
    monkeypatch.setattr(wandb, "init", lambda *a, **k: time.sleep(60))
    t0 = time.perf_counter()
    res = tracked_train(tiny_cfg, tmp_path / "run")
    assert time.perf_counter() - t0 < 30
    assert res["wandb"] is None and "TimeoutError" in res["wandb_warning"] and res["episodes"] == 1


def test_disabled_mode_writes_no_wandb_files(helsinki, tmp_path, monkeypatch, tiny_cfg):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    res = tracked_train(tiny_cfg, tmp_path / "run")
    assert res["wandb"] is None and res["wandb_warning"] is None and not (tmp_path / "run" / "wandb").exists()


@pytest.mark.slow
def test_online_mode_with_an_unreachable_server_falls_back(helsinki, tmp_path):
    """Online mode, a (fake) key and a server that refuses connections: the run trains untracked."""
    code = (
        "from agents.runner import TrainConfig\n"
        "from evaluation.tracking import tracked_train\n"
        f"r = tracked_train(TrainConfig.of(method='shortest', episodes=1, eval_every=0, agents=5, horizon=300.0), {str(tmp_path / 'run')!r})\n"
        "print(r['episodes'], r['wandb'], r['wandb_warning'] is not None)\n"
    )
    env = dict(os.environ, WANDB_MODE="online", WANDB_API_KEY="f" * 40, WANDB_BASE_URL="http://127.0.0.1:9",
               COSIM_WANDB_INIT_TIMEOUT="3")  # fmt: skip
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "None", "True"] and time.perf_counter() - t0 < 60
    assert "f" * 40 not in p.stderr + p.stdout
    assert not any(("f" * 40).encode() in f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())


def test_no_online_report_offline_or_without_wandb_workspaces(monkeypatch):
    from evaluation.wandb_report import online_report

    res = {"id": "x", "comparison": {"scenario": "helsinki", "methods": [], "seeds": 1, "episodes": 1}, "methods": {}}
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert online_report(res) is None
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    assert online_report(res) is None


# ---------------------------------------------------------------------------------- generalisation
@pytest.mark.slow
def test_evaluate_a_helsinki_policy_on_kouvola(tiny, kouvola):
    out, _ = tiny
    p = run_cli("evaluate", "--checkpoint", str(out / "runs" / "ippo-s0"), "--scenario", "kouvola",
                "--episodes", "2", "--agents", "8", "--json", timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["trained_on"] == "helsinki" and res["scenario"] == "kouvola" and not res["same_city"]
    assert res["method"] == "ippo" and res["agents"] == 8 and res["loaded"]["actor"]
    assert [e["seed"] for e in res["episodes"]] == [10_000, 10_001]
    for e in res["episodes"]:
        assert e["mean_travel_time"] > 0 and 0 <= e["arrival_rate"] <= 1 and e["decisions"] > 0
        assert math.isfinite(e["return"]) and e["teleports"] >= 0
    m = res["mean"]["mean_travel_time"]
    assert m["mean"] == pytest.approx(np.mean([e["mean_travel_time"] for e in res["episodes"]]))


def test_evaluate_bad_input(helsinki, kouvola, tmp_path):
    from agents.runner import TrainConfig, train
    from evaluation.evaluate import EvaluateError, evaluate_checkpoint

    p = run_cli("evaluate", "--checkpoint", str(tmp_path / "nothing"), "--scenario", "kouvola", timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: no checkpoint at"), p.stderr
    # one network per agent (--independent) fits only the same number of agents
    run = tmp_path / "indep"
    train(TrainConfig.of(method="ippo", episodes=1, eval_every=0, agents=4, horizon=300.0, ppo={"shared": False}), run, progress=False)
    with pytest.raises(EvaluateError, match="one network per agent.*--agents 4"):
        evaluate_checkpoint(run, str(kouvola.path), agents=6)
    res = evaluate_checkpoint(run, str(kouvola.path), agents=4, horizon=300.0)
    assert res["agents"] == 4 and res["loaded"]["actor"] and res["actions"] == "greedy"
    # --set changes the run's settings for the evaluation: a sampling policy, reproducible by seed
    sampled = [evaluate_checkpoint(run, str(kouvola.path), agents=4, horizon=300.0, seed=7,
                                   sets=["algorithm.ppo.eval_actions=sample"]) for _ in range(2)]  # fmt: skip
    assert sampled[0]["actions"] == "sample"
    for a, b in zip(sampled[0]["episodes"], sampled[1]["episodes"]):
        assert (a["mean_travel_time"], a["decisions"], a["seed"]) == (b["mean_travel_time"], b["decisions"], 7)
    with pytest.raises(EvaluateError, match=r"algorithm\.ppo\.eval_actions must be greedy or sample"):
        evaluate_checkpoint(run, str(kouvola.path), agents=4, sets=["algorithm.ppo.eval_actions=best"])
    with pytest.raises(EvaluateError, match="--episodes must be a positive"):
        evaluate_checkpoint(run, "kouvola", episodes=0)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt or unreadable"):
        evaluate_checkpoint(run, "kouvola")


@pytest.mark.slow
def test_cosim_demo_main_job_small(cosim_home, helsinki, tmp_path):
    """The main job end to end at a tiny size: SED demos with the real local LLM, every method, report."""
    out = tmp_path / "demo"
    env = dict(os.environ, COSIM_HOME=str(cosim_home))
    p = subprocess.run(
        [sys.executable, "-m", "cosim", "demo", "--agents", "6", "--seeds", "2", "--episodes", "2",
         "--out", str(out), "--no-open"],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == str((out / "report.html").resolve())
    res = json.loads((out / "results.json").read_text())
    from evaluation.demo import METHODS

    assert sorted(res["methods"]) == sorted(METHODS)
    assert all(r["status"] == "ok" for r in res["runs"]) and len(res["runs"]) == 2 * len(METHODS)
    assert "SED" in (out / "report.html").read_text()
