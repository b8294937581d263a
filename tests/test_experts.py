"""Demonstrations from the strongest non-learning experts (`cosim demos --expert navigation|dua`) and the
rerouting device's sweep (`cosim bench rerouting`), through the command line (issue 28)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from cosim import demos as demofiles


def _cosim(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, WANDB_MODE="offline"))  # fmt: skip


def test_navigation_and_dua_demonstrations_are_in_the_envs_format(helsinki, tmp_path):
    nav = _cosim("demos", "--scenario", str(helsinki.path), "--agents", "12", "--expert", "navigation",
                 "--out", str(tmp_path / "nav"))  # fmt: skip
    assert nav.returncode == 0, nav.stderr[-2000:]
    d = demofiles.read(tmp_path / "nav")
    summary = demofiles.read_summary(tmp_path / "nav")
    assert summary["expert"] == "navigation" and summary["agents"] == 12 and summary["demo_samples"] == d.n > 12
    assert np.all(d.action == 0)  # the live-fastest candidate is action 0 with live continuations
    assert d.obs.shape[1] == 10 * 6 + 4 and len(d.traces) == 12 and d.done.sum() == 12
    assert summary["scenario_hash"] == helsinki.manifest["hash"]
    # a scaled demand is its own scenario: the demonstrations are made on it, not on the city as shipped
    scaled = _cosim("demos", "--scenario", "kouvola", "--agents", "6", "--expert", "navigation", "--set",
                    "scenario.demand_scale=2", "--out", str(tmp_path / "scaled"))  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr[-2000:]
    from scenarios import ensure_built

    kouvola2 = ensure_built("kouvola", demand_scale=2)
    assert demofiles.read_summary(tmp_path / "scaled")["scenario_hash"] == kouvola2.manifest["hash"]
    assert kouvola2.manifest["hash"] != ensure_built("kouvola").manifest["hash"]

    dua = _cosim("demos", "--scenario", str(helsinki.path), "--agents", "12", "--expert", "dua",
                 "--set", "algorithm.dua_iterations=3", "--out", str(tmp_path / "dua"))  # fmt: skip
    assert dua.returncode == 0, dua.stderr[-2000:]
    d = demofiles.read(tmp_path / "dua")
    plans = demofiles.read_plans(tmp_path / "dua")
    assert sorted(plans) == sorted(d.agents) and demofiles.read_summary(tmp_path / "dua")["dua_iterations"] == 3
    # every expert action is inside its mask
    assert np.all(d.mask[np.arange(d.n), d.action])
    bad = _cosim("demos", "--scenario", str(helsinki.path), "--expert", "oracle", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --expert must be one of llm, navigation, dua, got 'oracle'"


def test_bench_rerouting_sweeps_the_device_settings(kouvola):
    r = _cosim("bench", "rerouting", "--scenario", str(kouvola.path), "--agents", "10", "--periods", "0,60",
               "--steps", "30,180", "--seeds", "2", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)
    assert [(row["period"], row["adaptation_steps"]) for row in rows] == [(0, 30), (0, 180), (60, 30), (60, 180)]
    assert all(row["seeds"] == 2 and row["arrival_rate"] > 0 and row["mean_travel_time"] > 0 for row in rows)
    bad = _cosim("bench", "rerouting", "--scenario", str(kouvola.path), "--periods", "30,-1")
    assert bad.returncode == 2 and "--periods takes non-negative numbers" in bad.stderr


def test_reled_trains_on_demonstrations_made_on_demand_by_an_expert(kouvola, tmp_path, cosim_home):
    """`cosim train -m reled --expert navigation` without --demos: the navigation app's demonstrations are
    recorded once into the cache and RELED learns from them."""
    args = ["train", "-s", str(kouvola.path), "-m", "reled", "--expert", "navigation", "--agents", "8",
            "--episodes", "1", "--eval-every", "0", "--out", str(tmp_path / "run")]  # fmt: skip
    env = dict(os.environ, WANDB_MODE="offline", COSIM_HOME=str(cosim_home))
    r = subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "recording navigation demonstrations" in r.stderr
    cached = [p for p in (cosim_home / "demos").iterdir() if "-navigation-" in p.name]
    assert len(cached) == 1 and demofiles.read_summary(cached[0])["expert"] == "navigation"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["algorithm"]["expert"] == "navigation"
