"""`cosim demo`: the main job on embedded defaults.

Today it builds the default city and compares the non-learning policies through the same env and
metrics (free-flow shortest path, SUMO's travel-time rerouting, random). The learning part (SED
demonstrations with the local LLM, RELED and the MARL baselines, the HTML report) joins as those
parts land.
"""

from __future__ import annotations

import json
import sys
import time


def run(scenario: str = "helsinki", agents: int | None = None, seed: int = 0) -> list[dict]:
    from cosim.env import EnvConfig, VehicleRoutingEnv
    from cosim.policies import make_policy
    from scenarios import ensure_built

    sc = ensure_built(scenario)
    rows = []
    for name, control in (("shortest", "policy"), ("sumo-rerouting", "sumo-rerouting"), ("random", "policy")):
        env = VehicleRoutingEnv(sc, EnvConfig(n_agents=agents, control=control))
        act = make_policy(name, seed) if control == "policy" else (lambda e, o: {})
        t0 = time.perf_counter()
        try:
            obs, _ = env.reset(seed=seed)
            while env.agents:
                obs, *_ = env.step(act(env, obs))
            m = env.metrics
        finally:
            env.close()
        rows.append(
            {
                "method": name,
                "mean_travel_time": round(m["mean_travel_time"], 1),
                "arrival_rate": round(m["arrival_rate"], 3),
                "teleports": m["teleports"],
                "decisions": m["decisions"],
                "wall_s": round(time.perf_counter() - t0, 2),
            }
        )
        print(
            f"{sc.name}: {name:<15} mean travel {rows[-1]['mean_travel_time']:>7.1f} s  "
            f"arrived {rows[-1]['arrival_rate']:.0%}  ({rows[-1]['wall_s']} s)",
            file=sys.stderr,
        )
    print(json.dumps({"scenario": sc.name, "folder": str(sc.path), "results": rows}, indent=1))
    return rows
