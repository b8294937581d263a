"""The training runner on helsinki: IPPO/MAPPO runs, baselines, kill-and-resume equivalence, SUMO faults
and bad input. Small fleets and short horizons keep every run to a few seconds."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.base import TrainError
from agents.episode import make_env
from agents.runner import CHECKPOINT, TrainConfig, read_metrics, train
from core.errors import UserError
from cosim.errors import SumoFault

SMALL = dict(agents=20, horizon=900.0)
REQUIRED = {"phase", "episode", "env_steps", "wall_s", "mean_travel_time", "arrival_rate", "return", "sumo_fault"}
TIMING = {"wall_s", "episode_wall_s", "decisions_per_s", "peak_rss_mb", "learner_peak_rss_mb"}  # measured, not computed


def _comparable(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock figures (everything else must match bit for bit)."""
    return [{k: v for k, v in r.items() if k not in TIMING and not k.startswith("t_")} for r in rows]


def _params(run_dir: Path) -> dict:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["method"]["policy"]


def _assert_same_params(a: Path, b: Path) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", "train", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def reference(helsinki, tmp_path_factory) -> Path:
    """An uninterrupted 4-episode IPPO run (evaluations at 0, 2, 4)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(TrainConfig.of(method="ippo", episodes=4, seed=3, eval_every=2, **SMALL), out, progress=False)
    return out


# ------------------------------------------------------------------------------------ learners
@pytest.mark.parametrize("method", ["ippo", "mappo"])
def test_learner_runs_with_finite_losses(helsinki, tmp_path, method):
    out = tmp_path / method
    res = train(TrainConfig.of(method=method, episodes=2, seed=0, eval_every=1, agents=15, horizon=600.0), out, progress=False)
    rows = read_metrics(out)
    assert [(r["phase"], r["episode"]) for r in rows] == [("eval", 0), ("train", 1), ("eval", 1), ("train", 2), ("eval", 2)]
    for r in rows:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["mean_travel_time"] > 0 and 0 <= r["arrival_rate"] <= 1
    train_rows = [r for r in rows if r["phase"] == "train"]
    for r in train_rows:
        assert r["update_skipped"] is False and r["n_samples"] > 0
        for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm"):
            assert math.isfinite(r[k]), (k, r[k])
        parts = ("t_sumo_s", "t_env_python_s", "t_torch_infer_s", "t_torch_update_s", "t_python_s")
        assert all(r[k] >= 0 for k in parts) and r["t_env_s"] <= r["episode_wall_s"]
        assert sum(r[k] for k in parts) == pytest.approx(r["episode_wall_s"], rel=1e-6)
    assert train_rows[1]["env_steps"] == train_rows[0]["decisions"] + train_rows[1]["decisions"]
    assert res["episodes"] == 2 and res["last_eval"]["episode"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["algorithm"]["method"] == method and cfg["method"]["critic"] == ("central" if method == "mappo" else "local")
    ck = torch.load(out / CHECKPOINT, weights_only=True)
    assert ck["episode"] == 2 and {"torch", "numpy", "python"} <= set(ck["rng"]) and "optimizer" in ck["method"]
    assert not list(out.glob("*.tmp"))


def test_independent_networks(helsinki, tmp_path):
    out = tmp_path / "indep"
    train(TrainConfig.of(method="ippo", episodes=1, eval_every=0, ppo={"shared": False}, agents=10, horizon=600.0), out, progress=False)
    (row,) = read_metrics(out)
    assert math.isfinite(row["policy_loss"])
    w = _params(out)["actor.layers.0.weight"]
    assert w.shape[0] == 10  # one actor per agent


# ----------------------------------------------------------------------------------- baselines
def test_baselines(helsinki, tmp_path):
    res = {}
    for m in ("random", "shortest", "sumo-rerouting"):
        train(TrainConfig.of(method=m, episodes=1, eval_every=0, seed=1, agents=30, horizon=1800.0), tmp_path / m, progress=False)
        (res[m],) = read_metrics(tmp_path / m)
    assert res["shortest"]["mean_travel_time"] < res["random"]["mean_travel_time"]
    assert res["shortest"]["arrival_rate"] >= res["random"]["arrival_rate"]
    assert res["sumo-rerouting"]["decisions"] == 0 and res["sumo-rerouting"]["arrival_rate"] > 0.5
    assert res["sumo-rerouting"]["mean_travel_time"] < res["random"]["mean_travel_time"]

    # replaying the free-flow shortest routes as plans reproduces the shortest policy exactly
    g = helsinki.graph
    plans = {t.id: [g.edges[i] for i in g.path(g.index[t.origin], g.index[t.destination])] for t in helsinki.trips(30)}
    pf = tmp_path / "plans.json"
    pf.write_text(json.dumps(plans))
    train(TrainConfig.of(method="replay", plans=str(pf), episodes=1, eval_every=0, seed=1, agents=30, horizon=1800.0), tmp_path / "replay", progress=False)
    (rep,) = read_metrics(tmp_path / "replay")
    assert rep["mean_travel_time"] == res["shortest"]["mean_travel_time"]
    assert rep["decisions"] == res["shortest"]["decisions"]


# ------------------------------------------------------------------------------------ resume
def test_stop_and_resume_equals_uninterrupted(reference, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig.of(method="ippo", episodes=2, seed=3, eval_every=2, **SMALL)
    train(cfg, out, progress=False)
    cfg.run.episodes = 4
    train(cfg, out, resume=True, progress=False)
    assert _comparable(read_metrics(out)) == _comparable(read_metrics(reference))
    _assert_same_params(out, reference)


@pytest.mark.parametrize("method", ["mappo", "random"])
def test_resume_other_methods(helsinki, tmp_path, method):
    """MAPPO (global-state critic) and the random baseline (its own generator) resume exactly too."""
    cfg = dict(method=method, seed=5, eval_every=0, agents=15, horizon=600.0)
    train(TrainConfig.of(episodes=3, **cfg), tmp_path / "straight", progress=False)
    train(TrainConfig.of(episodes=1, **cfg), tmp_path / "resumed", progress=False)
    train(TrainConfig.of(episodes=3, **cfg), tmp_path / "resumed", resume=True, progress=False)
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert len(a) == 3 and _comparable(a) == _comparable(b)
    ca = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)["method"]
    cb = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["method"]
    if method == "random":
        assert ca == cb
    else:
        _assert_same_params(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(reference, tmp_path):
    """SIGKILL a real training process mid-run, resume it, and get the uninterrupted run's results."""
    out = tmp_path / "run"
    args = ["--method", "ippo", "--episodes", "4", "--seed", "3", "--eval-every", "2", "--agents", "20",
            "--horizon", "900", "--quiet", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed = False
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(r.get("phase") == "train" and r["episode"] >= 2 for r in read_metrics(out)):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=30)
    assert killed, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    assert proc.returncode == -signal.SIGKILL
    done = read_metrics(out)
    assert max(r["episode"] for r in done) < 4  # it really was cut short

    r = _cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert _comparable(read_metrics(out)) == _comparable(read_metrics(reference))
    _assert_same_params(out, reference)

    # resuming a finished run is a no-op
    r = _cli(*args, "--resume")
    assert r.returncode == 0 and len(read_metrics(out)) == len(read_metrics(reference))


def _dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def test_resume_refuses_a_damaged_metrics_row_and_clears_killed_writes(helsinki, tmp_path):
    """A damaged row among those the checkpoint covers is one error naming the line (the episodes it
    recorded would otherwise vanish from the run's record while training went on); a checkpoint that a
    killed run left half-written (`.checkpoint.pt.PID.tmp`) is cleared at the next start."""
    out = tmp_path / "run"
    args = ["-s", "helsinki", "--method", "random", "--seed", "5", "--eval-every", "0", "--agents", "15",
            "--horizon", "600", "--quiet", "--out", str(out)]  # fmt: skip
    assert _cli(*args, "--episodes", "3").returncode == 0
    stale = out / f".checkpoint.pt.{_dead_pid()}.tmp"
    stale.write_bytes(b"half a checkpoint")
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    damaged = lines[0] + '{"phase": "train", "episode": 2, "env_st\n' + lines[2]
    metrics.write_text(damaged)
    r = _cli(*args, "--episodes", "5", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {metrics} line 2 is damaged (")
    assert "the checkpoint covers lines 1-3" in r.stderr and metrics.read_text() == damaged
    assert not stale.exists()
    metrics.write_text("".join(lines))  # repaired: the run goes on from its checkpoint
    assert _cli(*args, "--episodes", "5", "--resume").returncode == 0
    assert [row["episode"] for row in read_metrics(out)] == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------------------------- faults
def test_sumo_fault_loses_one_episode(helsinki, tmp_path):
    def faulty_env(scenario, cfg, settings):
        env = make_env(scenario, cfg, settings)
        step = env.kernel.step
        calls = {"n": 0}

        def step_or_fail():
            if env.episode == 2:
                calls["n"] += 1
                if calls["n"] == 400:
                    raise SumoFault("injected: SUMO died")
            return step()

        env.kernel.step = step_or_fail
        return env

    out = tmp_path / "fault"
    res = train(TrainConfig.of(method="ippo", episodes=3, eval_every=0, seed=0, agents=15, horizon=600.0), out,
                progress=False, env_factory=faulty_env)
    rows = read_metrics(out)
    assert [r["sumo_fault"] for r in rows] == [False, True, False]
    assert [r["sumo_faults"] for r in rows] == [0, 1, 1]
    assert rows[1]["update_skipped"] is True and "policy_loss" not in rows[1]
    assert rows[2]["update_skipped"] is False and math.isfinite(rows[2]["policy_loss"])
    assert rows[1]["decisions"] > 0  # it ran for a while before the fault; those samples count as spent
    assert rows[2]["env_steps"] == sum(r["decisions"] for r in rows)
    assert res["sumo_faults"] == 1 and res["episodes"] == 3


@pytest.mark.parametrize("city", ["kouvola", "net_city"])
def test_a_learner_runs_every_episode_to_its_end(city, request, tmp_path):
    """`cosim train --scenario kouvola --method ippo --episodes 6 --eval-every 0` ended 3 of 6 episodes
    as false "SUMO faults" (a refused route change): every episode must now be trained on."""
    sc = request.getfixturevalue(city)
    r = _cli("--scenario", str(sc.path), "--method", "ippo", "--episodes", "6", "--eval-every", "0", "--agents", "20",
             "--out", str(tmp_path / "run"), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "SUMO faults 0;" in r.stdout
    rows = read_metrics(tmp_path / "run")
    assert [row["episode"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert not any(row["sumo_fault"] for row in rows) and all(row["sim_time"] > 0 for row in rows)
    # refused route changes (loops of U-turns on sub-step edges, see tests/test_env.py) are rare and logged
    assert sum(row["rejected_commands"] for row in rows) <= sum(row["decisions"] for row in rows) // 100
    assert all(row["policy_loss"] is not None and math.isfinite(row["policy_loss"]) for row in rows)


# ---------------------------------------------------------------------------------- bad input
def test_unknown_method_and_bad_numbers(tmp_path):
    with pytest.raises(TrainError, match=r"unknown method 'nope'; choose one of: ippo, mappo, random, shortest"):
        train(TrainConfig.of(method="nope"), tmp_path / "a", progress=False)
    for n in (0, -3):
        with pytest.raises(TrainError, match="--episodes must be a positive number"):
            train(TrainConfig.of(episodes=n), tmp_path / "a", progress=False)
    with pytest.raises(UserError, match=r"unknown key 'algorithm\.ppo\.learning_rate'; known: lr, gamma"):
        train(TrainConfig.of(ppo={"learning_rate": 1.0}), tmp_path / "a", progress=False)
    with pytest.raises(TrainError, match="needs --plans"):
        train(TrainConfig.of(method="replay", episodes=1, **SMALL), tmp_path / "a", progress=False)
    with pytest.raises(TrainError, match="plans file .* does not exist"):
        train(TrainConfig.of(method="replay", plans=str(tmp_path / "none.json"), **SMALL), tmp_path / "a", progress=False)
    (tmp_path / "bad.json").write_text('{"a": "not a list"}')
    with pytest.raises(TrainError, match="must map agent ids to lists of edge ids"):
        train(TrainConfig.of(method="replay", plans=str(tmp_path / "bad.json"), **SMALL), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()


def test_cli_prints_one_line_errors(tmp_path):
    r = _cli("--method", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: unknown method 'nope'; choose one of: ippo, mappo, random, shortest, navigation, sumo-rerouting, dua, "
        "replay, reled, leed, reled-nosed, reled-fixedw, expert-replay"
    ]
    r = _cli("--episodes", "0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.startswith("error: --episodes must be a positive number")


def test_out_dir_with_another_run_is_refused(reference, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    same = TrainConfig.of(method="ippo", episodes=4, seed=3, eval_every=2, **SMALL)
    with pytest.raises(TrainError, match=r"different config \(run.seed: 3 -> 4\)"):
        train(TrainConfig.of(method="ippo", episodes=4, seed=4, eval_every=2, **SMALL), run, progress=False)
    with pytest.raises(TrainError, match=r"different config \(algorithm.method: 'ippo' -> 'mappo'\)"):
        train(TrainConfig.of(method="mappo", episodes=4, seed=3, eval_every=2, **SMALL), run, resume=True, progress=False)
    with pytest.raises(TrainError, match="already holds this run; pass --resume"):
        train(same, run, progress=False)
    before = (run / "metrics.jsonl").read_text()
    res = train(same, run, resume=True, progress=False)  # complete already: nothing to do
    assert res["episodes"] == 4 and (run / "metrics.jsonl").read_text() == before

    (run / CHECKPOINT).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(TrainError, match="checkpoint .* is corrupt or unreadable"):
        train(same, run, resume=True, progress=False)
    (run / CHECKPOINT).write_bytes((reference / CHECKPOINT).read_bytes()[:500])  # torn file
    with pytest.raises(TrainError, match="corrupt"):
        train(same, run, resume=True, progress=False)
    r = _cli("--method", "ippo", "--episodes", "4", "--seed", "3", "--eval-every", "2", "--agents", "20",
             "--horizon", "900", "--out", str(run), "--resume")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "corrupt" in r.stderr


def test_a_second_writer_of_a_run_folder_is_refused(helsinki, tmp_path):
    """Two `cosim train` into one --out used to both exit 0, one run silently lost. The folder's lock is
    held by a real second process here (flock is per open file, so the same process would not do)."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from agents.runner import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        r = _cli("--method", "shortest", "--episodes", "1", "--agents", "5", "--horizon", "300", "--out", str(run))
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"error: --out {run} is in use by another run (process {holder.pid}); wait for it or choose another --out"
        ]
        with pytest.raises(TrainError, match="is in use by another run"):
            train(TrainConfig.of(method="shortest", episodes=1, agents=5, horizon=300.0), run, progress=False)
    finally:
        holder.kill()  # killed, not released: the OS frees the lock
        holder.wait()
    res = train(TrainConfig.of(method="shortest", episodes=1, agents=5, horizon=300.0, eval_every=0), run, progress=False)
    assert res["episodes"] == 1 and len(read_metrics(run)) == 1
