"""Non-learning policies on the env's observation format (used by `cosim simulate` and the baselines).

Candidates are sorted by free-flow time to the destination, so action 0 is the free-flow shortest
choice at every decision.
"""

from __future__ import annotations

import numpy as np


def shortest_actions(env, obs: dict) -> dict:
    return dict.fromkeys(env.deciding_agents, 0)


def random_actions(env, obs: dict, rng: np.random.Generator) -> dict:
    return {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.deciding_agents}


def plan_actions(env, obs: dict, plans: dict[str, list[str]]) -> dict:
    """Replay fixed route plans (agent -> list of edge ids): at each decision pick the candidate that
    follows the decision edge in the plan; where the agent is off its plan, the free-flow choice."""
    out = {}
    for a in env.deciding_agents:
        act = 0
        plan = plans.get(a)
        if plan:
            info_edge, cands = env.decision_edge(a), env.candidate_edges(a)
            try:
                nxt = plan[plan.index(info_edge) + 1]
                act = cands.index(nxt)
            except (ValueError, IndexError):
                act = 0
        out[a] = act
    return out


def make_policy(name: str, seed: int = 0):
    """policy(env, obs) -> actions for the deciding agents."""
    if name == "shortest":
        return shortest_actions
    if name == "random":
        rng = np.random.default_rng(seed)
        return lambda env, obs: random_actions(env, obs, rng)
    from cosim.errors import CosimError

    raise CosimError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


POLICIES = ("random", "shortest")
