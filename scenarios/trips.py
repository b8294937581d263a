"""The pool of controlled-agent trips: origin edge, destination edge, departure time.

Trips are drawn by rejection sampling from the seed: an (origin, destination) pair uniform over the
eligible edges is kept only if the free-flow shortest path exists and is long enough, so the pool is
uniform over routable trips. Departure times are uniform in the recipe's window and the pool keeps the
order of sampling (it is not sorted), so the first N trips — what the env takes for N agents — are
themselves a uniform sample, and growing N keeps the earlier agents' trips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scenarios.errors import ScenarioError
from scenarios.roadgraph import RoadGraph

# A vehicle (5 m + 2.5 m gap) must fit on its departure edge with room to accelerate; shorter
# origins (junction stubs left by netconvert) make SUMO delay or refuse the insertion.
MIN_ORIGIN_EDGE_M = 20.0
ATTEMPTS_PER_TRIP = 50
_CACHE_LIMIT = 512  # attempts between clearing the graph's per-destination Dijkstra cache


@dataclass(frozen=True)
class Sampled:
    trips: list[dict]
    attempts: int


def sample(graph: RoadGraph, *, pool: int, need: int, seed: int, depart_begin: float,
           depart_end: float, min_trip_m: float) -> Sampled:  # fmt: skip
    """Up to `pool` routable trips; ScenarioError if fewer than `need` can be found. Their lengths and
    free-flow times are the edge-only router's (`RoadGraph.edges_only`), whether or not the net was read
    with its junctions: a build's pool never depends on how its net was read."""
    graph = graph.edges_only()
    n = len(graph.edges)
    origins = np.flatnonzero(graph.length >= MIN_ORIGIN_EDGE_M)
    if n < 2:
        raise ScenarioError(
            f"the net has {n} edge{'s' if n != 1 else ''} that passenger cars may use; a trip needs at least two "
            "(an origin and a different destination)"
        )
    if len(origins) == 0:
        raise ScenarioError(
            f"the net has no edge a car can start a trip on ({n} passenger edges, all shorter than "
            f"{MIN_ORIGIN_EDGE_M:g} m)"
        )
    rng = np.random.default_rng(seed)
    trips: list[dict] = []
    max_attempts = ATTEMPTS_PER_TRIP * pool
    attempts = 0
    while len(trips) < pool and attempts < max_attempts:
        attempts += 1
        o = int(origins[rng.integers(len(origins))])
        d = int(rng.integers(n))
        if o == d:
            continue
        if attempts % _CACHE_LIMIT == 0:  # big nets: do not keep one distance vector per destination
            graph.clear_cache()
        path = graph.path(o, d)
        if not path:
            continue
        length = float(graph.length[path].sum())
        if length < min_trip_m:
            continue
        trips.append(
            {
                "id": f"agent{len(trips)}",
                "from": graph.edges[o],
                "to": graph.edges[d],
                "depart": round(float(rng.uniform(depart_begin, depart_end)), 1),
                "length_m": round(length, 1),
                "freeflow_s": round(float(graph.fftime[path].sum()), 1),
            }
        )
    if len(trips) < need:
        raise ScenarioError(
            f"only {len(trips)} routable trips of at least {min_trip_m:g} m found in {attempts} tries, "
            f"{need} agents needed: the net is too small or too disconnected "
            "(lower min_trip_m or agents, or pick a larger area)"
        )
    return Sampled(trips=trips, attempts=attempts)
