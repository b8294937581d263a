"""Live travel times: what a navigation app knows about the network, kept the way SUMO's rerouting
device keeps it, and the fastest paths under it.

SUMO's device samples every edge's mean speed (the speed limit where the edge is empty) at a fixed
interval, averages the last N samples, and routes on length / averaged speed. `LiveTraffic` does the
same from the speeds the kernel reads in bulk every ``env.traffic_update_s`` seconds, over a window of
``env.traffic_window_s`` seconds. Reading the device's own weights would tie the agents' knowledge to
SUMO options that also steer background vehicles; sampling here keeps every method's background
identical. Paths under live times come from the same reversed-graph Dijkstra as the free-flow ones
(`scenarios.roadgraph`), computed per destination when first asked (the agents deciding at the same
step in one batched call) and kept for two samples, so a tree routes on times at most two sample
intervals old.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

MIN_SPEED = 0.1  # m/s: a stopped queue counts as crawling, so a jammed edge is slow, not impassable


class LiveTraffic:
    """Smoothed live edge times of one episode, and shortest paths under them (edge indices)."""

    def __init__(self, graph, window_samples: int) -> None:
        self.graph = graph
        self.window = max(int(window_samples), 1)
        rev = graph.reverse_matrix()
        self._indices, self._indptr, self._shape = rev.indices, rev.indptr, rev.shape
        self._junction = graph.arc_junction  # a junction's crossing time is not sampled: it stays free-flow
        self.reset()

    def reset(self) -> None:
        """A new episode: an empty network, every edge at its free-flow time."""
        n = len(self.graph.edges)
        self._samples = np.tile(self.graph.speed, (self.window, 1))  # ring buffer of mean speeds
        self._next = 0
        self.epoch = 0  # bumped by every sample: caches keyed on it go stale
        self.times = self.graph.fftime.copy()
        self._solved: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # dest -> (times, next edges, epoch)
        self._rev = None
        assert self.times.shape == (n,)

    def sample(self, speeds) -> None:
        """One reading of every edge's mean speed (m/s, in graph order); the window's mean replaces the
        live times."""
        self._samples[self._next] = speeds
        self._next = (self._next + 1) % self.window
        mean = self._samples.mean(axis=0)
        self.times = self.graph.length / np.maximum(mean, MIN_SPEED)
        self.epoch += 1
        # a tree lives for two samples: agents decide every few tens of seconds, so most would otherwise
        # need a tree per decision; the times it routes on are then at most two sample intervals old
        self._solved = {d: hit for d, hit in self._solved.items() if hit[2] >= self.epoch - 1}
        self._rev = None

    def _solve(self, dest: int) -> tuple[np.ndarray, np.ndarray, int]:
        hit = self._solved.get(dest)
        if hit is None:
            dist, pred = dijkstra(self._reversed(), directed=True, indices=dest, return_predecessors=True)
            hit = self._solved[dest] = (dist + self.times[dest], pred, self.epoch)
        return hit

    def solve(self, dests) -> None:
        """Compute the trees of several destinations in one call (the agents deciding at the same step):
        scipy's per-call overhead is a large part of one tree's cost on a city net."""
        todo = list(dict.fromkeys(d for d in dests if d not in self._solved))
        if len(todo) < 2:
            return
        dist, pred = dijkstra(self._reversed(), directed=True, indices=todo, return_predecessors=True)
        dist += self.times[todo][:, None]
        for i, d in enumerate(todo):
            self._solved[d] = (dist[i], pred[i], self.epoch)

    def _reversed(self) -> csr_matrix:
        """The reversed graph under the current times: arc f -> e weighs the live time of e (the edge being
        left) plus the junction from e into f."""
        if self._rev is None:
            weights = self.times[self._indices] + self._junction
            self._rev = csr_matrix((weights, self._indices, self._indptr), shape=self._shape)
        return self._rev

    def time_to(self, dest: int) -> np.ndarray:
        """Live seconds from entering each edge to the end of `dest` (inf where unreachable)."""
        return self._solve(dest)[0]

    def path(self, src: int, dest: int) -> tuple[int, ...]:
        """The live-fastest path src -> dest (edge indices, both included); () if unreachable."""
        dist, pred, _ = self._solve(dest)
        if not np.isfinite(dist[src]):
            return ()
        out = [src]
        while out[-1] != dest:
            out.append(int(pred[out[-1]]))
        return tuple(out)


class Intent:
    """Which controlled agents plan to enter each edge soon: the coordination signal a navigation app
    lacks. An agent's entry times are estimated when it plans (departure, every decision) from free-flow
    times along its new route, up to `horizon_s` ahead; an estimate counts from `SLACK_S` before to
    `horizon_s` after the moment asked, since vehicles run late more often than early."""

    SLACK_S = 60.0

    def __init__(self, graph, horizon_s: float) -> None:
        self.fftime = graph.fftime.tolist()
        self.horizon = float(horizon_s)
        self.reset()

    def reset(self) -> None:
        self._by_edge: dict[int, dict[str, tuple[float, int]]] = {}  # edge -> agent -> (entry time, plan)
        self._plan: dict[str, int] = {}  # agent -> its current plan's number (older entries are stale)

    def plan(self, agent, route, now: float) -> None:
        """The agent's route from the edge it is on: replaces what it planned before (its older entries
        go stale rather than being swept out: planning happens at every decision)."""
        name = agent.name
        version = self._plan[name] = self._plan.get(name, 0) + 1
        ff, by_edge = self.fftime, self._by_edge
        t, last = now, now + self.horizon
        for prev, e in zip(route, route[1:]):
            t += ff[prev]
            if t > last:
                break
            planned = by_edge.get(e)
            if planned is None:
                by_edge[e] = {name: (t, version)}
            else:
                planned[name] = (t, version)

    def forget(self, agent) -> None:
        self._plan[agent.name] = -1  # arrived: none of its entries counts any more

    def count(self, edge: int, now: float, agent) -> int:
        """Other agents expected to enter `edge` within the horizon from `now`."""
        planned = self._by_edge.get(edge)
        if not planned:
            return 0
        lo, hi, me, current = now - self.SLACK_S, now + self.horizon, agent.name, self._plan
        n, gone = 0, []
        for name, (t, v) in planned.items():
            if current[name] != v or t < lo:  # re-planned, arrived, or passed: it never counts again here
                gone.append(name)
            elif t <= hi and name != me:
                n += 1
        for name in gone:
            del planned[name]
        return n
