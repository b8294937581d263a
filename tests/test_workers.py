"""Parallel rollout workers for one training run (agents/workers.py): learning, determinism, resume and
faults, with real worker processes each driving its own SUMO on kouvola."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.runner import TrainConfig, read_metrics, train
from tests.test_train import _assert_same_params, _comparable

SMALL = dict(scenario="kouvola", agents=20)


def _run(out: Path, **kw) -> dict:
    cfg = TrainConfig.of(**{**SMALL, "method": "ippo", "seed": 5, "eval_every": 4, "episodes": 4, **kw})
    return train(cfg, out, progress=False)


def _random_policy_travel_time(kouvola, seed: int) -> float:
    from cosim.config import EnvConfig
    from cosim.env import VehicleRoutingEnv
    from cosim.policies import make_policy

    env = VehicleRoutingEnv(kouvola, EnvConfig(n_agents=20))
    try:
        act = make_policy("random", 0)
        obs, _ = env.reset(seed=seed)
        while env.agents:
            obs, *_ = env.step(act(env, obs))
        return env.metrics["mean_travel_time"]
    finally:
        env.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_one_and_two_workers_learn(kouvola, cosim_home, tmp_path, workers):
    res = _run(tmp_path / "run", rollout_workers=workers, episodes=6, eval_every=6)
    rows = read_metrics(tmp_path / "run")
    train_rows = [r for r in rows if r["phase"] == "train"]
    updates = [r for r in rows if r["phase"] == ("update" if workers > 1 else "train")]
    assert [r["episode"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    if workers > 1:
        assert sorted({r["worker"] for r in train_rows}) == [0, 1] and len(updates) == 3
        assert all(r["episodes"] == 2 and r["workers"] == 2 for r in updates)
    losses = [r["policy_loss"] for r in updates]
    assert all(math.isfinite(x) for x in losses) and len(losses) >= 3
    random_tt = _random_policy_travel_time(kouvola, 10_000)  # the evaluation seed
    first_eval, last_eval = rows[0], res["last_eval"]
    assert first_eval["phase"] == "eval" and last_eval["episode"] == 6
    assert last_eval["mean_travel_time"] < random_tt and last_eval["mean_travel_time"] < first_eval["mean_travel_time"]


def test_same_seed_and_workers_give_identical_runs(kouvola, cosim_home, tmp_path):
    _run(tmp_path / "a", rollout_workers=2, method="mappo")
    _run(tmp_path / "b", rollout_workers=2, method="mappo")
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert len(a) == len(b) == 8  # evaluations after 0 and 4 episodes, 4 episodes, 2 updates
    assert _comparable(a) == _comparable(b)
    _assert_same_params(tmp_path / "a", tmp_path / "b")


def test_kill_and_resume_with_two_workers_equals_uninterrupted(kouvola, cosim_home, tmp_path):
    ref = tmp_path / "ref"
    args = ["-s", "kouvola", "--method", "ippo", "--episodes", "6", "--seed", "5", "--eval-every", "2",
            "--agents", "20", "--workers", "2", "--quiet"]  # fmt: skip
    env = dict(os.environ, COSIM_HOME=str(cosim_home))
    r = subprocess.run([sys.executable, "-m", "agents.cli", "train", *args, "--out", str(ref)],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "train", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    killed = False
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(r.get("phase") == "update" and r["episode"] >= 2 for r in read_metrics(out)):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=30)
    assert killed, proc.stderr.read().decode()[-1000:]
    assert max(r["episode"] for r in read_metrics(out)) < 6
    r = subprocess.run([sys.executable, "-m", "agents.cli", "train", *args, "--out", str(out), "--resume"],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert _comparable(read_metrics(out)) == _comparable(read_metrics(ref))
    _assert_same_params(out, ref)


def _lagged(out: Path, resume: bool = False, **kw) -> dict:
    import dataclasses

    cfg = TrainConfig.of(**{**SMALL, "method": "ippo", "seed": 5, "eval_every": 2, "rollout_workers": 2, **kw})
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, policy_lag=1))
    return train(cfg, out, progress=False, resume=resume)


def test_policy_lag_acts_one_update_behind_and_resumes_exactly(kouvola, cosim_home, tmp_path):
    _lagged(tmp_path / "lag", episodes=6)
    _run(tmp_path / "sync", rollout_workers=2, episodes=6, eval_every=2)
    lag, sync = read_metrics(tmp_path / "lag"), read_metrics(tmp_path / "sync")

    def episodes(rows: list[dict]) -> dict[int, dict]:
        return {r["episode"]: r for r in _comparable(rows) if r["phase"] == "train"}

    lag_eps, sync_eps = episodes(lag), episodes(sync)
    assert sorted(lag_eps) == [1, 2, 3, 4, 5, 6] and [lag_eps[e]["worker"] for e in (1, 2, 3, 4)] == [0, 1, 0, 1]
    # the first iteration acts with the initial policy either way; under the lag the second does too, so it
    # differs from the synchronous run's second iteration, which acts with the first update's policy
    assert lag_eps[1] == sync_eps[1] and lag_eps[2] == sync_eps[2]
    assert (lag_eps[3], lag_eps[4]) != (sync_eps[3], sync_eps[4])
    updates = [r for r in lag if r["phase"] == "update"]
    assert [r["policy_lag"] for r in updates] == [1, 1, 1] and all(math.isfinite(r["policy_loss"]) for r in updates)
    # stopped after 4 episodes (iteration 3 never started), then resumed to 6: the run that went straight on
    _lagged(tmp_path / "resumed", episodes=4)
    _lagged(tmp_path / "resumed", resume=True, episodes=6)
    assert _comparable(read_metrics(tmp_path / "resumed")) == _comparable(lag)
    _assert_same_params(tmp_path / "resumed", tmp_path / "lag")


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_once(match, out: Path, after_episode_rows: int = 0) -> threading.Thread:
    """In the background: once the run has written `after_episode_rows` training rows, SIGKILL the first
    descendant of this process whose command line `match` accepts."""
    state = {"killed": None}

    def look() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and state["killed"] is None:
            if sum(r.get("phase") == "train" for r in read_metrics(out)) >= after_episode_rows:
                todo = _children(os.getpid())
                while todo:
                    pid = todo.pop()
                    if match(_cmdline(pid)):
                        time.sleep(0.5)  # mid-episode
                        os.kill(pid, signal.SIGKILL)
                        state["killed"] = pid
                        return
                    todo += _children(pid)
            time.sleep(0.05)

    t = threading.Thread(target=look, daemon=True)
    t.state = state
    t.start()
    return t


def test_a_killed_sumo_in_a_worker_loses_one_episode(kouvola, cosim_home, tmp_path):
    """TraCI: SUMO is the worker's child process; killing it ends that episode as a fault, nothing more."""
    out = tmp_path / "run"
    killer = _kill_once(lambda cmd: "sumo" in cmd.split(" ")[0] and "--remote-port" in cmd, out, after_episode_rows=2)
    res = _run(out, rollout_workers=2, episodes=6, eval_every=0, backend="traci")
    killer.join(5)
    assert killer.state["killed"] is not None
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert [r["episode"] for r in train_rows] == [1, 2, 3, 4, 5, 6] and res["episodes"] == 6
    assert sum(bool(r.get("sumo_fault")) for r in train_rows) == 1 and res["sumo_faults"] == 1
    assert all(not r["update_skipped"] for r in rows if r["phase"] == "update")  # the other episode still teaches


def test_a_dead_worker_is_replaced_and_its_episode_run_again(kouvola, cosim_home, tmp_path):
    out = tmp_path / "run"
    killer = _kill_once(lambda cmd: "multiprocessing" in cmd and "spawn" in cmd, out, after_episode_rows=2)
    _run(out, rollout_workers=2, episodes=6, eval_every=0)
    killer.join(5)
    assert killer.state["killed"] is not None
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert [r["episode"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert not any(r.get("sumo_fault") for r in train_rows)  # the lost episode was run again
    assert rows[-1]["phase"] == "update" and rows[-1]["workers_replaced"] == 1


def test_workers_count_is_checked(tmp_path):
    for bad in ("0", "-2", "many"):
        r = subprocess.run([sys.executable, "-m", "agents.cli", "train", "--workers", bad, "--out", str(tmp_path / "r")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [
            f"error: --workers must be a positive number of processes or auto, got {bad!r}"
        ]
        assert not (tmp_path / "r").exists()


def test_bench_throughput_reports_each_worker_count(kouvola, cosim_home):
    env = dict(os.environ, COSIM_HOME=str(cosim_home))
    r = subprocess.run([sys.executable, "-m", "cosim", "bench", "throughput", "--scenario", "kouvola",
                        "--agents", "10", "--workers", "2", "--iterations", "2", "--json"],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    rows = json.loads(r.stdout)
    assert [x["workers"] for x in rows] == [1, 2]  # one worker is always there: the speedup's yardstick
    assert rows[0]["speedup"] == 1.0 and rows[0]["episodes"] == 2 and rows[1]["episodes"] == 4
    for x in rows:
        assert x["decisions"] > 0 and x["decisions_per_s"] > 0 and x["efficiency"] == round(x["speedup"] / x["workers"], 3)
        assert set(x["share"]) == {"sumo", "env_python", "inference", "update", "transfer", "other"}
        assert all(0 <= v <= 1 for k, v in x["share"].items() if k != "other") and x["share"]["sumo"] > 0.1
    assert rows[1]["share"]["transfer"] > 0 and rows[0]["share"]["transfer"] == 0
    assert rows[0]["worker_busy"] is None and 0.2 < rows[1]["worker_busy"] < 1.0


def test_ray_executor_on_a_local_head_runs_two_workers(kouvola, cosim_home, tmp_path):
    """A Ray head started here on 127.0.0.1 (as a cluster would be), joined with --ray-address: the two
    workers are Ray actors and the run equals the one with local worker processes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = str(Path(sys.executable).parent / "ray")
    # no token authentication on this throw-away head (a real cluster's token comes in RAY_AUTH_TOKEN)
    env = dict(os.environ, COSIM_HOME=str(cosim_home), RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    head = subprocess.run([ray_bin, "start", "--head", "--port", str(port),
                           "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        args = ["-s", "kouvola", "--method", "ippo", "--episodes", "4", "--seed", "5", "--eval-every", "0",
                "--agents", "20", "--workers", "2", "--quiet"]  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "agents.cli", "train", *args, "--executor", "ray", "--ray-address",
                            f"127.0.0.1:{port}", "--out", str(tmp_path / "ray")],
                           capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        too_many = subprocess.run([sys.executable, "-m", "agents.cli", "train", *args[:-3], "--workers", "3",
                                   "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "x")],
                                  capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120, env=env)
    assert too_many.returncode == 2, too_many.stderr[-2000:]
    assert too_many.stderr.strip().splitlines()[-1] == (
        "error: --workers 3: the Ray cluster has 2 CPUs, so it can place at most 2 workers"
    )
    r = subprocess.run([sys.executable, "-m", "agents.cli", "train", *args, "--out", str(tmp_path / "local")],
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    ray_rows, local_rows = read_metrics(tmp_path / "ray"), read_metrics(tmp_path / "local")
    assert sorted({x["worker"] for x in ray_rows if x["phase"] == "train"}) == [0, 1]
    assert _comparable(ray_rows) == _comparable(local_rows)


def test_compare_gives_each_run_its_rollout_workers_within_the_cores(kouvola, cosim_home, tmp_path):
    env = dict(os.environ, COSIM_HOME=str(cosim_home), WANDB_MODE="offline")
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "cosim", "compare", "-s", "kouvola", "--methods", "ippo",
                        "--seeds", "2", "--episodes", "2", "--eval-every", "2", "--agents", "10",
                        "--set", "run.rollout_workers=2", "--out", str(out)],
                       capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    from core.procs import free_cores

    parallel = max(1, min(free_cores() // 2, 2))  # runs x 2 workers never exceed the cores
    assert f"{parallel} local worker(s) x 2 rollout workers each" in r.stderr + r.stdout
    for seed in (0, 1):
        rows = read_metrics(out / "runs" / f"ippo-s{seed}")
        assert sorted(x["worker"] for x in rows if x["phase"] == "train") == [0, 1]
        assert [x["phase"] for x in rows].count("update") == 1


def _spawned(pid: int) -> list[int]:
    """The multiprocessing children (spawned Python processes) below pid."""
    from core.procs import descendants

    out = []
    for child in descendants(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has ended too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 120) -> tuple[list[int], str]:
    """Wait until ready() holds, send SIGINT to the command's process group (as Ctrl-C in a terminal does)
    and return the processes it had spawned then, and its stderr; they must all have ended by now."""
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert ready(), proc.communicate(timeout=60)
    started = _spawned(proc.pid)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in started)
    return started, err


def test_ctrl_c_while_workers_start_is_one_line_and_leaves_no_worker(kouvola, tmp_path):
    """Ctrl-C reaches the whole process group: the learner, and its workers while they start Python and
    import torch and SUMO. Only the learner reacts — one `error: interrupted` line, exit status 130 —
    and its workers end with it, without a traceback of their own (issue 26, row 8)."""
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "train", "-s", "kouvola", "--method", "ippo",
                             "--episodes", "4", "--agents", "10", "--workers", "2", "--quiet", "--out",
                             str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    started, err = _interrupt_when(proc, lambda: len(_spawned(proc.pid)) >= 2)
    assert len(started) == 2
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines() == ["error: interrupted"], err[-3000:]


def test_ctrl_c_during_a_comparison_stops_its_runs_with_one_line(kouvola, tmp_path):
    """The same for `cosim compare`: its run processes ignore Ctrl-C, the comparison stops them."""
    out = tmp_path / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "cosim", "compare", "-s", "kouvola", "--methods",
                             "ippo,mappo", "--seeds", "1", "--episodes", "30", "--agents", "10", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, WANDB_MODE="offline"))  # fmt: skip
    started, err = _interrupt_when(proc, lambda: len(list(out.glob("runs/*/metrics.jsonl"))) >= 2)
    assert len(started) >= 2
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "error: interrupted" and err.count("error:") == 1, err[-3000:]
