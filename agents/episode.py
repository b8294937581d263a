"""One episode of any method on the env, with its time split: the loop that `cosim train`, the rollout
workers and `cosim evaluate` share (agents/runner.py drives many of them; agents/workers.py runs them in
other processes)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from agents.base import Method


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB: since it started, or since `reset_peak_rss`."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def reset_peak_rss() -> None:
    """Start a new peak-memory count (Linux: clear_refs 5 resets VmHWM); elsewhere nothing happens."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def make_env(scenario, cfg, settings: dict):
    """The env of a run: the tree's env section with the settings the method fixes (`Method.env_settings`)."""
    from cosim import VehicleRoutingEnv

    return VehicleRoutingEnv(scenario, dataclasses.replace(cfg.env, **settings))


def run_episode(env, method: Method, seed: int, train: bool, time_limit: float | None = None) -> dict:
    """One episode; returns the env's metrics plus return and the time split (seconds). The SUMO part of
    the split is the kernel's own count (`Kernel.count_sumo_time`), 0 where it is not counting.
    `time_limit` cuts the episode after that many simulated s (`VehicleRoutingEnv.reset`'s option)."""
    from cosim.errors import SumoFault

    clock = time.perf_counter
    kernel = getattr(env, "kernel", None)

    def sumo_seconds() -> float:
        return getattr(kernel, "sumo_seconds", 0.0)

    t_start = clock()
    sumo0 = sumo_seconds()
    method.timers = dict.fromkeys(method.timers, 0.0)
    method.begin_episode(env, train)
    returns = dict.fromkeys(env.possible_agents, 0.0)
    t_env = sumo_env = 0.0  # time inside env.reset/env.step, and the SUMO part of it

    def in_env(fn, *args, **kwargs):
        nonlocal t_env, sumo_env
        t0, s0 = clock(), sumo_seconds()
        try:
            return fn(*args, **kwargs)
        finally:
            t_env += clock() - t0
            sumo_env += sumo_seconds() - s0

    try:
        obs, infos = in_env(env.reset, seed=seed, options={"time_limit": time_limit} if time_limit else None)
    except SumoFault as exc:  # SUMO failed to start twice
        metrics = {"sumo_fault": True, "fault": str(exc)[:200], "decisions": 0}
    else:
        while env.agents:
            actions = method.act(env, obs, train)
            obs, rew, term, trunc, infos = in_env(env.step, actions)
            for a, r in rew.items():
                if r:
                    returns[a] += r
            if train:
                method.observe(env, rew, term, trunc, infos)
        metrics = dict(env.metrics)
    faulted = bool(metrics.get("sumo_fault"))
    logs = method.end_episode(env, train, faulted)
    wall = clock() - t_start
    sumo_s = sumo_seconds() - sumo0
    torch_s = sum(method.timers.values())
    row = {k: v for k, v in metrics.items() if k not in ("episode",)}
    row["return"] = float(np.mean(list(returns.values()))) if returns else 0.0
    row.update(logs)
    # the time split: t_sumo + t_env_python + t_torch_infer + t_torch_update + t_python = episode_wall
    row.update(
        episode_wall_s=wall,
        t_env_s=t_env,  # inside env.reset/env.step: SUMO + the env's Python
        t_sumo_s=sumo_s,  # inside SUMO calls, wherever made (MAPPO's env.state() reads SUMO too)
        t_env_python_s=t_env - sumo_env,
        t_torch_infer_s=method.timers.get("torch_infer", 0.0),
        t_torch_update_s=method.timers.get("torch_update", 0.0),
        t_python_s=wall - t_env - torch_s - (sumo_s - sumo_env),  # runner + method Python
        decisions_per_s=(metrics.get("decisions", 0) / wall) if wall > 0 else 0.0,
        peak_rss_mb=peak_rss_mb(),  # of the process that ran it (a rollout worker's own)
    )
    return row
