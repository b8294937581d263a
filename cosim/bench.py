"""Co-simulation overhead benchmark: the env against bare SUMO on identical traffic.

(a) ``sumo`` as a plain process, the agents on fixed free-flow routes (the same route file the env
    loads), run to the simulated time at which the env's episode ended;
(b) the env with the ``shortest`` policy, which re-picks those same routes at every decision.
The traffic is the same, so env_s / sumo_s is the price of the co-simulation. The run also checks that
claim: SUMO's all-vehicle trip statistics of (a) and (b) must agree.

Wall-clock time on a shared machine drifts (seen here: the same bare run took 1.0 s and 2.5 s within
the hour), so the ratio is taken over interleaved pairs, and ``instructions=True`` adds a second,
deterministic measure: the instructions both sides execute, counted by valgrind's callgrind (an env
episode = a process that runs one episode minus one that only sets the env up). Instructions are not
seconds (the interpreter and SUMO retire them at different rates), but they do not depend on the
machine's load, so they show whether a change made the env cheaper.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from cosim.env import EnvConfig, VehicleRoutingEnv
from cosim.errors import CosimError
from cosim.kernel import sumo_binary, write_agent_routes
from cosim.policies import shortest_actions
from scenarios import Scenario
from scenarios.sumotools import TOOL_TIME_LIMIT_S

CALLGRIND_TIME_LIMIT_S = 4 * 3600.0  # valgrind runs a 1 000-agent episode in ~20 min


def bench_config(agents: int, backend: str) -> EnvConfig:
    """The measured env: the default observation (live times sampled, intent tracked) on free-flow routes,
    so that the shortest policy drives exactly the routes of the bare SUMO run it is compared with."""
    return EnvConfig(n_agents=agents, backend=backend, continuation="free_flow")


def _bare_cmd(env: VehicleRoutingEnv, seed: int, end: float, tmp: str) -> list[str]:
    passive = env.scenario.passive_vehicles(env.trips)
    routes = write_agent_routes(Path(tmp) / "agents.rou.xml", env.trips, env.initial_routes, passive=passive)
    return [sumo_binary("sumo"), *env.kernel.sumo_options(seed, [env.scenario.background_file, routes], end)]


def _bare_sumo(env: VehicleRoutingEnv, seed: int, end: float) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp:
        stats = Path(tmp) / "stats.xml"
        cmd = _bare_cmd(env, seed, end, tmp) + ["--statistic-output", str(stats)]
        t0 = time.perf_counter()
        try:  # the same time limit as every tool the builder runs
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIME_LIMIT_S)
        except subprocess.TimeoutExpired:
            raise CosimError(f"bare sumo did not finish within {TOOL_TIME_LIMIT_S:g} s") from None
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"bare sumo failed: {proc.stderr.strip()[-500:]}")
        trip = ET.parse(stats).getroot().find("vehicleTripStatistics")
        out = {"count": float(trip.get("count")), "duration": float(trip.get("duration"))}
        return wall, out


def _env_episode(env: VehicleRoutingEnv, seed: int) -> float:
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    while env.agents:
        obs, *_ = env.step(shortest_actions(env, obs))
    return time.perf_counter() - t0


def _reference_episode(env: VehicleRoutingEnv, seed: int, end: float) -> tuple[float, int]:
    """The yardstick the env is held against: the simplest hand-written event-driven loop over the same
    simulation (subscribe each agent's road, act only when it changes, read the candidates' speed and
    occupancy at a fork, setRoute to the free-flow choice). It checks every agent every step and it
    misses forks on edges that a car crosses within one step (the env catches those)."""
    import traci.constants as tc

    g, kernel = env.graph, env.kernel
    t0 = time.perf_counter()
    kernel.start(seed, env.trips, env.initial_routes, end)
    conn, sim, veh, edge = kernel.conn, kernel.conn.simulation, kernel.conn.vehicle, kernel.conn.edge
    dest = {t.id: g.index[t.destination] for t in env.trips}
    last: dict[str, str] = {}
    decisions = 0
    while sim.getTime() < end and sim.getMinExpectedNumber() > 0:
        conn.simulationStep()
        for v in sim.getDepartedIDList():
            if v in dest:
                veh.subscribe(v, (tc.VAR_ROAD_ID,))
                last[v] = ""
        for v in sim.getArrivedIDList():
            last.pop(v, None)
        for v, seen in last.items():
            road = veh.getSubscriptionResults(v)[tc.VAR_ROAD_ID]
            if road == seen or not road or road[0] == ":":  # unchanged, teleporting, or on a junction
                continue
            last[v] = road
            e, d = g.index[road], dest[v]
            if env.decision_edges(d)[e]:
                choice = env.choice_at(e, d)
                for f in choice.ids:
                    edge.getLastStepMeanSpeed(f)
                    edge.getLastStepOccupancy(f)
                veh.setRoute(v, [road] + [g.edges[i] for i in env.free_flow_path(choice.edges[0], d)])
                decisions += 1
    return time.perf_counter() - t0, decisions


def _stepping_episode(env: VehicleRoutingEnv, seed: int, end: float) -> tuple[float, dict]:
    """The floor under every in-process co-simulation: the same reload and steps through the kernel,
    and no agent looked at or steered (the agents keep their free-flow routes, so it is the bare run's
    traffic too). env_s / stepping_s is what the env's Python adds; stepping_s / sumo_s is what running
    SUMO inside this process instead of as its own program costs."""
    kernel = env.kernel
    t0 = time.perf_counter()
    kernel.start(seed, env.trips, env.initial_routes, end)
    while kernel.step().time < end:
        pass
    wall = time.perf_counter() - t0
    return wall, kernel.trip_statistics()


def _valgrind() -> str:
    found = shutil.which("valgrind")
    if not found:
        raise CosimError("--instructions needs valgrind on PATH (Debian/Ubuntu: apt-get install valgrind)")
    return found


def callgrind_instructions(cmd: list[str]) -> int:
    """Instructions that `cmd` and its child processes execute, counted by callgrind."""
    with tempfile.TemporaryDirectory(prefix="cosim-callgrind-") as tmp:
        try:
            proc = _callgrind(cmd, tmp)
        except subprocess.TimeoutExpired:
            raise CosimError(f"callgrind did not finish within {CALLGRIND_TIME_LIMIT_S:g} s") from None
    counts = re.findall(r"Collected : ([\d,]+)", proc.stderr)
    if proc.returncode != 0 or not counts:
        raise RuntimeError(f"callgrind run failed: {proc.stderr.strip()[-500:]}")
    return sum(int(c.replace(",", "")) for c in counts)


def _callgrind(cmd: list[str], tmp: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_valgrind(), "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={tmp}/cg.%p", *cmd],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # same dict layouts, same count
        timeout=CALLGRIND_TIME_LIMIT_S,
    )


def _instructions(env: VehicleRoutingEnv, seed: int, end: float) -> dict:
    def episodes(n: int) -> list[str]:
        return [sys.executable, "-m", "cosim.bench", str(env.scenario.path), str(len(env.trips)),
                env.config.backend, str(seed), str(n)]  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="cosim-bench-") as tmp:
        bare = callgrind_instructions(_bare_cmd(env, seed, end, tmp))
    env_i = callgrind_instructions(episodes(1)) - callgrind_instructions(episodes(0))
    return {"sumo_instructions": bare, "env_instructions": env_i, "instructions_ratio": round(env_i / bare, 4)}


def overhead(
    scenario: Scenario,
    agents: int,
    backend: str = "libsumo",
    seed: int = 0,
    repeat: int = 5,
    instructions: bool = False,
    reference: bool = False,
) -> dict:
    """One overhead measurement over `repeat` pairs (an env episode, then the bare run), after one
    untimed warm-up of each; with `reference`, each pair also runs the yardstick loop and the bare
    stepping floor (`_stepping_episode`).

    The pairs are interleaved and the ratio is the median of the per-pair ratios: on a shared machine
    the speed of the CPU drifts by tens of percent within a minute, and two runs taken back to back
    see nearly the same machine, so their ratio is far steadier than a ratio of two separate medians
    (`sumo_s` and `env_s` are reported as medians too, for the absolute scale)."""
    if instructions:
        _valgrind()  # fail before the measurement, not after it
    env = VehicleRoutingEnv(scenario, bench_config(agents, backend))
    try:
        # SUMO start-up and the OS file cache; training runs many episodes, so the steady state is what
        # a user pays
        _env_episode(env, seed)
        m = dict(env.metrics)
        end = env.begin + m["sim_time"]  # the episode's last step, on the scenario's clock
        _bare_sumo(env, seed, end)
        if reference:
            _reference_episode(env, seed, end)
            _stepping_episode(env, seed, end)
        env_times, sumo_times, ref_times, step_times = [], [], [], []
        for _ in range(repeat):
            env_times.append(_env_episode(env, seed))
            if env.metrics["sim_time"] != m["sim_time"] or env.metrics["decisions"] != m["decisions"]:
                raise RuntimeError("the env's episodes differ between repeats with the same seed")
            wall, bare = _bare_sumo(env, seed, end)
            sumo_times.append(wall)
            if reference:
                wall, ref_decisions = _reference_episode(env, seed, end)
                ref_times.append(wall)
                wall, stepped = _stepping_episode(env, seed, end)
                if (stepped.get("count"), stepped.get("duration")) != (bare["count"], bare["duration"]):
                    raise RuntimeError("the stepping floor's traffic differs from the bare run's")
                step_times.append(wall)
        counted = _instructions(env, seed, end) if instructions else {}
        if reference:
            counted |= {
                "reference_s": round(statistics.median(ref_times), 4),
                "reference_ratio": round(statistics.median(r / b for r, b in zip(ref_times, sumo_times)), 4),
                "reference_decisions": ref_decisions,
                "stepping_s": round(statistics.median(step_times), 4),
                "stepping_ratio": round(statistics.median(t / b for t, b in zip(step_times, sumo_times)), 4),
                "env_over_stepping": round(statistics.median(e / t for e, t in zip(env_times, step_times)), 4),
            }
    finally:
        env.close()
    env_s, sumo_s = statistics.median(env_times), statistics.median(sumo_times)
    ratios = sorted(e / b for e, b in zip(env_times, sumo_times))
    return {
        "scenario": scenario.name,
        "backend": backend,
        "agents": agents,
        "seed": seed,
        "repeat": repeat,
        "sim_time": m["sim_time"],
        "sumo_s": round(sumo_s, 4),
        "env_s": round(env_s, 4),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_min": round(ratios[0], 4),
        "ratio_max": round(ratios[-1], 4),
        "decisions": m["decisions"],
        "decisions_per_s": round(m["decisions"] / env_s, 1),
        "arrival_rate": m["arrival_rate"],
        "teleports": m["teleports"],
        # identical traffic check: SUMO's own statistics over all finished vehicles, both runs
        "env_vehicles_finished": m["all_vehicles_finished"],
        "sumo_vehicles_finished": bare["count"],
        "env_mean_duration": m["all_vehicles_mean_travel_time"],
        "sumo_mean_duration": bare["duration"],
        "cores": os.cpu_count(),
        **counted,
    }


if __name__ == "__main__":  # the measured process of _instructions: SCENARIO AGENTS BACKEND SEED EPISODES
    from scenarios import ensure_built

    path, n, backend, seed, episodes = sys.argv[1:6]
    bench_env = VehicleRoutingEnv(ensure_built(path), bench_config(int(n), backend))
    for _ in range(int(episodes)):
        _env_episode(bench_env, int(seed))
    bench_env.close()


def rerouting_sweep(scenario: Scenario, agents: int, periods: list[float], steps: list[int], interval: float,
                    seeds: int, horizon: float | None = None) -> list[dict]:  # fmt: skip
    """SUMO's rerouting device on the agents for every (period, adaptation steps) pair, `seeds` episodes
    each (SUMO seeds 0..seeds-1): mean agent and all-vehicle travel time, mean and std over the seeds.
    The strongest row is what `sumo-rerouting`'s defaults should be (docs/results.md)."""
    import statistics

    rows = []
    for period in periods:
        for n in steps:
            cfg = EnvConfig(n_agents=agents, horizon=horizon, control="sumo-rerouting", rerouting_period=period,
                            rerouting_adaptation_steps=n, rerouting_adaptation_interval=interval)  # fmt: skip
            env = VehicleRoutingEnv(scenario, cfg)
            agent_tt, all_tt, arrived = [], [], []
            try:
                for seed in range(seeds):
                    env.reset(seed=seed)
                    while env.agents:
                        env.step({})
                    m = env.metrics
                    agent_tt.append(m["mean_travel_time"])
                    all_tt.append(m["all_vehicles_mean_travel_time"])
                    arrived.append(m["arrival_rate"])
            finally:
                env.close()
            rows.append({
                "period": period, "adaptation_steps": n, "adaptation_interval": interval, "seeds": seeds,
                "mean_travel_time": round(statistics.mean(agent_tt), 2),
                "mean_travel_time_std": round(statistics.stdev(agent_tt), 2) if seeds > 1 else 0.0,
                "all_vehicles_mean_travel_time": round(statistics.mean(all_tt), 2),
                "arrival_rate": round(statistics.mean(arrived), 4),
            })  # fmt: skip
    return rows
