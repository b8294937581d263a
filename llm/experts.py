"""Demonstrations from the strongest non-learning experts, in the same folder format as the LLM's
(`cosim demos --expert navigation|dua`): what a better expert is worth to RELED.

* ``navigation``: every agent takes the live-fastest route at departure and at every fork (the env
  with live continuations, action 0) - an uncoordinated navigation app;
* ``dua``: the agents' dynamic user equilibrium against the real background (`agents.dua`), replayed.

The episode runs with the experiment's own env settings (observation, reward, agents), SUMO seed =
the run's seed, so the samples are exactly what the learners see. The folder holds demos.npz,
agents.json, expert_traces.json, plans.json (dua: the equilibrium routes; navigation: none, its routes
follow live traffic) and summary.json; it is written next to --out and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.jsonio import clean_dict
from cosim import demos as demofiles
from cosim.env import VehicleRoutingEnv
from cosim.policies import plan_actions, shortest_actions
from llm.errors import LLMError

EXPERTS = ("navigation", "dua")


def write_expert_demos(tree, expert: str, out: Path) -> dict:
    """Record `expert`'s demonstrations for the tree's scenario and agents into `out`; returns the summary."""
    from agents.dua import equilibrium
    from llm.sed import check_out, new_output
    from scenarios import ensure_built

    if expert not in EXPERTS:
        raise LLMError(f"unknown expert {expert!r}; choose llm, {', '.join(EXPERTS)}")
    out = check_out(out)
    sc = ensure_built(tree.scenario.name, **tree.scenario.overrides())  # a scaled demand is its own build
    env_cfg = tree.env
    if expert == "navigation":
        env_cfg = dataclasses.replace(env_cfg, continuation="live", control="policy")
    env = VehicleRoutingEnv(sc, dataclasses.replace(env_cfg, control="policy"))
    try:
        plans: dict[str, list[str]] = {}
        extra: dict = {}
        if expert == "dua":
            eq = equilibrium(sc, env.trips, env.begin, env.begin + env.horizon, tree.algorithm.dua_iterations,
                             seed=sc.seed)  # fmt: skip
            plans = eq.routes
            extra = {"dua_iterations": len(eq.iterations), "dua_relative_gap": eq.relative_gap}

            def act(e, obs):
                return plan_actions(e, obs, plans)
        else:
            act = shortest_actions
        demos, travel, metrics = demofiles.record(env, act, seed=tree.run.seed)
    finally:
        env.close()
    demos.plans = {a: demofiles.Plan(edges) for a, edges in plans.items()}
    summary = clean_dict({
        "scenario": sc.name,
        "scenario_hash": sc.manifest.get("hash"),
        "expert": expert,
        "agents": len(demos.agents),
        "seed": tree.run.seed,
        "demo_samples": demos.n,
        "demo_mean_travel_time": metrics["mean_travel_time"],
        "all_vehicles_mean_travel_time": metrics["all_vehicles_mean_travel_time"],
        "arrival_rate": metrics["arrival_rate"],
        **extra,
    })  # fmt: skip
    with new_output(out) as tmp:
        demofiles.write(tmp, demos)
        (tmp / demofiles.SUMMARY_JSON).write_text(json.dumps(summary, indent=1))
    return summary
