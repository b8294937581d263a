"""The passenger-car routing graph of a SUMO net, shared by the scenario builder and the environment.

Edges are the graph's nodes and allowed connections its arcs, because route choice in SUMO is a choice
of the next *edge* (turn restrictions live on connections, not on junctions). Costs are free-flow times
(length / speed limit), the same weights SUMO's own router uses on an empty network. Shortest paths are
computed once per destination with scipy's C Dijkstra on the reversed graph and cached, so the
environment never runs a router inside its step loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

VCLASS = "passenger"


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
    index: dict[str, int] = field(init=False)
    fftime: np.ndarray = field(init=False)
    _rev: csr_matrix = field(init=False, repr=False)
    _succ_matrix: csr_matrix = field(init=False, repr=False)
    _cache: dict[int, tuple[np.ndarray, np.ndarray]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = {e: i for i, e in enumerate(self.edges)}
        self.fftime = self.length / np.maximum(self.speed, 0.1)
        rows, cols, w = [], [], []
        for e, nxt in enumerate(self.succ):
            for f in nxt:
                # reversed arc f -> e; weight = time to traverse e (the edge being left)
                rows.append(f)
                cols.append(e)
                w.append(self.fftime[e])
        n = len(self.edges)
        self._rev = csr_matrix((np.asarray(w, dtype=float), (rows, cols)), shape=(n, n))
        self._succ_matrix = csr_matrix(
            (np.ones(len(rows), dtype=np.int32), (cols, rows)), shape=(n, n)
        )  # [e, f] = 1 where f continues e

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
        """The reversed graph's arcs f -> e weighted by the free-flow time of e (the edge being left): a
        router with other weights keeps its structure and swaps the data (`cosim.traffic`)."""
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
