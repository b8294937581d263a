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


def plan_problem(plans: dict[str, list[str]], graph, trips) -> str | None:
    """What is wrong with route plans for these agents on this net (None: nothing). A plan must belong
    to one of the agents, name only passenger roads of the net, lead from each edge to the next, and go
    from the agent's origin to its destination: a plan that does not would be silently ignored at every
    decision (plan_actions falls back to the free-flow choice), and the run would still say "replay"."""
    by_id = {t.id: t for t in trips}
    for agent, plan in plans.items():
        trip = by_id.get(agent)
        if trip is None:
            return f"the plan of agent {agent!r}: no such agent among this run's {len(by_id)}"
        unknown = [e for e in plan if e not in graph.index]
        if unknown:
            return f"the plan of agent {agent!r} names edge {unknown[0]!r}, which is not a road of the net for cars"
        if not plan or plan[0] != trip.origin or plan[-1] != trip.destination:
            ends = f"{plan[0]!r} -> {plan[-1]!r}" if plan else "nothing"
            return (f"the plan of agent {agent!r} goes {ends}; its trip goes {trip.origin!r} -> "
                    f"{trip.destination!r}")  # fmt: skip
        for a, b in zip(plan, plan[1:]):
            if graph.index[b] not in graph.succ[graph.index[a]]:
                return f"the plan of agent {agent!r} is not connected: edge {a!r} does not lead to {b!r}"
    return None


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
