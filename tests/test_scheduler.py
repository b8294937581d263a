"""The decision scheduler without SUMO: a hand-made road, a fake kernel that says where vehicles are and
which lights are red. (The env's tests check the same scheduler end to end on real cities.)"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from cosim.kernel import AGENT_ACCEL
from cosim.scheduler import RUNNING, TRIGGER_S, AgentState, DecisionScheduler, steps_to_cover


def euler_steps(dist: float, v: float, vmax: float, accel: float = AGENT_ACCEL) -> int:
    """SUMO's Euler update, one step at a time: speed up by at most accel (never above vmax), then move."""
    x, n = 0.0, 0
    while x < dist:
        v = min(v + accel, vmax)
        x += v
        n += 1
    return n


def test_steps_to_cover_matches_sumos_euler_update():
    rng = random.Random(0)
    cases = [(0.0, 0.0, 13.9), (-1.0, 5.0, 13.9), (0.01, 0.0, 13.9), (2.6, 0.0, 13.9), (1000.0, 30.0, 13.9)]
    for _ in range(20000):
        vmax = rng.choice([5.0, 8.33, 13.89, 16.67, 27.78]) * rng.uniform(0.8, 1.2)
        v = rng.choice([0.0, rng.uniform(0.0, vmax), vmax, vmax + 3.0])
        cases.append((rng.uniform(0.0, 400.0), v, vmax))
    for dist, v, vmax in cases:
        assert steps_to_cover(dist, v, vmax) == euler_steps(dist, v, vmax), (dist, v, vmax)


# A hand-made road e0 .. e7 (10 m/s everywhere) with short edges before the fork at the end of e5:
# e2 .. e5 are the short stretch that a car crosses in about 4 s, e4 is a sub-metre edge.
LENGTH = [100.0, 200.0, 25.0, 4.0, 0.3, 8.0, 100.0, 100.0]
FORK, DEST = 5, 7
ROUTE = tuple(range(8))


class FakeKernel:
    """Answers the scheduler's two queries; records what it was asked."""

    in_process = True

    def __init__(self):
        self.where: dict[str, tuple[str, float, float]] = {}
        self.red: float | None = None
        self.looked: list[list[str]] = []
        self.lights_asked: list[tuple] = []

    def positions(self, names):
        self.looked.append(list(names))
        return [self.where[n] for n in names]

    def red_until(self, tls, links):
        self.lights_asked.append((tls, links))
        return self.red


def make(signals=None, set_route=lambda a, route: True):
    length = np.array(LENGTH)
    speed = np.full(len(LENGTH), 10.0)
    edges = [f"e{i}" for i in range(len(LENGTH))]
    graph = SimpleNamespace(
        edges=edges,
        index={e: i for i, e in enumerate(edges)},
        # junction-internal lanes, named by the edge they leave, lead into the next edge
        into={f":j{i}_0": i + 1 for i in range(len(LENGTH) - 1)},
        signals=signals or {},
        length=length,
        speed=speed,
        fftime=length / speed,
    )
    isdec = [i == FORK for i in range(len(LENGTH))]
    kernel = FakeKernel()
    sched = DecisionScheduler(
        kernel, graph, lambda dest: isdec, lambda src, dest: tuple(range(src, dest + 1)), set_route
    )
    agent = AgentState(name="a", trip=None, origin=0, dest=DEST, status=RUNNING)
    return sched, kernel, agent


def test_the_trigger_stretch_is_the_shortest_one_of_at_least_trigger_s_before_the_fork():
    sched, _, a = make()
    sched.watch(a, ROUTE, now=0.0)
    assert (a.next_decision_edge, a.next_decision_index) == (FORK, FORK)
    ff = [x / 10.0 for x in LENGTH]
    i = a.trigger_start
    assert sum(ff[i : FORK + 1]) >= TRIGGER_S > sum(ff[i + 1 : FORK + 1])
    assert i == 2
    # it is looked at first when it can have driven to the stretch from a standstill at e0's start
    assert a.metres_to_trigger_after_current == LENGTH[1] and a.top_speed_ahead == 10.0
    assert sched.heap[0][0] == 0.0 + steps_to_cover(300.0, 0.0, 10.0) - 1 and not sched.due


def test_a_faster_vehicle_type_is_bounded_by_its_own_top_speed():
    sched, _, a = make()
    a.speed_factor = 1.2
    sched.watch(a, ROUTE, now=0.0)
    assert a.top_speed_ahead == pytest.approx(12.0)
    assert sched.heap[0][0] == steps_to_cover(300.0, 0.0, 12.0) - 1


def test_wake_up_on_the_way_plans_again_from_where_the_vehicle_is():
    sched, kernel, a = make()
    sched.watch(a, ROUTE, now=0.0)
    wake = sched.heap[0][0]
    sched.look(wake - 1)
    assert kernel.looked == []  # not before it can be there
    kernel.where["a"] = ("e1", 150.0, 10.0)
    sched.look(wake)
    assert kernel.looked == [["a"]] and not sched.ready
    assert a.route == ROUTE[1:] and a.last_edge == 1 and a.trace == [(wake, 1)]
    assert (a.trigger_start, a.next_decision_index) == (1, FORK - 1)
    # 50 m left on e1 at top speed
    assert sched.heap[0][0] == wake + steps_to_cover(50.0, 10.0, 10.0) - 1 and not sched.due


def test_stale_heap_entries_are_ignored_after_a_replan():
    sched, kernel, a = make()
    sched.watch(a, ROUTE, now=0.0)
    first = sched.heap[0][0]
    sched.watch(a, ROUTE, now=20.0)  # a new plan (say, a new route): the old wake-up is stale
    assert len(sched.heap) == 2
    sched.look(first)
    assert kernel.looked == [] and not sched.due and len(sched.heap) == 1
    sched.watch(a, ROUTE, now=30.0, start=FORK + 1)  # no fork left: nothing planned at all
    assert a.next_decision_edge == -1
    sched.look(1000.0)
    assert kernel.looked == [] and not sched.heap and not sched.due


def test_on_the_stretch_the_agent_must_decide_with_its_route_from_where_it_stands():
    sched, kernel, a = make()
    sched.watch(a, ROUTE, now=0.0)
    kernel.where["a"] = ("e3", 1.0, 8.0)
    sched.look(sched.heap[0][0])
    assert sched.ready == [a] and not sched.due
    assert a.route == ROUTE[3:] and a.next_decision_index == FORK - 3 and a.next_decision_edge == FORK


def test_a_vehicle_inside_the_junction_into_the_stretch_is_on_the_stretch():
    sched, kernel, a = make()
    sched.watch(a, ROUTE, now=0.0)
    kernel.where["a"] = (":j1_0", 2.0, 9.0)  # crossing from e1 into e2, where the stretch begins
    sched.look(sched.heap[0][0])
    assert sched.ready == [a] and a.route == ROUTE[1:] and a.crossing_junction
    assert a.pos == LENGTH[1]  # placed at the end of the edge SUMO still counts it on


def test_a_vehicle_already_inside_the_forks_junction_is_a_missed_decision():
    sched, kernel, a = make()
    sched.watch(a, ROUTE, now=0.0)
    kernel.where["a"] = (":j5_0", 1.0, 10.0)  # past the fork's stop line: its exit is fixed
    sched.look(sched.heap[0][0])
    assert sched.missed == 1 and not sched.ready and a.next_decision_edge == -1


def test_departing_on_a_decision_edge_decides_at_once():
    sched, _, a = make()
    sched.replan(a, ROUTE[FORK:], now=0.0)
    assert sched.ready == [a] and not sched.due and not sched.heap


def test_a_red_light_delays_the_wake_up_until_it_switches():
    signals = {(1, 2): ("tls", (0, 1))}
    sched, kernel, a = make(signals)
    a.pos, a.speed = LENGTH[1] - 5.0, 0.0  # standing 5 m before the light, the stretch just behind it
    route = ROUTE[1:]
    steps = steps_to_cover(5.0, 0.0, 10.0)
    sched.watch(a, route, now=20.0)  # green: it can be there next step
    assert kernel.lights_asked == [("tls", (0, 1))] and a in sched.due and not sched.heap
    kernel.red = 40.0
    sched.watch(a, route, now=20.0)
    assert not sched.due and sched.heap[0][0] == 40.0 + steps - 2
    kernel.lights_asked.clear()
    a.crossing_junction = True  # already past the stop line: the light does not hold it
    sched.watch(a, route, now=20.0)
    assert kernel.lights_asked == [] and a in sched.due


def test_a_vehicle_teleported_off_its_route_gets_a_new_one():
    refused = []
    sched, kernel, a = make(set_route=lambda agent, route: not refused)
    sched.watch(a, ROUTE[:3] + (FORK, 6, 7), now=0.0)  # a route that skips e3 and e4
    sched.teleported(a)
    kernel.where["a"] = ("e4", 0.1, 5.0)
    refused.append(True)
    sched.look(1.0)
    assert a in sched.due and not sched.ready  # SUMO kept its route: look again next step
    refused.clear()
    sched.look(2.0)
    assert a.route == (4, 5, 6, 7) and a.trace == [(2.0, 4)]
    assert a in sched.due and not sched.ready  # on the new route's trigger stretch: looked at next step
    sched.look(3.0)
    assert sched.ready == [a] and not sched.due
    sched.replan(a, (4, 5, 6, 7), now=3.0)
    sched.arrived(a)
    assert not sched.due
