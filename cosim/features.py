"""Observation and reward functions, small and swappable (the sumo-rl way).

Register a new one with ``@register_observation("name")`` / ``@register_reward("name")`` and select it
with ``EnvConfig(observation="name", reward="name")``. Both are called only at decision points and at
arrivals, never per simulation step.

Observations are *relative* (detours, ratios, normalised times) and padded to a fixed number of actions,
so a policy trained on one city can be run on another. The default, ``live``, knows what a navigation
app knows and more; ``candidate`` is the observation before 2026-12 (also registered as ``default``, its
old name, so earlier runs' configurations reproduce); ``live_trip`` is ``live`` with every time relative
to the agent's own trip, for cities whose trips are much longer or shorter. An observation class that
sets ``live = True`` makes the env sample live travel times; ``intent = True`` makes it track the
agents' planned routes.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

TIME_SCALE = 1800.0  # seconds; normalises absolute times to ~[0, 1] for city-centre trips


@dataclass
class Decision:
    """What an observation function may look at for one agent at one decision point."""

    time: float
    horizon: float
    elapsed: float  # s since the agent departed
    remaining: float  # free-flow s from entering the current edge to the destination
    cand_time: Sequence[float]  # free-flow s to destination through each candidate, ascending
    cand_speed_ratio: Sequence[float]  # mean speed / limit on each candidate (1.0 when empty)
    cand_occupancy: Sequence[float]  # 0..1
    cand_agents: Sequence[int]  # controlled agents on each candidate
    # live travel times (`cosim.traffic`); equal to the free-flow ones where the env samples no traffic
    cand_live_time: Sequence[float] = ()  # live s to destination through each candidate
    live_remaining: float = 0.0  # live s from entering the current edge to the destination
    cand_intent: Sequence[int] = ()  # other agents whose current routes enter each candidate soon


class ObservationFn(Protocol):
    def size(self, max_actions: int) -> int: ...

    def __call__(self, d: Decision, max_actions: int) -> np.ndarray: ...


class RewardFn(Protocol):
    def __call__(self, seconds: float, teleports: int, timed_out: bool) -> float: ...


_OBSERVATIONS: dict[str, Callable[[], ObservationFn]] = {}
_REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register_observation(name: str):
    def deco(cls):
        _OBSERVATIONS[name] = cls
        return cls

    return deco


def register_reward(name: str):
    def deco(cls):
        _REWARDS[name] = cls
        return cls

    return deco


def make_observation(name: str) -> ObservationFn:
    from cosim.errors import CosimError

    if name not in _OBSERVATIONS:
        raise CosimError(f"unknown observation {name!r}; known: {', '.join(sorted(_OBSERVATIONS))}")
    return _OBSERVATIONS[name]()


def make_reward(name: str, **kwargs) -> RewardFn:
    from cosim.errors import CosimError

    if name not in _REWARDS:
        raise CosimError(f"unknown reward {name!r}; known: {', '.join(sorted(_REWARDS))}")
    return _REWARDS[name](**kwargs)


@register_observation("candidate")
@register_observation("default")
class CandidateObservation:
    """Per candidate edge: valid, detour vs the best candidate, free-flow time to go, speed ratio,
    occupancy, agents on it; then elapsed time, remaining free-flow time and time of day."""

    PER_CANDIDATE = 6
    GLOBAL = 3

    def size(self, max_actions: int) -> int:
        return self.PER_CANDIDATE * max_actions + self.GLOBAL

    def __call__(self, d: Decision, max_actions: int) -> np.ndarray:
        # plain Python on a handful of numbers beats numpy's per-call overhead here
        vals: list[float] = []
        times = d.cand_time
        best = max(times[0], 60.0) if times else 60.0
        t0 = times[0] if times else 0.0
        for t, s, o, n in zip(times, d.cand_speed_ratio, d.cand_occupancy, d.cand_agents):
            vals += (1.0, (t - t0) / best, t / TIME_SCALE, s, o, n / 10.0)
        vals += [0.0] * (self.PER_CANDIDATE * (max_actions - len(times)))
        vals += (d.elapsed / TIME_SCALE, d.remaining / TIME_SCALE, d.time / max(d.horizon, 1.0))
        # every feature is >= 0 by construction (times, ratios, counts; candidates ascend in time), so
        # clipping into [0, 5] needs only the upper bound. Clipped here and handed to numpy as a float32
        # buffer: np.array(list) and a clipping ufunc run ~12 k instructions of numpy code that is cold
        # at every decision (callgrind's cache model: ~500 k cache misses per episode at 100 agents)
        return np.frombuffer(array("f", [v if v < 5.0 else 5.0 for v in vals]), dtype=np.float32)


def _live_candidates(d: Decision, max_actions: int, per: int, live_scale: float | None, free_scale: float | None):
    """The per-candidate part of the live observations, padded: live and free-flow times to go are
    divided by the given scales (None: by the agent's own live / free-flow time still to go, at least
    the fastest candidate's and 60 s)."""
    vals: list[float] = []
    times, live = d.cand_time, d.cand_live_time or d.cand_time
    intent = d.cand_intent or (0,) * len(times)
    if times:
        f0, l0 = min(times), min(live)
        fb, lb = max(f0, 60.0), max(l0, 60.0)
        ls = live_scale or max(d.live_remaining or d.remaining, l0, 60.0)
        fs = free_scale or max(d.remaining, f0, 60.0)
    for t, lt, s, o, n, m in zip(times, live, d.cand_speed_ratio, d.cand_occupancy, d.cand_agents, intent):
        vals += (1.0, lt / ls, (lt - l0) / lb, t / fs, (t - f0) / fb, lt / max(t, 1.0) - 1.0, s, o, n / 10.0, m / 10.0)
    vals += [0.0] * (per * (max_actions - len(times)))
    return vals


def _clipped(vals: list[float]) -> np.ndarray:
    # every feature is >= 0 (the delay ratio can dip a hair below 0 where an edge runs faster than its
    # limit: clipped), and the upper bound keeps jams from dominating the input
    return np.frombuffer(array("f", [0.0 if v < 0.0 else (v if v < 5.0 else 5.0) for v in vals]), dtype=np.float32)


@register_observation("live")
class LiveObservation:
    """Per candidate edge: valid; live time to the destination through it, and its detour over the
    live-fastest candidate; its free-flow time and detour; the delay ratio live / free-flow; speed ratio
    and occupancy of the edge now; controlled agents on it; other agents that plan to enter it soon
    (intent). Then elapsed time, live and free-flow time still to go, and time of day. Relative and
    padded like `CandidateObservation`, so a policy still runs on another city."""

    PER_CANDIDATE = 10
    GLOBAL = 4
    live = True
    intent = True

    def size(self, max_actions: int) -> int:
        return self.PER_CANDIDATE * max_actions + self.GLOBAL

    def __call__(self, d: Decision, max_actions: int) -> np.ndarray:
        vals = _live_candidates(d, max_actions, self.PER_CANDIDATE, TIME_SCALE, TIME_SCALE)
        vals += (d.elapsed / TIME_SCALE, (d.live_remaining or d.remaining) / TIME_SCALE, d.remaining / TIME_SCALE,
                 d.time / max(d.horizon, 1.0))  # fmt: skip
        return _clipped(vals)


@register_observation("live_trip")
class TripRelativeObservation(LiveObservation):
    """`LiveObservation` with no absolute time in it, so that its scale travels to a city whose trips
    are longer or shorter: per candidate valid; live time to the destination through it ÷ the agent's
    live time still to go, and its detour over the live-fastest candidate; the same two with free-flow
    times; the delay ratio; speed ratio and occupancy; controlled agents on it and intent (counts, as in
    `live`, capped). Then how much of the trip is done (elapsed ÷ (elapsed + live time to go)), the
    whole remaining trip's delay (live ÷ free-flow time to go − 1) and time of day (÷ horizon)."""

    GLOBAL = 3

    def __call__(self, d: Decision, max_actions: int) -> np.ndarray:
        vals = _live_candidates(d, max_actions, self.PER_CANDIDATE, None, None)
        live_rem = d.live_remaining or d.remaining
        vals += (d.elapsed / max(d.elapsed + live_rem, 1.0), live_rem / max(d.remaining, 1.0) - 1.0,
                 d.time / max(d.horizon, 1.0))  # fmt: skip
        return _clipped(vals)


@register_reward("travel_time")
class TravelTimeReward:
    """Minus the minutes spent since the last decision, minus penalties for teleports and timeouts."""

    def __init__(self, scale: float = 60.0, teleport_penalty: float = 5.0, timeout_penalty: float = 10.0):
        self.scale = scale
        self.teleport_penalty = teleport_penalty
        self.timeout_penalty = timeout_penalty

    def __call__(self, seconds: float, teleports: int, timed_out: bool) -> float:
        r = -seconds / self.scale - self.teleport_penalty * teleports
        if timed_out:
            r -= self.timeout_penalty
        return float(r)


@register_reward("team")
class TeamReward(TravelTimeReward):
    """The whole network's travel time, shared among the agents driving: between two of its decisions an
    agent pays, for every simulated second, the number of vehicles in the network (background included)
    divided by the number of agents being paid at that second (from their first decision to their
    arrival). Summed over the agents, the rewards are minus the vehicle-seconds of every vehicle while
    agents drive: the all-vehicles total travel time, so that a learner gains nothing by pushing delay
    onto others. ``env.team_weight`` < 1 mixes in the agent's own time: (1 - w) x own + w x team
    (this project's formalisation of a team objective)."""

    team = True
