"""`cosim bench sed`: what expert demonstrations cost per agent, and how good the kept plans are.

One SED run without the answer cache (every prompt is a real call), timed by phase: the LLM's wall
seconds (a concurrent backend's prompts overlap, so these are what a user waits, not the sum of the
calls), the rollouts' seconds, the tokens, and ``seconds_per_agent_round``: LLM seconds per agent
decision asked for (a prompt about 6 agents counts 6; re-asks count again). The kept plan set's mean
travel time is the quality side: a faster SED that plans worse is no improvement.
"""

from __future__ import annotations

import time

import numpy as np

from llm.sed import SED, SEDConfig, cost_summary


def sed_bench(scenario, tree, *, progress=lambda msg: None) -> dict:
    """One uncached SED run of the experiment tree's ``sed`` settings on a built scenario."""
    cfg = SEDConfig.from_settings(tree.sed, tree.env.n_agents, tree.run.seed)
    cfg.cache_path = None
    t0 = time.perf_counter()
    sed = SED(scenario, cfg, env=tree.env)
    try:
        setup_s = time.perf_counter() - t0
        result = sed.run(progress=progress)
        rounds = result.rounds
        kept = rounds[result.best_round - 1]
        return {
            "scenario": scenario.name,
            "agents": len(sed.candidates),
            "llm": cfg.llm,
            "subsets": len(sed.subsets),
            "subset_size": cfg.subset_size,
            "max_concurrency": sed.concurrency,
            "rollout_workers": sed._pool.n if sed._pool is not None else 1,
            "rounds": len(rounds),
            "accepted_round": result.accepted_round,
            "best_round": result.best_round,
            "llm_seconds": round(sum(r.llm_seconds for r in rounds), 3),
            "llm_calls": sum(r.llm_calls for r in rounds),
            **cost_summary(rounds),
            "asked_subsets_per_round": [len(r.asked_subsets) for r in rounds],
            "mean_travel_time": round(kept.mean_travel_time, 2),
            "mean_travel_time_per_round": [round(r.mean_travel_time, 2) for r in rounds],
            "max_bound_per_round": [round(max(r.bound.values()), 4) for r in rounds],
            "fallback_share": round(result.fallback_share, 4),
            "invalid_answers": sum(r.invalid_answers for r in rounds),
            "setup_s": round(setup_s, 3),
            "wall_s": round(time.perf_counter() - t0, 3),
            "free_flow_mean_s": round(float(np.mean([c[0].seconds for c in sed.candidates.values()])), 2),
        }
    finally:
        sed.close()
