"""The passenger-car routing graph of a SUMO net, shared by the scenario builder and the environment.

Edges are the graph's nodes and allowed connections its arcs, because route choice in SUMO is a choice
of the next *edge* (turn restrictions live on connections, not on junctions). Costs are free-flow times,
the weights SUMO's own routers (duarouter, the rerouting device, `simulation.findRoute`) use on an empty
network: each edge's length / speed limit plus, for each move from one edge to the next, the time to
cross the junction on its internal lanes and SUMO's penalties: 1.5 s where the move yields outside a
traffic light (`--weights.minor-penalty`), 5 s instead for such a U-turn (`--weights.turnaround-penalty`). `edges_only()` drops the junction part,
the weights used before 2026-12-07, so earlier runs reproduce. Shortest paths are computed once per
destination with scipy's C Dijkstra on the reversed graph and cached, so the environment never runs a
router inside its step loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

VCLASS = "passenger"
MINOR_PENALTY_S = 1.5  # SUMO's --weights.minor-penalty default (duarouter, sumo)
TURNAROUND_PENALTY_S = 5.0  # --weights.turnaround-penalty: a yielding U-turn pays this instead
MINOR_STATES = frozenset("m=sw")  # a yielding move outside a traffic light: minor, equal, stop, all-way stop


@dataclass
class RoadGraph:
    edges: list[str]
    names: list[str]
    length: np.ndarray  # metres
    speed: np.ndarray  # m/s, speed limit
    xy: np.ndarray  # (E, 2) midpoint of each edge, metres in the net's projection
    succ: list[tuple[int, ...]]  # allowed continuations, in a fixed order (by edge id)
    # junction-internal edge id (":J_3") -> the edge it leads into: tells where a vehicle crossing a
    # junction is going (empty when the net was read without internal edges)
    into: dict[str, int] = field(default_factory=dict)
    # (edge, next edge) -> (traffic light, its link indices for every lane connection between the two),
    # where a traffic light controls all of them
    signals: dict[tuple[int, int], tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # (edge, next edge) -> free-flow seconds to cross the junction between them, as SUMO's router counts
    # them (the first lane connection's internal lanes in the net's order, plus penalties); empty: none
    junction: dict[tuple[int, int], float] = field(default_factory=dict)
    index: dict[str, int] = field(init=False)
    fftime: np.ndarray = field(init=False)
    arc_junction: np.ndarray = field(init=False, repr=False)  # junction seconds per arc of reverse_matrix()
    _rev: csr_matrix = field(init=False, repr=False)
    _succ_matrix: csr_matrix = field(init=False, repr=False)
    _cache: dict[int, tuple[np.ndarray, np.ndarray]] = field(init=False, default_factory=dict, repr=False)
    _edges_only: RoadGraph | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.index = {e: i for i, e in enumerate(self.edges)}
        self.fftime = self.length / np.maximum(self.speed, 0.1)
        n = len(self.edges)
        # reversed arcs f -> e (f continues e), sorted by f: the CSR layout of the reversed graph, so an
        # arc's position in the arrays is its position in the matrix's data (live weights reuse it)
        arcs = sorted((f, e) for e, nxt in enumerate(self.succ) for f in nxt)
        rows = np.array([f for f, _ in arcs], dtype=np.int64)
        cols = np.array([e for _, e in arcs], dtype=np.int32)
        indptr = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        junction = self.junction
        self.arc_junction = np.array([junction.get((e, f), 0.0) for f, e in arcs], dtype=float)
        # weight = time to traverse e (the edge being left) and the junction at its end towards f
        self._rev = csr_matrix((self.fftime[cols] + self.arc_junction, cols, indptr), shape=(n, n))
        self._succ_matrix = csr_matrix(
            (np.ones(len(arcs), dtype=np.int32), (cols, rows)), shape=(n, n)
        )  # [e, f] = 1 where f continues e

    def edges_only(self) -> RoadGraph:
        """The same graph weighted by edge times alone (no junction crossings): the router before
        2026-12-07 (`env.junction_times=false`). Built once and kept."""
        if not self.junction:
            return self
        if self._edges_only is None:
            self._edges_only = RoadGraph(self.edges, self.names, self.length, self.speed, self.xy, self.succ,
                                         self.into, self.signals)  # fmt: skip
        return self._edges_only

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_net_file(cls, path: str | Path) -> RoadGraph:
        import sumolib  # local: sumolib's net reader is only needed when building the graph

        return cls.from_net(sumolib.net.readNet(str(path), withInternal=True))

    @classmethod
    def from_net(cls, net) -> RoadGraph:
        """From an already loaded sumolib net (the builder reads the net once for counts, map and trips)."""
        kept = [e for e in net.getEdges() if not e.isSpecial() and e.allows(VCLASS)]
        kept.sort(key=lambda e: e.getID())
        idx = {e.getID(): i for i, e in enumerate(kept)}
        succ = []
        for e in kept:
            outs = sorted(idx[t.getID()] for t in e.getAllowedOutgoing(VCLASS) if t.getID() in idx)
            succ.append(tuple(outs))
        signals = {}
        for e in kept:
            for to, conns in e.getOutgoing().items():
                lights = {c.getTLSID() for c in conns}  # "" for a connection no light controls
                if to.getID() in idx and len(lights) == 1 and "" not in lights:
                    links = tuple(sorted({c.getTLLinkIndex() for c in conns}))
                    signals[(idx[e.getID()], idx[to.getID()])] = (lights.pop(), links)
        junction = {}  # needs the internal lanes: a net read without them (the builder's) has no crossings
        with_internal = any(e.getFunction() == "internal" for e in net.getEdges(withInternal=True))
        for e in kept if with_internal else ():
            for to, conns in e.getOutgoing().items():
                if to.getID() in idx:
                    junction[(idx[e.getID()], idx[to.getID()])] = _crossing(net, conns[0])
        into = {}
        for e in net.getEdges(withInternal=True):
            if e.getFunction() != "internal":
                continue
            nxt, hops = e, 0
            while nxt.getFunction() == "internal" and hops < 8:  # internal edges can come in pieces
                outs = list(nxt.getOutgoing())
                if len(outs) != 1:
                    break
                nxt, hops = outs[0], hops + 1
            if nxt.getID() in idx:
                into[e.getID()] = idx[nxt.getID()]
        xy = []
        for e in kept:
            shape = e.getShape()
            mid = shape[len(shape) // 2] if len(shape) > 2 else np.mean(shape, axis=0)
            xy.append((float(mid[0]), float(mid[1])))
        return cls(
            edges=[e.getID() for e in kept],
            names=[e.getName() or "" for e in kept],
            length=np.array([e.getLength() for e in kept], dtype=float),
            speed=np.array([e.getSpeed() for e in kept], dtype=float),
            xy=np.array(xy, dtype=float).reshape(-1, 2),
            succ=succ,
            into=into,
            signals=signals,
            junction=junction,
        )

    # ------------------------------------------------------------------ queries
    @property
    def max_degree(self) -> int:
        return max((len(s) for s in self.succ), default=0)

    def _solve(self, dest: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(dest)
        if hit is None:
            dist, pred = dijkstra(self._rev, directed=True, indices=dest, return_predecessors=True)
            # time from entering edge e until reaching the end of dest
            hit = (dist + self.fftime[dest], pred)
            self._cache[dest] = hit
        return hit

    def reverse_matrix(self) -> csr_matrix:
        """The reversed graph's arcs f -> e weighted by the free-flow time of e (the edge being left) and of
        the junction from e into f (`arc_junction`, in the same order as the matrix's data): a router with
        other edge weights keeps its structure and swaps the data (`cosim.traffic`)."""
        return self._rev

    def clear_cache(self) -> None:
        """Forget the cached shortest-path trees (two float arrays per destination seen so far)."""
        self._cache.clear()

    def time_to(self, dest: int) -> np.ndarray:
        """Free-flow seconds from entering each edge to the end of `dest` (inf where unreachable)."""
        return self._solve(dest)[0]

    def path(self, src: int, dest: int) -> list[int]:
        """Free-flow shortest path src -> dest as edge indices (both included); [] if unreachable."""
        dist, nxt = self._solve(dest)
        if not np.isfinite(dist[src]):
            return []
        out = [src]
        while out[-1] != dest:
            out.append(int(nxt[out[-1]]))
        return out

    def path_ids(self, src: str, dest: str) -> list[str]:
        return [self.edges[i] for i in self.path(self.index[src], self.index[dest])]

    def out_count(self, mask: np.ndarray) -> np.ndarray:
        """Per edge, how many of its continuations are in `mask` (a boolean array over edges)."""
        return self._succ_matrix @ mask.astype(np.int32)

    def candidates(self, edge: int, dest: int) -> tuple[int, ...]:
        """Continuations from `edge` from which `dest` can still be reached."""
        t = self.time_to(dest)
        return tuple(f for f in self.succ[edge] if np.isfinite(t[f]))


def _crossing(net, conn) -> float:
    """Free-flow seconds from the end of an edge to the start of the next through `conn` (SUMO times a move
    by the first lane connection between the two edges): its internal edges (a left turn that waits
    inside the junction has two, the second one yielding) at their first lane's length and speed limit,
    plus a penalty for each piece that yields: the turnaround penalty on a U-turn, else the minor-link
    one. Checked against `simulation.findRoute` on the shipped and imported cities (tests)."""
    total, hops = 0.0, 0
    while conn is not None and conn.getViaLaneID() and hops < 8:
        lane = net.getLane(conn.getViaLaneID())
        first = lane.getEdge().getLane(0)  # SUMO times an internal edge by its first lane, whichever is used
        total += first.getLength() / max(first.getSpeed(), 0.1)
        if conn.getState() in MINOR_STATES:
            total += TURNAROUND_PENALTY_S if conn.getDirection() == "t" else MINOR_PENALTY_S
        outs = lane.getOutgoing()
        conn, hops = (outs[0] if len(outs) == 1 else None), hops + 1
    return total
