"""`cosim simulate` and `cosim bench overhead` as a user runs them (subprocess, real SUMO)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from cosim.bench import callgrind_instructions


def cosim(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "cosim", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_simulate_prints_metrics_as_json(helsinki):
    p = cosim("simulate", str(helsinki.path), "--policy", "shortest", "--agents", "15", "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert m["agents"] == 15 and m["arrival_rate"] == 1.0 and m["decisions"] > 15
    assert m["mean_travel_time"] > 60 and m["policy"] == "shortest"


def test_bench_overhead_json_has_the_fixed_keys_and_identical_traffic(helsinki):
    p = cosim(
        "bench", "overhead", "--scenario", str(helsinki.path), "--agents", "20", "--repeat", "1", "--reference", "--json"
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)  # stdout is exactly one JSON object
    for key in ("sumo_s", "env_s", "ratio", "decisions", "decisions_per_s", "agents", "backend"):
        assert key in row
    assert row["agents"] == 20 and row["backend"] == "libsumo" and row["decisions"] > 0
    assert abs(row["ratio"] - row["env_s"] / row["sumo_s"]) < 1e-3
    # same vehicles, same routes: SUMO's own statistics agree between the env run and the bare run
    assert row["env_vehicles_finished"] == row["sumo_vehicles_finished"] > 0
    assert row["env_mean_duration"] == row["sumo_mean_duration"]
    # the yardstick loop decides only where it sees a vehicle on a new edge: never more often than the env
    assert 0 < row["reference_decisions"] <= row["decisions"] and row["reference_s"] > 0
    # the stepping floor (same simulation, nothing steered; the bench checks its traffic is the bare run's)
    assert row["stepping_s"] > 0 and row["stepping_ratio"] > 0 and row["env_over_stepping"] > 0


def test_bench_scaling_mode_lists_every_n(helsinki):
    p = cosim("bench", "overhead", "--scenario", str(helsinki.path), "--agents", "5,10", "--repeat", "1", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert [r["agents"] for r in rows] == [5, 10]


def test_bench_takes_more_agents_than_the_built_pool(kouvola):
    """A built folder with a 100-trip pool benchmarks 120 agents: the pool grows, the traffic stays."""
    assert len(kouvola.trip_pool) < 120
    p = cosim("bench", "overhead", "--scenario", str(kouvola.path), "--agents", "120", "--repeat", "1", "--json")
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["agents"] == 120 and row["decisions"] > 0 and "growing the agent pool to 120" in p.stderr
    assert row["env_vehicles_finished"] == row["sumo_vehicles_finished"] > 120


def test_bad_input_is_one_line_and_nonzero(helsinki):
    for args, needle in [
        (("simulate", "atlantis"), "unknown city"),
        (("simulate", str(helsinki.path), "--policy", "teleport"), "unknown policy"),
        (("simulate", str(helsinki.path), "--agents", "99999"), "routable trips"),
        (("simulate", str(helsinki.path), "--backend", "carrier-pigeon"), "--backend must be libsumo or traci, got 'carrier-pigeon'"),
        (("bench", "overhead", "--scenario", str(helsinki.path), "--agents", "0"), "positive"),
    ]:
        p = cosim(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], (args, p.stderr)


def test_gui_without_a_display_says_so(helsinki):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    p = subprocess.run(
        [sys.executable, "-m", "cosim", "simulate", str(helsinki.path), "--gui"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert p.returncode == 2 and "needs a display" in p.stderr


def test_instruction_counts_are_repeatable_and_include_child_processes():
    """`bench overhead --instructions` rests on these counts; valgrind is installed by ./dev test."""
    true = shutil.which("true")
    one = callgrind_instructions([true])
    assert one > 10_000 and callgrind_instructions([true]) == one
    assert callgrind_instructions(["sh", "-c", f"{true}; {true}"]) > 2 * one


def test_instructions_without_valgrind_is_a_clear_error(helsinki, tmp_path):
    p = cosim(
        "bench", "overhead", "--scenario", str(helsinki.path), "--agents", "5", "--instructions",
        env_extra={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert p.returncode == 2 and p.stderr.strip().startswith("error:") and "valgrind" in p.stderr
