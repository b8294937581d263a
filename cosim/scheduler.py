"""When to look at which agent next: the event-driven decision scheduler of the routing environment.

The environment must ask an agent at every fork of its route, but reading a vehicle's position from
SUMO costs a call per vehicle, and most vehicles are far from their next fork most of the time. So
Python does no per-vehicle work per simulation step: after each decision (or departure) the scheduler
knows the agent's route, hence its next decision edge and the earliest step at which the vehicle can
physically be there, and it looks at the vehicle only from then on. This module holds that planning,
the heap of wake-up times, the red-light waits and the per-agent run-time state; the environment
(``cosim.env``) keeps the SUMO loop, the PettingZoo API, observations, rewards and metrics, and hands
the scheduler the few things it needs (the kernel's read-only queries, the decision edges per
destination, the routes from an edge, and a way to give SUMO a route).

The trigger stretch. A decision is due once the agent stands anywhere on a short *trigger stretch*
ending at its next decision edge W (at least TRIGGER_S seconds of free-flow driving), not only on W
itself: OSM nets have edges of a few decimetres that a vehicle crosses inside one 1-s step, and a
decision there would otherwise be skipped. Deciding on the stretch is the same decision (same
candidates, continuations of W); only the observation is taken up to a couple of seconds earlier.
Until the agent can physically have reached the stretch (free-flow distance at its own top speed and
acceleration), it is not looked at at all.

This code runs in the environment's hottest loops: the agent state has slots, and the loops cache
attributes in local variables and avoid calls that the interpreter would pay for at every look.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from math import ceil, sqrt

from cosim.kernel import AGENT_ACCEL
from scenarios import Trip

WAITING, RUNNING, DONE = 0, 1, 2  # AgentState.status: not yet departed, driving, arrived
TRIGGER_S = 3.0  # free-flow seconds of road before a decision edge on which the decision is taken
RED_LOOKAHEAD = 10  # steps: a standing agent this close to its trigger stretch asks whether its light is red


def steps_to_cover(dist: float, v: float, vmax: float, accel: float = AGENT_ACCEL) -> int:
    """Fewest 1-s steps in which a vehicle at speed v can cover dist metres: SUMO's Euler update adds at
    most `accel` to the speed per step, then moves by the new speed, never above vmax. (Called for
    every look at a vehicle near a fork: written for the interpreter, no min/max calls.)"""
    if dist <= 0.0:
        return 0
    if v >= vmax:
        return ceil(dist / vmax)
    n1 = ceil((vmax - v) / accel)  # the step in which top speed is reached
    m = n1 - 1  # steps of free acceleration: distance m*v + accel*m*(m+1)/2
    dm = m * v + accel * m * n1 / 2.0
    if dist <= dm:
        h = v + accel / 2.0
        steps = ceil((sqrt(h * h + 2.0 * accel * dist) - h) / accel - 1e-9)
        return steps if steps > 1 else 1
    d1 = dm + vmax
    if dist <= d1:
        return n1
    return n1 + ceil((dist - d1) / vmax - 1e-9)


@dataclass(eq=False, slots=True)
class AgentState:
    """Run-time state of one controlled vehicle (Python touches it only at its own events; slots: its
    fields are read in the env's hottest loops). Edges are graph indices; "route index" means a
    position in `route`."""

    name: str  # the vehicle's (and agent's) id
    trip: Trip
    origin: int  # first and last edge of its trip
    dest: int
    status: int = WAITING  # WAITING, RUNNING or DONE
    depart_time: float = -1.0  # s; -1 before it departs
    last_decision_time: float = -1.0  # s; -1 before its first decision (its reward is due from then)
    last_edge: int = -1  # the last edge it was seen on
    route: tuple[int, ...] = ()  # planned edges, starting at the current one: SUMO's route for the vehicle
    next_decision_edge: int = -1  # the next edge on the route at whose end it must choose; -1 = none left
    next_decision_index: int = -1  # route index of next_decision_edge
    trigger_start: int = 0  # route index where the trigger stretch of next_decision_edge begins
    undecided_from: int = 0  # route index from which the route's edges are still undecided (free-flow plan)
    metres_to_trigger_after_current: float = 0.0  # from the end of route[0] to the start of the stretch
    top_speed_ahead: float = 0.0  # m/s: the fastest it can drive on the way to the stretch
    pos: float = 0.0  # metres along route[0] when last seen
    speed: float = 0.0  # m/s when last seen
    crossing_junction: bool = False  # last seen inside the junction at the end of route[0] (past its stop line)
    decision_edge: int = -1  # the edge whose continuations its current (or last) decision chooses among
    plan_version: int = 0  # bumped at every new plan: heap entries with an older version are stale
    speed_factor: float = 1.0  # its vType's speed factor (how far above the limit it drives)
    teleports: int = 0  # SUMO teleported it this many times this episode
    teleports_since_reward: int = 0  # teleports not yet charged in a reward
    decisions: int = 0  # actions it took this episode
    candidates: tuple[int, ...] = ()  # the edges behind the actions of its current decision (index = action)
    trace: list[tuple[float, int]] = field(default_factory=list)  # (time, edge) at every edge seen
    arrival_time: float = -1.0  # s; -1 until it arrives
    clock_mark: float = 0.0  # the env's team clock at its last decision (team reward)
    arrival_clock: float = 0.0  # the team clock when it arrived


class DecisionScheduler:
    """Plans, for every running agent, the earliest step at which it can be at its next fork, and looks
    at it (reads its position from the kernel) only from then on. Agents found on their trigger stretch
    are appended to `ready`, with their route trimmed to start at the edge they stand on; the env asks
    them and clears the list.

    `decision_edges(dest)` gives, per edge, whether an agent bound for dest must decide at its end;
    `path(src, dest)` the route from an edge (the env's continuation: live or free-flow); `set_route(agent, route)` gives SUMO a route and
    says whether SUMO took it (used for vehicles teleported off their route)."""

    def __init__(
        self,
        kernel,
        graph,
        decision_edges: Callable[[int], list[bool]],
        path: Callable[[int, int], tuple[int, ...]],
        set_route: Callable[[AgentState, tuple[int, ...]], bool],
    ) -> None:
        self.kernel = kernel
        self._decision_edges = decision_edges
        self._path = path
        self._set_route = set_route
        self._index, self._into, self._signals = graph.index, graph.into, graph.signals
        # plain lists: the loops read single elements, where numpy's scalar indexing is slow
        self._length, self._speed, self._fftime = graph.length.tolist(), graph.speed.tolist(), graph.fftime.tolist()
        self._ask_lights = kernel.in_process  # over TraCI the two extra queries cost more than they save
        self._seq = itertools.count()  # heap tie-break: equal times pop in push order
        self.reset()

    def reset(self) -> None:
        """A new episode: nothing planned, nothing due. (The env caches `heap`, `due` and `ready` in
        local variables for the duration of a step: they are only ever changed in place, except here.)"""
        self.heap: list[tuple[float, int, int, AgentState]] = []  # (wake-up time, seq, plan_version, agent)
        self.due: dict[AgentState, None] = {}  # agents to look at now; insertion-ordered: runs are reproducible
        self.ready: list[AgentState] = []  # agents that must decide now
        self.missed = 0  # decisions passed before the agent could be asked (it was already in the junction)

    # ------------------------------------------------------------------ planning
    def watch(self, a: AgentState, route: tuple[int, ...], now: float, start: int = 0) -> None:
        """Plan the watch for a route that starts at the agent's current edge; the next decision edge is
        searched from route[start] on (past the edge just decided)."""
        a.route = route
        a.undecided_from = start
        a.plan_version += 1
        isdec = self._decision_edges(a.dest)
        n, j = len(route), start
        while j < n and not isdec[route[j]]:
            j += 1
        if j == n:
            a.next_decision_edge = a.next_decision_index = -1
            self.due.pop(a, None)
            return
        ff = self._fftime
        i, acc = j, ff[route[j]]
        while i > 0 and acc < TRIGGER_S:
            i -= 1
            acc += ff[route[i]]
        a.next_decision_edge, a.next_decision_index, a.trigger_start = route[j], j, i
        if i == 0:
            self.due[a] = None
        else:
            a.metres_to_trigger_after_current = sum(map(self._length.__getitem__, route[1:i]))
            a.top_speed_ahead = max(map(self._speed.__getitem__, route[:i])) * max(a.speed_factor, 1.0)
            self.schedule(a, now)

    def schedule(self, a: AgentState, now: float) -> None:
        """Look at the agent again no earlier than it can reach its trigger stretch, from where it was
        last seen (a.pos, a.speed on route[0]). A vehicle standing in front of a red light that it
        must pass first cannot start before the light switches (SUMO's cars do not run red lights from
        a standstill): queues at red lights are then looked at once per switch, not every step."""
        dist = self._length[a.route[0]] - a.pos + a.metres_to_trigger_after_current
        steps = steps_to_cover(dist, a.speed, a.top_speed_ahead)
        at = now + steps - 1
        if a.speed < 0.1 and not a.crossing_junction and steps <= RED_LOOKAHEAD and self._ask_lights:
            sig = self._signals.get((a.route[0], a.route[1]))
            if sig is not None:
                switch = self.kernel.red_until(*sig)
                if switch is not None:
                    # the light may already act in the step that ends at `switch`: one step to spare
                    at = max(at, switch + steps - 2)
        if at <= now + 1:
            self.due[a] = None
        else:
            self.due.pop(a, None)
            heappush(self.heap, (at, next(self._seq), a.plan_version, a))

    def replan(self, a: AgentState, route: tuple[int, ...], now: float, start: int = 0) -> None:
        """Watch from route[start] on; if that is the current edge and a decision edge, decide now."""
        self.watch(a, route, now, start=start)
        if a.next_decision_index == 0:
            self.due.pop(a, None)
            self.ready.append(a)

    def _at_fork(self, a: AgentState, k: int) -> None:
        """The agent, standing on route[k], must choose the continuation of its next decision edge."""
        if k:
            a.route = a.route[k:]
            a.next_decision_index -= k
            a.undecided_from = max(a.undecided_from - k, 0)
        self.ready.append(a)

    # ------------------------------------------------------------------ events
    def teleported(self, a: AgentState) -> None:
        """SUMO moved the vehicle ahead: where it is now says nothing about the plan, look again."""
        if a.next_decision_edge >= 0:
            self.due[a] = None

    def arrived(self, a: AgentState) -> None:
        self.due.pop(a, None)

    # ------------------------------------------------------------------ looking
    def look(self, now: float) -> None:
        """Called after a simulation step in which some agent is due or some wake-up time has come
        (the env checks that before calling): read where the due agents are, and either find them at
        their fork (-> `ready`), plan again from where they got to, or wait on."""
        heap, due = self.heap, self.due
        while heap and heap[0][0] <= now:
            _, _, ver, a = heappop(heap)
            if ver == a.plan_version and a.status == RUNNING:
                due[a] = None
        if not due:
            return
        agents = [a for a in due if a.status == RUNNING]
        index, into = self._index, self._into
        for a, (road, pos, speed) in zip(agents, self.kernel.positions([a.name for a in agents])):
            e = index.get(road, -1)
            entering = 0
            if e >= 0:
                if e == a.route[0]:
                    k = 0
                else:
                    try:
                        k = a.route.index(e)
                    except ValueError:  # off the planned route (teleport): plan again from here
                        route = self._path(e, a.dest)
                        if self._set_route(a, route):
                            a.last_edge = e
                            a.trace.append((now, e))
                            self.replan(a, route, now)
                        continue  # refused: look again next step
            else:
                # crossing a junction into route[k + 1]: SUMO still counts the vehicle on route[k], and
                # it stands at (beyond) that edge's end; the junction into the trigger stretch already
                # belongs to the stretch
                try:
                    k = a.route.index(into[road], 1) - 1
                except (KeyError, ValueError):
                    continue  # not in the network, or not (yet) on the route: look again next step
                entering, pos = 1, self._length[a.route[k]]
            a.pos, a.speed, a.crossing_junction = pos, speed, bool(entering)
            if k:
                a.last_edge = a.route[k]
                a.trace.append((now, a.last_edge))
            if a.trigger_start - entering <= k <= a.next_decision_index - entering:
                due.pop(a, None)
                self._at_fork(a, k)
            elif k > 0:  # moved on: not yet at the stretch, or (rarely) crossed it within one step
                if entering and a.next_decision_index == k:
                    # already inside the junction at the end of the watched edge: its exit is fixed, so
                    # that decision is gone; asking now would give SUMO a route it must refuse
                    self.missed += 1
                self.replan(a, a.route[k:], now, start=max(a.undecided_from - k, entering))
            elif a.trigger_start > 0:  # same edge, stretch ahead: bound again from where the vehicle is
                a.plan_version += 1
                self.schedule(a, now)
