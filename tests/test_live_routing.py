"""Live travel times (issue 28): what the kernel samples follows real traffic, routes use it, and the
baselines built on it (navigation, a tuned rerouting device) leave the background alone."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cosim.config import EnvConfig
from cosim.env import VehicleRoutingEnv
from cosim.policies import make_policy, shortest_actions
from cosim.traffic import Intent, LiveTraffic


def plain_sumo(args: list[str], tripinfo) -> list:
    """A plain `sumo` run (outside the env) with the env's own options: its tripinfo elements."""
    import subprocess
    import xml.etree.ElementTree as ET

    from scenarios import sumotools

    subprocess.run([sumotools.binary("sumo"), *args], check=True, capture_output=True, env=sumotools.env())
    return list(ET.parse(tripinfo).getroot().iter("tripinfo"))


def _jammed_run(helsinki, continuation: str):
    """The street most agents' free-flow routes share gets a 0.3 m/s limit at the start; returns the
    env after the episode, the jammed edge and the agents whose free-flow route used it."""
    cfg = EnvConfig(n_agents=60, horizon=1800.0, continuation=continuation, traffic_update_s=5.0,
                    traffic_window_s=10.0)  # fmt: skip
    env = VehicleRoutingEnv(helsinki, cfg)
    g = env.graph
    # the street (100 m or more) most free-flow routes share, away from their ends, is the one to jam
    counts = np.zeros(len(g.edges), dtype=int)
    for route in env.initial_routes:
        for e in route[1:-1]:
            counts[g.index[e]] += 1
    jam = int(np.argmax(np.where(g.length >= 100.0, counts, -1)))
    users = {t.id for t, r in zip(env.trips, env.initial_routes) if g.edges[jam] in r[1:-1]}
    act = make_policy("shortest", 0)  # action 0: the first candidate of the continuation's order
    obs, _ = env.reset(seed=1)
    env.kernel.conn.edge.setMaxSpeed(g.edges[jam], 0.3)  # the test's own jam, straight into SUMO
    free_flow_before = g.fftime.copy()
    while env.agents:
        obs, *_ = env.step(act(env, obs))
    return env, jam, users, free_flow_before


def _through(env, jam, users) -> tuple[list[str], list[str]]:
    """Users due to depart once the jam was known, and those of them that drove through it."""
    planned = {t.id: t.depart for t in env.trips}  # the schedule: the same in both runs, unlike insertion
    late = [a for a in users if planned[a] > env.begin + 30]
    return late, [a for a in late if env.graph.edges[jam] in {e for _, e in env.trajectory(a)}]


def test_live_times_follow_a_jam_and_the_continuation_avoids_it(helsinki):
    env, jam, users, free_flow_before = _jammed_run(helsinki, "live")
    try:
        g = env.graph
        # the live time of the jammed edge rose to its crawl; the free-flow times did not move
        assert env.traffic.times[jam] > 20 * g.fftime[jam]
        np.testing.assert_array_equal(g.fftime, free_flow_before)
        late, through = _through(env, jam, users)
        assert env.metrics["arrived"] >= 0.9 * env.metrics["agents"]
    finally:
        env.close()
    ff, jam_ff, users_ff, _ = _jammed_run(helsinki, "free_flow")
    try:
        late_ff, through_ff = _through(ff, jam_ff, users_ff)
    finally:
        ff.close()
    # on free-flow routes the agents drive into it; on live routes most go round (a few have no better
    # way: their origin leads into it, or the queue it causes makes every detour slower)
    assert (jam_ff, sorted(late_ff)) == (jam, sorted(late)) and len(late) >= 5
    assert len(through_ff) >= len(late_ff) // 2  # the rest were still queueing towards it at the horizon
    assert len(through) <= len(through_ff) // 3, (through, through_ff)


def test_live_paths_are_free_flow_paths_on_an_empty_network(helsinki):
    g = helsinki.graph
    live = LiveTraffic(g, window_samples=3)
    live.sample(g.speed)  # every edge at its limit
    for o, d in [(0, len(g.edges) - 1), (5, 100), (200, 30)]:
        ff = tuple(g.path(o, d))
        if ff:
            assert live.path(o, d) == ff
            assert live.time_to(d)[o] == pytest.approx(g.time_to(d)[o])
    # a window: one slow sample among three moves the mean speed by a third of the drop
    speeds = g.speed.copy()
    speeds[7] = 0.0
    live.sample(speeds)
    expected = g.length[7] / (2 * g.speed[7] / 3)
    assert live.times[7] == pytest.approx(expected)


def test_intent_counts_the_agents_planned_onto_an_edge_within_the_horizon():
    graph = SimpleNamespace(fftime=np.array([10.0, 20.0, 30.0, 40.0, 500.0, 5.0]))
    intent = Intent(graph, horizon_s=100.0)
    a, b, c = (SimpleNamespace(name=n) for n in "abc")
    intent.plan(a, (0, 1, 2, 3), now=0.0)  # enters 1 at 10, 2 at 30, 3 at 60
    intent.plan(b, (1, 2, 4, 5), now=0.0)  # enters 2 at 20, 4 at 50, 5 at 550 (beyond the horizon)
    intent.plan(c, (2, 3), now=0.0)  # enters 3 at 30
    assert [intent.count(e, 0.0, c) for e in range(6)] == [0, 1, 2, 1, 1, 0]
    assert intent.count(3, 0.0, a) == 1  # itself not counted
    assert intent.count(3, 200.0, c) == 0  # 60 and 30 s are more than the slack in the past
    intent.plan(a, (0, 5), now=0.0)  # a re-planned: its old edges no longer count
    assert [intent.count(e, 0.0, c) for e in range(6)] == [0, 0, 1, 0, 1, 1]
    intent.forget(b)
    assert [intent.count(e, 0.0, c) for e in range(6)] == [0, 0, 0, 0, 0, 1]


def test_the_team_reward_sums_to_every_vehicles_time_while_agents_drive(helsinki):
    """With env.reward = "team" the agents' rewards add up to minus the vehicle-seconds of every vehicle in
    the network (SUMO's own count, read independently here) over the seconds when some agent is being
    paid (from its first decision to its arrival)."""
    cfg = EnvConfig(n_agents=25, reward="team", reward_scale=1.0, teleport_penalty=0.0, timeout_penalty=0.0)
    env = VehicleRoutingEnv(helsinki, cfg)
    in_network: list[tuple[float, int]] = []
    step = env.kernel.step

    def counting_step():
        ev = step()
        in_network.append((ev.time, env.kernel.conn.vehicle.getIDCount()))
        return ev

    env.kernel.step = counting_step
    total, first = 0.0, {}
    act = make_policy("shortest", 0)
    try:
        obs, infos = env.reset(seed=2)
        while env.agents:
            for a in env.deciding_agents:
                first.setdefault(a, env.time)
            obs, rew, _, _, infos = env.step(act(env, obs))
            total += sum(rew.values())
        assert env.metrics["arrival_rate"] == 1.0 and env.metrics["teleports"] == 0
        arrival = {a.name: a.arrival_time for a in env._state}
    finally:
        env.close()
    expected, prev_t, prev_n = 0.0, env.begin, 0
    for t, n in in_network:
        if any(f <= prev_t and arrival[a] >= t for a, f in first.items()):
            expected += prev_n * (t - prev_t)
        prev_t, prev_n = t, n
    assert expected > 1000 and total == pytest.approx(-expected, rel=1e-9)
    # the own-time reward pays each agent its own seconds only: far less than the team's
    own = VehicleRoutingEnv(helsinki, EnvConfig(n_agents=25, reward_scale=1.0))
    try:
        own_total = 0.0
        obs, _ = own.reset(seed=2)
        while own.agents:
            obs, rew, *_ = own.step(act(own, obs))
            own_total += sum(rew.values())
    finally:
        own.close()
    assert 0 > own_total > -expected / 5


def test_sumo_rerouting_through_the_env_is_a_plain_sumo_run(helsinki, tmp_path):
    """The device baseline through the env gives SUMO's own numbers: the same files and options in a
    plain `sumo` run give the same agents' mean travel time."""
    from cosim.kernel import write_agent_routes

    cfg = EnvConfig(n_agents=40, horizon=1800.0, control="sumo-rerouting", rerouting_period=60.0,
                    rerouting_adaptation_steps=30)  # fmt: skip
    env = VehicleRoutingEnv(helsinki, cfg)
    try:
        obs, _ = env.reset(seed=4)
        while env.agents:
            env.step({})
        through_env = env.metrics["mean_travel_time"]
        assert env.metrics["arrival_rate"] == 1.0 and env.metrics["decisions"] == 0
        agents = write_agent_routes(tmp_path / "agents.rou.xml", env.trips, env.initial_routes, rerouting=60.0)
        out = tmp_path / "tripinfo.xml"
        args = env.kernel.sumo_options(4, [helsinki.background_file, agents], env.begin + env.horizon, tripinfo=out)
    finally:
        env.close()
    args += ["--device.rerouting.adaptation-steps", "30", "--device.rerouting.adaptation-interval", "1"]
    ids = set(env.possible_agents)
    plain = [float(t.get("duration")) for t in plain_sumo(args, out) if t.get("id") in ids]
    assert len(plain) == 40 and through_env == pytest.approx(np.mean(plain), abs=1e-6)


def test_free_flow_routes_are_sumos_own(helsinki, kouvola):
    """The env's free-flow router weighs edges and junction crossings as SUMO's routers do: every trip of
    both cities' agent pools gets the route and the time of SUMO's `simulation.findRoute` on the empty
    network. Without junction times (the router before 2026-12-07) many routes differ."""
    import libsumo

    from scenarios import sumotools

    for scenario, least_old_misses in ((helsinki, 100), (kouvola, 5)):
        g = VehicleRoutingEnv(scenario, EnvConfig(n_agents=4)).graph
        old = g.edges_only()
        # the net alone: no vehicle, so SUMO's router weighs the empty network
        libsumo.start([sumotools.binary("sumo"), "-n", str(scenario.net_file), "--no-step-log", "--no-warnings"])
        try:
            misses = 0
            for t in scenario.trip_pool:
                route = libsumo.simulation.findRoute(t.origin, t.destination)
                assert g.path_ids(t.origin, t.destination) == list(route.edges), t.id
                o, d = g.index[t.origin], g.index[t.destination]
                assert g.time_to(d)[o] == pytest.approx(route.travelTime, abs=1e-6)
                misses += old.path_ids(t.origin, t.destination) != list(route.edges)
            assert misses >= least_old_misses, misses
        finally:
            libsumo.close()


def test_shortest_through_the_env_is_a_plain_sumo_run_on_duarouters_routes(helsinki, tmp_path):
    """`shortest` through the env gives SUMO's own number: the agents' trips routed by `duarouter` and run
    by a plain `sumo` with the scenario's files give the same agents' mean travel time to the
    microsecond, and the same all-vehicles mean."""
    import subprocess
    import xml.etree.ElementTree as ET

    from agents.baselines import ShortestMethod
    from cosim.kernel import write_agent_routes
    from scenarios import sumotools

    cfg = EnvConfig(n_agents=60, horizon=1800.0, **ShortestMethod.env_settings)
    env = VehicleRoutingEnv(helsinki, cfg)
    try:
        obs, _ = env.reset(seed=3)
        while env.agents:
            obs, *_ = env.step(shortest_actions(env, obs))
        through_env, end = dict(env.metrics), env.time
        trips = tmp_path / "trips.xml"
        trips.write_text("<routes>\n" + "".join(
            f'  <trip id="{t.id}" depart="{t.depart:.2f}" from="{t.origin}" to="{t.destination}"/>\n'
            for t in sorted(env.trips, key=lambda t: t.depart)) + "</routes>\n")  # fmt: skip
        routed = tmp_path / "routed.rou.xml"
        subprocess.run([sumotools.binary("duarouter"), "-n", str(helsinki.net_file), "--route-files", str(trips),
                        "-o", str(routed), "--no-step-log"], check=True, capture_output=True, env=sumotools.env())  # fmt: skip
        dua = {v.get("id"): v.find("route").get("edges").split() for v in ET.parse(routed).getroot().iter("vehicle")}
        agents = write_agent_routes(tmp_path / "agents.rou.xml", env.trips, [dua[t.id] for t in env.trips])
        out = tmp_path / "tripinfo.xml"
        args = env.kernel.sumo_options(3, [helsinki.background_file, agents], env.begin + env.horizon, tripinfo=out)
        ids = set(env.possible_agents)
    finally:
        env.close()
    infos = plain_sumo(args, out)
    plain = [float(t.get("duration")) for t in infos if t.get("id") in ids]
    assert len(plain) == 60 and through_env["arrival_rate"] == 1.0
    assert through_env["mean_travel_time"] == pytest.approx(np.mean(plain), abs=1e-6)
    # every vehicle that had arrived when the env's episode ended (its last agent arrived)
    every = [float(t.get("duration")) for t in infos if float(t.get("arrival")) <= end]
    assert through_env["all_vehicles_finished"] == len(every)
    assert through_env["all_vehicles_mean_travel_time"] == pytest.approx(np.mean(every), abs=0.01)


def test_navigation_routes_as_sumos_rerouting_engine_where_both_know_the_same(tmp_path, cosim_home):
    """On a net with nothing but the agents, a car parks in the middle of each of two streets at the start.
    With the env's smoothing set to the rerouting device's (a sample every second, the last 180
    averaged), the navigation app's route at each agent's departure is the route SUMO's own rerouting
    engine gives it at that moment (`simulation.findRoute` on the device's aggregated times), and it goes
    round the parked cars where the free-flow route went through them."""
    import subprocess
    import sys

    import libsumo

    from agents.baselines import NavigationMethod
    from scenarios import ensure_built, recipe, sumotools

    def run(args):
        subprocess.run(args, cwd=tmp_path, env=sumotools.env(), check=True, capture_output=True)

    # a random net (no two routes tie, unlike on a grid), one lane, nothing but the agents' trips
    run([sumotools.binary("netgenerate"), "--rand", "--rand.iterations", "80", "--seed", "3", "--default.lanenumber",
         "1", "--no-turnarounds", "-o", "rand.net.xml"])  # fmt: skip
    run([sys.executable, sumotools.tool("randomTrips.py"), "-n", "rand.net.xml", "-o", "agents.trips.xml",
         "-b", "300", "-e", "900", "-p", "15", "--seed", "4", "--min-distance", "600", "--prefix", "a"])  # fmt: skip
    sc = ensure_built(recipe.adhoc("net", str(tmp_path / "rand.net.xml"), routes=[str(tmp_path / "agents.trips.xml")])
                      .with_overrides(agent_share=1.0))  # fmt: skip
    g = sc.graph
    free = {t.id: g.path_ids(t.origin, t.destination) for t in sc.trips()}
    counts = {}
    for route in free.values():
        for e in route[1:-1]:
            counts[e] = counts.get(e, 0) + 1
    blocked = sorted(counts, key=lambda e: (-counts[e], e))[:2]  # the two streets most free-flow routes use

    cfg = EnvConfig(**NavigationMethod.env_settings, traffic_update_s=1.0, traffic_window_s=180.0, horizon=1500.0)
    env = VehicleRoutingEnv(sc, cfg)
    planned, sumo_routes, departed = {}, {}, {}
    try:
        obs, _ = env.reset(seed=0)
        parked = env.time
        sumo = env.kernel.conn  # the test's own parked cars, straight into SUMO
        for k, e in enumerate(blocked):
            sumo.route.add(f"blocked{k}", [e])
            sumo.vehicle.add(f"parked{k}", f"blocked{k}", depart="now")
            sumo.vehicle.setStop(f"parked{k}", e, pos=sumo.lane.getLength(f"{e}_0") / 2, duration=1e5)
        while env.agents:
            for a in env.agents:  # just departed: the route it was given is still its departure plan
                st = env._by_name[a]
                if a not in planned and st.depart_time >= 0:
                    planned[a], departed[a] = [g.edges[i] for i in st.route], st.depart_time
                    route = sumo.simulation.findRoute(st.trip.origin, st.trip.destination,
                                                      routingMode=libsumo.constants.ROUTING_MODE_AGGREGATED)  # fmt: skip
                    sumo_routes[a] = list(route.edges)
            obs, *_ = env.step(shortest_actions(env, obs))
    finally:
        env.close()
    assert len(planned) == len(free) >= 30
    assert planned == sumo_routes
    # the cars park when the first agent departs: those just after it cannot know, those 3 min later do
    avoided = [a for a, r in free.items() if set(blocked) & set(r[1:-1])]
    assert all(set(blocked) & set(planned[a][1:-1]) for a in avoided if departed[a] < parked + 10)
    late = [a for a in avoided if departed[a] > parked + 180]  # both windows hold only the parked cars
    assert len(late) >= 4 and all(not set(blocked) & set(planned[a][1:-1]) for a in late)


def test_the_device_period_reaches_the_agents_only(grid_demand, tmp_path):
    """`sumo-rerouting` re-routes the agents every period; background vehicles that SUMO routes at
    insertion (the imported scenario's unrouted trips) are routed once and never again (SUMO's tripinfo
    counts each vehicle's re-routings). Before 2026-12 the period was a SUMO-wide option, and every such
    background vehicle re-routed with the agents."""
    from cosim.kernel import write_agent_routes
    from scenarios import ensure_built, recipe

    sc = ensure_built(recipe.adhoc("sumocfg", str(grid_demand / "grid.sumocfg")).with_overrides(agent_share=0.3))
    env = VehicleRoutingEnv(sc, EnvConfig(control="sumo-rerouting", rerouting_period=10.0))
    try:
        agents = write_agent_routes(tmp_path / "agents.rou.xml", env.trips, env.initial_routes, rerouting=10.0,
                                    passive=sc.passive_vehicles(env.trips))  # fmt: skip
        out = tmp_path / "tripinfo.xml"
        args = env.kernel.sumo_options(1, [sc.background_file, agents], env.begin + env.horizon, tripinfo=out)
        ids = set(env.possible_agents)
    finally:
        env.close()
    reroutes = {t.get("id"): int(t.get("rerouteNo", "0")) for t in plain_sumo(args, out)}
    background = {v: n for v, n in reroutes.items() if v not in ids}
    assert max(reroutes[a] for a in ids if a in reroutes) > 1  # the agents re-route along the way
    assert background and max(background.values()) <= 1  # at most once, at insertion
    assert any(n == 1 for n in background.values())  # the unrouted background trips were routed
