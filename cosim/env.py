"""The multi-agent vehicle-routing environment (PettingZoo ParallelEnv) on a real city in SUMO.

Agents are controlled vehicles with fixed trips that persist across episodes (day-to-day route choice).
An agent decides when its vehicle enters an edge whose end junction offers more than one continuation
from which its destination is still reachable; the action picks the next edge, and the vehicle is then
routed along it and, from there, the fastest path under live travel times (``env.continuation="live"``,
`cosim.traffic`: what a navigation app would give it) or the free-flow shortest path (``"free_flow"``).
Candidates are sorted by the same times, so action 0 is the live-fastest (or free-flow shortest) choice.

An agent is live (in ``agents`` and in every dict a step returns) from its vehicle's departure until
its arrival: a city's agents are spread over hours, so only a few dozen drive at a time and the dicts
stay that small (PettingZoo lets agents join; with every unfinished agent kept, 1 000 agents departing
over four hours made dicts of ~500 entries, built and freed at every step). PettingZoo's parallel
contract wants an action from every live agent at every step, but only a few stand at a junction at a
time. Agents that are not at a
decision point get a constant observation with an all-zero ``action_mask`` and their action is
ignored; learners act on agents whose mask has a 1 (``infos[a]["deciding"]`` says the same). That
constant observation and every ``action_mask`` are shared read-only arrays: copy one before writing.

Stepping is event-driven: after applying the actions SUMO runs on until some agent must decide, every
agent has arrived, or the horizon is reached; an agent that arrives in between is reported (terminated,
with the reward up to its arrival) by the next step that returns, so ``agents`` is empty only when the
episode is over. Per simulation step Python reads only the step's events (from the kernel);
an agent is looked at only after the earliest time it can physically have reached its next decision
edge (route length over its maximum speed), so the work in between is independent of the number of
agents. When to look at which agent is the business of ``cosim.scheduler``; this module keeps the SUMO
loop, the PettingZoo API, observations, rewards and metrics.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from cosim.config import EnvConfig
from cosim.errors import CommandRejected, CosimError, SumoFault
from cosim.features import Decision, make_observation, make_reward
from cosim.kernel import SumoKernel
from cosim.scheduler import DONE, RUNNING, AgentState, DecisionScheduler
from cosim.traffic import Intent, LiveTraffic
from scenarios import Scenario

log = logging.getLogger(__name__)


# SUMO's own rerouting-device adaptation (steps, interval s): SUMO-wide, so the only setting under which
# a `sumo-rerouting` run routes background trips at insertion exactly as every other method's runs do
SUMO_ADAPTATION = (180, 1.0)


class Choice(NamedTuple):
    """A decision edge's candidates for one destination (cached: the same few hundred recur)."""

    edges: tuple[int, ...]  # continuations that still reach the destination, fastest first
    times: tuple[float, ...]  # free-flow s from the decision edge's end to the destination through each
    ids: tuple[str, ...]  # their SUMO edge ids
    remaining: float  # free-flow s from entering the decision edge to the destination
    live_times: tuple[float, ...]  # live s to the destination through each (= times without live traffic)
    live_remaining: float


class VehicleRoutingEnv(ParallelEnv):
    metadata = {"name": "cosim_vehicle_routing_v0", "render_modes": ["human"], "is_parallelizable": True}

    def __init__(self, scenario: Scenario, config: EnvConfig | None = None, **overrides):
        cfg = config or EnvConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise CosimError(f"unknown environment option {k!r}")
            setattr(cfg, k, v)
        self.config = cfg
        if cfg.control not in ("policy", "sumo-rerouting"):
            raise CosimError(f"unknown control {cfg.control!r} (policy or sumo-rerouting)")
        self._rerouting = cfg.control == "sumo-rerouting"
        self._device = (
            (cfg.rerouting_period, cfg.rerouting_adaptation_steps, cfg.rerouting_adaptation_interval)
            if self._rerouting
            else None
        )
        self.scenario = scenario
        self.graph = scenario.graph if cfg.junction_times else scenario.graph.edges_only()
        self.trips = scenario.trips(cfg.n_agents)
        if self._rerouting and self._device[1:] != SUMO_ADAPTATION:
            # SUMO's adaptation settings are global: they would also change how it routes these vehicles
            unrouted = scenario.routed_at_insertion + sum(
                1 for _, xml in scenario.passive_vehicles(self.trips) if xml.lstrip().startswith("<trip")
            )
            if unrouted:
                raise CosimError(
                    f"env.rerouting_adaptation_steps/interval other than SUMO's defaults ({SUMO_ADAPTATION[0]}, "
                    f"{SUMO_ADAPTATION[1]:g}) would change how SUMO routes {unrouted} background vehicles of "
                    f"{scenario.name!r} as they enter; rebuild it with `cosim scenario build ... "
                    "--background-routing fixed`, or keep the defaults"
                )
        self.horizon = float(cfg.horizon if cfg.horizon is not None else scenario.horizon)
        # imported scenarios keep their clock (cologne8 runs 07:00-08:00): signal programs and departures
        # are written against it, so the episode runs from the scenario's begin for `horizon` seconds
        self.begin = scenario.begin
        if self.graph.max_degree > cfg.max_actions:
            raise CosimError(
                f"scenario {scenario.name!r} has junctions with {self.graph.max_degree} continuations, "
                f"more than max_actions={cfg.max_actions}; raise max_actions"
            )
        g = self.graph
        self._trip_idx = []
        for t in self.trips:
            if t.origin not in g.index or t.destination not in g.index:
                raise CosimError(f"trip {t.id} uses an edge that is not in the net")
            o, d = g.index[t.origin], g.index[t.destination]
            if not g.path(o, d):
                raise CosimError(f"trip {t.id} cannot be routed from {t.origin} to {t.destination}")
            self._trip_idx.append((o, d))

        self.possible_agents = [t.id for t in self.trips]
        self.agents: list[str] = []
        self.obs_fn = make_observation(cfg.observation)
        self.live = cfg.continuation == "live"
        # live times are sampled when routes or observations use them (free-flow runs pay nothing)
        self.traffic = (
            LiveTraffic(g, round(cfg.traffic_window_s / cfg.traffic_update_s))
            if self.live or getattr(self.obs_fn, "live", False)
            else None
        )
        self.intent = Intent(g, cfg.intent_horizon_s) if getattr(self.obs_fn, "intent", False) else None
        self.reward_fn = make_reward(
            cfg.reward,
            scale=cfg.reward_scale,
            teleport_penalty=cfg.teleport_penalty,
            timeout_penalty=cfg.timeout_penalty,
        )
        self.team = getattr(self.reward_fn, "team", False)  # the env keeps the team clock for it
        k = cfg.max_actions
        self.obs_size = self.obs_fn.size(k)
        self._obs_space = spaces.Dict(
            {
                "observation": spaces.Box(0.0, 5.0, shape=(self.obs_size,), dtype=np.float32),
                "action_mask": spaces.Box(0, 1, shape=(k,), dtype=np.int8),
            }
        )
        self._act_space = spaces.Discrete(k)
        idle_obs = np.zeros(self.obs_size, dtype=np.float32)
        idle_mask = np.zeros(k, dtype=np.int8)
        idle_obs.flags.writeable = False
        idle_mask.flags.writeable = False
        self._idle_obs = {"observation": idle_obs, "action_mask": idle_mask}
        self._masks = []  # read-only masks by number of candidates, shared like the idle observation
        for n in range(k + 1):
            m = np.zeros(k, dtype=np.int8)
            m[:n] = 1
            m.flags.writeable = False
            self._masks.append(m)
        self._idle_info = {"deciding": False}
        self.state_size = len(g.edges) * (2 if self.traffic is not None else 1) + 3 * len(self.trips)

        self.kernel = SumoKernel(scenario, backend=cfg.backend, gui=cfg.gui, label=cfg.label, sumo_args=cfg.sumo_args)
        # initial routes = free-flow shortest paths (what the `shortest` policy keeps choosing)
        self._initial_routes = [[g.edges[i] for i in g.path(o, d)] for o, d in self._trip_idx]
        self._rng = np.random.default_rng()
        self._decision_cache: dict[tuple[int, int], Choice] = {}  # free-flow choices, for good
        self._live_cache: dict[tuple[int, int], Choice] = {}  # with live times, until the next sample
        self._cache_epoch = 0
        self._is_decision: dict[int, list[bool]] = {}
        self._paths: dict[tuple[int, int], tuple[int, ...]] = {}
        self._speed = g.speed.tolist()  # a plain list: observations read single elements
        for _, d in self._trip_idx:  # shortest paths and decision edges per destination, up front
            self.decision_edges(d)
        self._scheduler = DecisionScheduler(self.kernel, g, self.decision_edges, self.path, self._set_route)
        self.faults = 0
        self.last_fault: str | None = None  # what SUMO said when it last failed, and when
        self.episode = 0
        self.metrics: dict = {}

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent):  # one space for every agent: nothing to cache
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    # ------------------------------------------------------------------ graph helpers (cached per dest)
    @property
    def initial_routes(self) -> list[list[str]]:
        """Every agent's route (edge ids, in `trips` order) as SUMO starts it each episode: the free-flow
        shortest path, which the `shortest` policy keeps choosing. Read-only: the env starts SUMO with it."""
        return self._initial_routes

    def decision_edges(self, dest: int) -> list[bool]:
        """By edge index: whether an agent bound for edge `dest` must decide at that edge's end (more
        than one continuation still reaches dest). Cached per destination; do not modify."""
        m = self._is_decision.get(dest)
        if m is None:
            reach = np.isfinite(self.graph.time_to(dest))
            dec = self.graph.out_count(reach) > 1
            dec[dest] = False
            m = self._is_decision[dest] = dec.tolist()
        return m

    def free_flow_path(self, src: int, dest: int) -> tuple[int, ...]:
        """The free-flow shortest path (edge indices, src and dest included), cached: every agent re-plans
        along the same few hundred."""
        key = (src, dest)
        p = self._paths.get(key)
        if p is None:
            p = self._paths[key] = tuple(self.graph.path(src, dest))
        return p

    def path(self, src: int, dest: int) -> tuple[int, ...]:
        """The route from `src` on, as the continuation setting makes it: live-fastest or free-flow."""
        if self.live:
            return self.traffic.path(src, dest) or self.free_flow_path(src, dest)
        return self.free_flow_path(src, dest)

    def choice_at(self, edge: int, dest: int) -> Choice:
        """What an agent bound for `dest` chooses among at the end of decision edge `edge` (its actions,
        in order). Cached: the same few hundred recur (with live traffic: until its next sample)."""
        key = (edge, dest)
        static = self._decision_cache.get(key)
        if static is None:  # the free-flow part never changes
            g = self.graph
            t = g.time_to(dest)
            cross = {f: g.junction.get((edge, f), 0.0) for f in g.succ[edge]}  # the junction into f
            cands = sorted(g.candidates(edge, dest), key=lambda f: (cross[f] + t[f], g.edges[f]))
            times = tuple(float(cross[f] + t[f]) for f in cands)
            static = Choice(
                tuple(cands), times, tuple(g.edges[f] for f in cands), float(t[edge]), times, float(t[edge])
            )
            self._decision_cache[key] = static
        traffic = self.traffic
        if traffic is None:
            return static
        if traffic.epoch != self._cache_epoch:
            self._live_cache.clear()
            self._cache_epoch = traffic.epoch
        hit = self._live_cache.get(key)
        if hit is None:
            lt = traffic.time_to(dest)
            cross = self.graph.junction
            live = [float(lt[f]) + cross.get((edge, f), 0.0) for f in static.edges]
            if self.live and any(b < a for a, b in zip(live, live[1:])):  # reorder by live time
                order = sorted(range(len(live)), key=lambda i: (live[i], static.times[i], static.ids[i]))
                hit = Choice(tuple(static.edges[i] for i in order), tuple(static.times[i] for i in order),
                             tuple(static.ids[i] for i in order), static.remaining, tuple(live[i] for i in order),
                             float(lt[edge]))  # fmt: skip
            else:
                hit = static._replace(live_times=tuple(live), live_remaining=float(lt[edge]))
            self._live_cache[key] = hit
        return hit

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, options: dict | None = None):
        """A new episode with SUMO seed `seed`. ``options={"time_limit": s}`` cuts it after `s` simulated
        seconds (a training budget, not part of the task): agents still driving then are truncated without
        the timeout penalty, and their infos hold ``final_observation`` and ``final_action_mask``, what
        they would see at their next fork (or at the end of the edge they are on, when no fork is left),
        so that a learner can bootstrap their values. The horizon ends an episode as before."""
        limit = (options or {}).get("time_limit")
        if limit is not None and not (isinstance(limit, (int, float)) and limit > 0):
            raise CosimError(f"time_limit must be a number of seconds > 0, got {limit!r}")
        self._end = self.begin + (min(float(limit), self.horizon) if limit is not None else self.horizon)
        self._cut = limit is not None and float(limit) < self.horizon
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            sumo_seed = int(seed)
        else:
            sumo_seed = int(self._rng.integers(2**31 - 1))
        self.episode += 1
        self._sim_seed = sumo_seed
        self._state = [AgentState(name=t.id, trip=t, origin=o, dest=d) for t, (o, d) in zip(self.trips, self._trip_idx)]
        self._by_name = {a.name: a for a in self._state}
        self._scheduler.reset()
        if self.traffic is not None:
            self.traffic.reset()
            self._live_cache.clear()
            self._cache_epoch = 0
        if self.intent is not None:
            self.intent.reset()
        self._next_sample = self.begin + self.config.traffic_update_s
        self._team_clock = 0.0  # per agent being paid: the network's vehicle-seconds shared so far
        self._running_all = 0  # vehicles in the network (all of them)
        self._paid = 0  # agents from their first decision to their arrival
        self._finished: list[AgentState] = []
        self._teleports_all = 0
        self._arrived_all = 0
        self._decisions = 0
        self._rejected = 0  # commands SUMO refused (logged; the episode goes on)
        self.metrics = {}
        for attempt in (1, 2):
            try:
                self.kernel.start(
                    sumo_seed, self.trips, self._initial_routes, self.begin + self.horizon, rerouting=self._device
                )
                break
            except SumoFault:
                self.kernel.fault()
                self.faults += 1
                if attempt == 2:
                    raise
        self.time = self.begin
        self.agents = []  # agents join as their vehicles depart
        self._unfinished = len(self._state)
        obs, _, _, _, infos = self._advance()
        return obs, infos

    def step(self, actions: dict):
        if not self.agents:
            raise CosimError("step() called on a finished episode; call reset()")
        try:
            self._apply(actions)
        except SumoFault as exc:
            return self._fault(exc)
        return self._advance()

    # ------------------------------------------------------------------ actions
    def _apply(self, actions: dict) -> None:
        g = self.graph
        ready = self._scheduler.ready
        watch = self._scheduler.watch
        intent = self.intent
        for a in ready:
            if a.name not in actions:
                raise CosimError(f"agent {a.name} is at a decision point but got no action")
            act = actions[a.name]
            try:
                act = int(act)
            except (TypeError, ValueError):
                raise CosimError(f"action for {a.name} must be an integer, got {act!r}") from None
            if not 0 <= act < len(a.candidates):
                raise CosimError(
                    f"action {act} for {a.name} is outside its action mask "
                    f"(valid: 0..{len(a.candidates) - 1} at edge {g.edges[a.decision_edge]})"
                )
            # the vehicle keeps its planned edges up to the decision edge, then takes the chosen one;
            # SUMO is told only when that changes its route (a.route is always SUMO's route)
            j = a.next_decision_index + 1
            rest = self.path(a.candidates[act], a.dest)
            if a.route[j:] == rest:
                route = a.route
            else:
                route = a.route[:j] + rest
                if not self._set_route(a, route):
                    route = a.route  # SUMO kept the vehicle's route: so does the env
            a.decisions += 1
            watch(a, route, self.time, start=j)
            if intent is not None:
                intent.plan(a, route, self.time)
        ready.clear()

    def _set_route(self, a: AgentState, route: tuple[int, ...]) -> bool:
        """Give SUMO the agent's new route; False (logged, counted) when SUMO refuses it."""
        try:
            self.kernel.set_route(a.name, [self.graph.edges[i] for i in route])
            return True
        except CommandRejected as exc:
            self._rejected += 1
            log.warning("t=%.0f %s: %s (the vehicle keeps its route)", self.time, a.name, exc)
            return False

    # ------------------------------------------------------------------ simulation loop
    def _advance(self):
        k = self.kernel
        sched = self._scheduler
        # the scheduler changes these in place only (between episodes it makes new ones)
        heap, due, ready = sched.heap, sched.due, sched.ready
        live, finished = self.agents, self._finished  # changed in place until the next return
        end = self._end  # on the scenario's clock: the horizon, or the episode's time limit
        traffic, intent, edge_ids, team = self.traffic, self.intent, self.graph.edges, self.team
        try:
            while True:
                if self.time >= end:
                    return self._finish(truncated=True, cut=self._cut)
                ev = k.step()
                if team:
                    if self._paid:
                        self._team_clock += self._running_all * (ev.time - self.time) / self._paid
                    self._running_all += ev.n_departed_all - ev.n_arrived_all
                now = self.time = ev.time
                if traffic is not None and now >= self._next_sample:
                    traffic.sample(k.mean_speeds(edge_ids))
                    self._next_sample += self.config.traffic_update_s
                self._arrived_all += ev.n_arrived_all
                self._teleports_all += ev.n_teleported_all
                # SUMO may insert a vehicle at speed (its type's departSpeed, a free lane): where and how
                # fast it is bounds when it can reach its first decision, so read it, do not assume a start
                for name, (road, pos, speed) in zip(ev.departed, k.positions(ev.departed) if ev.departed else ()):
                    a = self._by_name[name]
                    live.append(name)
                    a.status = RUNNING
                    a.depart_time = now
                    a.pos, a.speed = (pos, speed) if road == self.graph.edges[a.origin] else (0.0, speed)
                    a.speed_factor = k.speed_factor(name)
                    a.last_edge = a.origin
                    a.trace.append((now, a.origin))
                    if not self._rerouting:
                        route = self.free_flow_path(a.origin, a.dest)  # SUMO's route at insertion
                        if self.live:  # the navigation app plans on live times at departure
                            planned = self.path(a.origin, a.dest)
                            if planned != route and self._set_route(a, planned):
                                route = planned
                        sched.replan(a, route, now)
                        if intent is not None:
                            intent.plan(a, route, now)
                for name in ev.teleported:
                    a = self._by_name[name]
                    a.teleports += 1
                    a.teleports_since_reward += 1
                    sched.teleported(a)
                for name in ev.arrived:
                    a = self._by_name[name]
                    a.status = DONE
                    a.arrival_time = now
                    a.arrival_clock = self._team_clock
                    if a.last_decision_time >= 0:
                        self._paid -= 1
                    a.trace.append((now, a.dest))
                    sched.arrived(a)
                    if intent is not None:
                        intent.forget(a)
                    finished.append(a)
                    self._unfinished -= 1
                # only look when some agent is due or some wake-up time has come
                if due or (heap and heap[0][0] <= now):
                    sched.look(now)
                if ready or (finished and not self._unfinished):  # without agents: on to the horizon
                    return self._emit()
        except SumoFault as exc:
            return self._fault(exc)

    def _observe(self, a: AgentState, c: Choice) -> np.ndarray:
        traffic = self.kernel.edge_traffic
        speed_ratio, occ, agents_on = [], [], []
        by_name = self._by_name
        for f, edge_id in zip(c.edges, c.ids):
            mean_speed, o, ids = traffic(edge_id)
            speed_ratio.append(1.0 if mean_speed < 0 else mean_speed / max(self._speed[f], 0.1))
            occ.append(o)
            agents_on.append(sum(1 for v in ids if v in by_name) if ids else 0)
        intent = self.intent
        d = Decision(
            cand_live_time=c.live_times,
            live_remaining=c.live_remaining,
            cand_intent=[intent.count(f, self.time, a) for f in c.edges] if intent is not None else [0] * len(c.edges),
            time=self.time - self.begin,
            horizon=self.horizon,
            elapsed=self.time - a.depart_time,
            remaining=c.remaining,
            cand_time=c.times,
            cand_speed_ratio=speed_ratio,
            cand_occupancy=occ,
            cand_agents=agents_on,
        )
        return self.obs_fn(d, self.config.max_actions)

    def _emit(self):
        live = self.agents
        obs, rew = dict.fromkeys(live, self._idle_obs), dict.fromkeys(live, 0.0)
        term = dict.fromkeys(live, False)
        trunc, infos = term.copy(), dict.fromkeys(live, self._idle_info)
        now = self.time
        edges = self.graph.edges
        ready = self._scheduler.ready
        if self.traffic is not None and len(ready) > 1:
            self.traffic.solve([a.dest for a in ready])
        for a in ready:
            # the scheduler found it on the trigger stretch of its next decision edge: ask about that one
            a.decision_edge = e = a.next_decision_edge
            c = self.choice_at(e, a.dest)
            a.candidates = c.edges
            obs[a.name] = {"observation": self._observe(a, c), "action_mask": self._masks[len(c.edges)]}
            rew[a.name] = self._cost(a, now, False, self._team_clock)
            if a.last_decision_time < 0:
                self._paid += 1
            a.last_decision_time = now
            a.clock_mark = self._team_clock
            infos[a.name] = {
                "deciding": True,
                "edge": edges[e],
                "at": edges[a.route[0]],
                "candidates": c.ids,
                "time": now,
            }
            self._decisions += 1
        if self._finished:
            for a in self._finished:
                rew[a.name] = self._cost(a, a.arrival_time, False, a.arrival_clock)
                term[a.name] = True
                infos[a.name] = self._final_info(a)
            done = {a.name for a in self._finished}
            self._finished = []
            self.agents = [n for n in live if n not in done]
            if not self.agents:
                self._summarise(truncated=False)
        return obs, rew, term, trunc, infos

    def _cost(self, a: AgentState, now: float, timed_out: bool, clock: float) -> float:
        """Reward for the agent's previous action: the time (and teleports) since its last decision, or
        with the team reward its share of the network's time since then (the team clock's advance).
        Before its first decision nothing the agent did is being paid for: 0."""
        if a.last_decision_time < 0:
            a.teleports_since_reward = 0
            return 0.0
        seconds = now - a.last_decision_time
        if self.team:
            w = self.config.team_weight
            seconds = (1.0 - w) * seconds + w * (clock - a.clock_mark)
        r = self.reward_fn(seconds, a.teleports_since_reward, timed_out)
        a.teleports_since_reward = 0
        return r

    def _final_info(self, a: AgentState, fault: bool = False) -> dict:
        arrived = a.status == DONE
        return {
            "deciding": False,
            "arrived": arrived,
            "travel_time": (a.arrival_time if arrived else self.time) - a.depart_time if a.depart_time >= 0 else 0.0,
            "departed": a.depart_time >= 0,
            "teleports": a.teleports,
            "decisions": a.decisions,
            "sumo_fault": fault,
        }

    def _finish(self, truncated: bool, fault: bool = False, cut: bool = False):
        """Horizon or time limit reached (or SUMO failed): every live agent is truncated, except those that
        arrived since the last return (terminated, with their reward up to the arrival). Agents whose
        vehicles never departed were never live: they appear only in the metrics. At a time limit (`cut`)
        the truncated get no timeout penalty and a final observation (see `reset`)."""
        live = self.agents
        now = self.time
        obs = dict.fromkeys(live, self._idle_obs)
        rew, term, trunc, infos = {}, dict.fromkeys(live, False), dict.fromkeys(live, True), {}
        driving = [self._by_name[n] for n in live if self._by_name[n].status != DONE]
        roads = dict(zip((a.name for a in driving), self.kernel.positions([a.name for a in driving]))) if cut else {}
        for name in live:
            a = self._by_name[name]
            if a.status == DONE:
                rew[name] = self._cost(a, a.arrival_time, False, a.arrival_clock)
                term[name], trunc[name] = True, False
                infos[name] = self._final_info(a, fault)
            else:
                rew[name] = self._cost(a, now, not cut, self._team_clock) if not fault else 0.0
                infos[name] = self._final_info(a, fault)
                if cut:
                    infos[name].update(self._final_observation(a, roads[name][0]))
        self._finished = []
        self._scheduler.ready.clear()
        self.agents = []
        self._summarise(truncated=truncated, fault=fault)
        return obs, rew, term, trunc, infos

    def _final_observation(self, a: AgentState, road: str) -> dict:
        """What an agent cut by the time limit would see next: the choice at its next fork, or, with no
        fork left, at the end of the edge it is on (one candidate). Nothing on its destination edge: its
        trip is as good as over (the learner bootstraps 0)."""
        e = a.next_decision_edge
        if e < 0:
            e = self.graph.index.get(road, a.route[0] if a.route else a.last_edge)
        if e < 0 or e == a.dest:
            return {"time_limit": True}
        c = self.choice_at(e, a.dest)
        if not c.edges:
            return {"time_limit": True}
        return {"time_limit": True, "final_observation": self._observe(a, c),
                "final_action_mask": self._masks[len(c.edges)]}  # fmt: skip

    def _fault(self, exc: Exception):
        self.faults += 1
        self.last_fault = f"{str(exc).strip()[:300] or type(exc).__name__} (at {self.time - self.begin:g} s)"
        self.kernel.fault()
        return self._finish(truncated=True, fault=True)

    def _summarise(self, truncated: bool, fault: bool = False) -> None:
        st = self._state
        arrived = [a for a in st if a.status == DONE]
        tt = [(a.arrival_time if a.status == DONE else self.time) - a.depart_time for a in st if a.depart_time >= 0]
        stats = {} if fault else self.kernel.trip_statistics()
        self.metrics = {
            "episode": self.episode,
            "seed": self._sim_seed,
            "sim_time": self.time - self.begin,
            "agents": len(st),
            "arrived": len(arrived),
            "arrival_rate": len(arrived) / len(st) if st else float("nan"),
            # unfinished agents count with the time they had spent at the end (a lower bound)
            "mean_travel_time": float(np.mean(tt)) if tt else float("nan"),
            "mean_travel_time_arrived": float(np.mean([a.arrival_time - a.depart_time for a in arrived]))
            if arrived
            else float("nan"),
            "agent_teleports": sum(a.teleports for a in st),
            "teleports": self._teleports_all,
            "decisions": self._decisions,
            "missed_decisions": self._scheduler.missed,
            "rejected_commands": self._rejected,
            "truncated": truncated,
            "time_limit": self._end - self.begin if self._cut else None,  # s, where a time limit cut it short
            "sumo_fault": fault,
            "sumo_faults_total": self.faults,
            "all_vehicles_mean_travel_time": stats.get("duration", float("nan")),
            "all_vehicles_mean_time_loss": stats.get("timeLoss", float("nan")),
            "all_vehicles_finished": stats.get("count", float("nan")),
            "all_vehicles_mean_route_length": stats.get("routeLength", float("nan")),
            "all_vehicles_mean_waiting_time": stats.get("waitingTime", float("nan")),
        }

    # ------------------------------------------------------------------ extras
    @property
    def sumo_seed(self) -> int:
        """The SUMO seed of the current (or last) episode."""
        return self._sim_seed

    @property
    def deciding_agents(self) -> list[str]:
        """Agents at a decision point now: the ones whose action counts (others may be omitted)."""
        return [a.name for a in self._scheduler.ready]

    def decision_edge(self, agent: str) -> str:
        """The edge whose continuations the agent's current decision chooses among."""
        return self.graph.edges[self._by_name[agent].decision_edge]

    def candidate_edges(self, agent: str) -> tuple[str, ...]:
        """Edge ids behind the agent's actions at its current decision (index = action)."""
        a = self._by_name[agent]
        return tuple(self.graph.edges[f] for f in a.candidates)

    def state(self) -> np.ndarray:
        """Global state for centralised critics: occupancy of every edge, with live traffic its delay
        (live / free-flow time - 1, at most 5), then per agent (running, elapsed, remaining free-flow
        time). Computed on demand: only MAPPO-style critics pay for it."""
        g = self.graph
        n = len(g.edges)
        out = np.zeros(self.state_size, dtype=np.float32)
        if self.kernel.running:
            try:
                out[:n] = self.kernel.occupancies(g.edges)
            except SumoFault:
                pass
        base = n
        if self.traffic is not None:
            out[n : 2 * n] = np.clip(self.traffic.times / g.fftime - 1.0, 0.0, 5.0)
            base = 2 * n
        for i, a in enumerate(self._state):
            if a.status == RUNNING:
                out[base + 3 * i] = 1.0
                out[base + 3 * i + 1] = min((self.time - a.depart_time) / 1800.0, 5.0)
                out[base + 3 * i + 2] = min(float(g.time_to(a.dest)[a.last_edge]) / 1800.0, 5.0)
        return out

    def trajectory(self, agent: str) -> list[tuple[float, str]]:
        """(time, edge id) for every edge the environment saw the agent on this episode."""
        return [(t, self.graph.edges[e]) for t, e in self._by_name[agent].trace]

    def render(self):
        return None  # the GUI (EnvConfig(gui=True)) renders live

    def suspend(self):
        """End this env's SUMO between episodes (a process runs one libsumo simulation at a time, and a
        run on several cities holds one env per city); the next reset starts a fresh one."""
        self.kernel.suspend()

    def close(self):
        self.kernel.close()
