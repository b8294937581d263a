"""Importing a SUMO scenario with its own demand (scenarios/imported.py), checked vehicle by vehicle.

The scenario is `grid_demand` (tests/conftest.py): a netgenerate grid, routed vehicles and unrouted
trips from randomTrips, a file with a flow, trucks and a named route, and a .sumocfg naming them all.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from cosim.config import EnvConfig
from cosim.env import VehicleRoutingEnv
from cosim.kernel import SumoKernel, write_agent_routes
from cosim.policies import make_policy
from scenarios import ensure_built, recipe, sumotools
from scenarios.errors import ScenarioError

FILES = ("routes.rou.xml", "trips.trips.xml", "extra.rou.xml")


def original_vehicles(folder) -> dict[str, ET.Element]:
    """Every vehicle of the demand files by id, flows expanded as SUMO does (id flow.N)."""
    out = {}
    for name in FILES:
        for el in ET.parse(folder / name).getroot():
            if el.tag in ("vehicle", "trip"):
                out[el.get("id")] = el
            elif el.tag == "flow":
                begin, end, period = (float(el.get(k)) for k in ("begin", "end", "period"))
                i = 0
                while begin + i * period < end:
                    out[f"{el.get('id')}.{i}"] = el
                    i += 1
    return out


def tripinfos(path) -> dict[str, dict]:
    return {t.get("id"): dict(t.attrib) for t in ET.parse(path).getroot().iter("tripinfo")}


def import_cfg(grid, **kw):
    return ensure_built(recipe.adhoc("sumocfg", str(grid / "grid.sumocfg")).with_overrides(**kw))


def test_sumocfg_import_reproduces_the_original_run_vehicle_by_vehicle(grid_demand, cosim_home, tmp_path):
    sc = import_cfg(grid_demand, agents=0)
    imp = sc.manifest["import"]
    orig = original_vehicles(grid_demand)
    assert imp["flows_expanded"] == 1 and sum(imp["vehicles_by_type"].values()) == len(orig)
    assert imp["vehicles_by_type"]["truck"] == 2 and imp["vehicles_by_type"]["car"] == 15
    assert sc.manifest["counts"]["background_vehicles"] == len(orig) and sc.default_agents == 0
    assert (sc.begin, sc.horizon) == (0.0, 900.0)
    assert imp["sumo_options"] == {"time-to-teleport": "200"} and "summary-output" in imp["dropped_options"]
    # the background keeps every element as written: same attributes, trips stay trips
    bg = {el.get("id"): el for el in ET.parse(sc.background_file).getroot() if el.tag in ("vehicle", "trip")}
    assert set(bg) == set(orig)
    for vid, el in bg.items():
        if "." not in vid:  # flow vehicles are new elements; the rest are the files' own
            assert (el.tag, el.attrib) == (orig[vid].tag, orig[vid].attrib), vid

    # plain SUMO on the original .sumocfg and on the built scenario, as the kernel starts it. Without
    # random speed factors (--default.speeddev 0, speedDev 0 in the file's types): SUMO draws them as it
    # reads each file and creates flow vehicles when due, and the built scenario holds one file with the
    # flow expanded, so with random draws the runs agree in distribution but not vehicle by vehicle
    env = sumotools.env()
    a, b, c = tmp_path / "original.xml", tmp_path / "built.xml", tmp_path / "built-random.xml"
    fixed = ["--default.speeddev", "0"]
    subprocess.run([sumotools.binary("sumo"), "-c", str(grid_demand / "grid.sumocfg"), "--seed", "7", *fixed,
                    "--tripinfo-output", str(a), "--no-step-log", "--summary-output", str(tmp_path / "s.xml")],
                   check=True, capture_output=True, env=env)  # fmt: skip
    kernel = SumoKernel(sc)
    agents_file = write_agent_routes(tmp_path / "agents.rou.xml", [], [])
    args = kernel.sumo_options(7, [sc.background_file, agents_file], sc.begin + sc.horizon, tripinfo=b)
    subprocess.run([sumotools.binary("sumo"), *args, *fixed], check=True, capture_output=True, env=env)
    args = kernel.sumo_options(7, [sc.background_file, agents_file], sc.begin + sc.horizon, tripinfo=c)
    subprocess.run([sumotools.binary("sumo"), *args], check=True, capture_output=True, env=env)
    kernel.close()
    ta, tb = tripinfos(a), tripinfos(b)
    assert len(ta) > 0.9 * len(orig) and set(ta) == set(tb)
    for vid in ta:
        for key in ("depart", "arrival", "routeLength", "duration"):
            assert ta[vid][key] == tb[vid][key], (vid, key)

    # and the env with no agents (`cosim simulate --agents 0`) is that same plain run of the built scenario
    venv = VehicleRoutingEnv(sc, EnvConfig(n_agents=0))
    try:
        venv.reset(seed=7)
        m = venv.metrics
    finally:
        venv.close()
    tc = tripinfos(c)
    durations = [float(t["duration"]) for t in tc.values()]
    assert m["all_vehicles_finished"] == len(tc) and m["sim_time"] == 900.0
    assert m["all_vehicles_mean_travel_time"] == pytest.approx(sum(durations) / len(durations), abs=0.01)


def test_net_and_routes_import_equals_the_sumocfg_import(grid_demand, cosim_home):
    by_cfg = import_cfg(grid_demand, agents=0)
    r = recipe.adhoc("net", str(grid_demand / "grid.net.xml"), routes=[str(grid_demand / f) for f in FILES])
    by_files = ensure_built(r.with_overrides(agents=0))
    assert by_files.background_file.read_text() == by_cfg.background_file.read_text()
    last = by_files.manifest["import"]["time"]["last_departure"]
    assert by_files.begin == 0.0 and by_files.horizon == last + 1800  # the horizon covers the demand


def test_agents_are_picked_from_the_demand_and_keep_their_trips(grid_demand, cosim_home, tmp_path):
    sc = import_cfg(grid_demand, agents=12)
    orig = original_vehicles(grid_demand)
    pool = sc.trip_pool
    assert len(pool) == 12 == sc.default_agents
    for t in pool:
        el = orig[t.id]
        assert el.get("type") != "truck"  # passenger vehicles only
        if el.tag == "trip" or el.tag == "flow":
            assert (t.origin, t.destination) == (el.get("from"), el.get("to"))
        else:
            edges = el.find("route").get("edges").split()
            assert (t.origin, t.destination) == (edges[0], edges[-1])
        if el.tag != "flow":
            assert t.depart == float(el.get("depart"))
    bg = [el.get("id") for el in ET.parse(sc.background_file).getroot() if el.tag in ("vehicle", "trip")]
    assert sorted(bg + [t.id for t in pool]) == sorted(orig)  # every vehicle exactly once

    # fewer agents than were picked: the others drive as their files say, nobody is lost
    env = VehicleRoutingEnv(sc, EnvConfig(n_agents=5))
    try:
        assert [t.id for t in env.trips] == [t.id for t in pool[:5]]
        act = make_policy("shortest", 0)
        obs, _ = env.reset(seed=3)
        while env.agents:
            obs, *_ = env.step(act(env, obs))
        m = env.metrics
        assert m["arrived"] == 5 and m["decisions"] > 0 and m["rejected_commands"] == 0
        out = tmp_path / "trips.xml"
        routes = write_agent_routes(tmp_path / "a.rou.xml", env.trips, env.initial_routes,
                                    passive=sc.passive_vehicles(env.trips))  # fmt: skip
        args = env.kernel.sumo_options(3, [sc.background_file, routes], sc.begin + sc.horizon, tripinfo=out)
    finally:
        env.close()
    subprocess.run([sumotools.binary("sumo"), *args], check=True, capture_output=True, env=sumotools.env())
    finished = tripinfos(out)
    for t in pool:  # agents and passive picks alike depart when their files say
        assert float(finished[t.id]["depart"]) >= t.depart and t.id in finished


def test_share_and_seed_decide_the_choice(grid_demand, cosim_home):
    half = import_cfg(grid_demand, agent_share=0.5)
    eligible = half.manifest["import"]["eligible_agents"]
    assert half.default_agents == round(0.5 * eligible) and eligible > 50
    few = import_cfg(grid_demand, agents=7)
    many = import_cfg(grid_demand, agents=20)
    assert [t.id for t in many.trip_pool[:7]] == [t.id for t in few.trip_pool]  # growing N keeps the first
    other = import_cfg(grid_demand, agents=7, seed=8)
    assert {t.id for t in other.trip_pool} != {t.id for t in few.trip_pool}

    from scenarios import imported

    demand = imported.read_demand([grid_demand / f for f in FILES], seed=42)
    again = imported.read_demand([grid_demand / f for f in FILES], seed=42)
    kw = dict(agents=7, share=None, seed=42, window=(0.0, 900.0))
    assert (
        imported.choose_agents(demand, few.graph, **kw).agents == imported.choose_agents(again, few.graph, **kw).agents
    )
    assert [a["id"] for a in imported.choose_agents(demand, few.graph, **kw).agents] == [t.id for t in few.trip_pool]


def test_demand_scale_multiplies_the_background(grid_demand, cosim_home):
    base = import_cfg(grid_demand, agents=5)
    double = import_cfg(grid_demand, agents=5, demand_scale=2)
    half = import_cfg(grid_demand, agents=5, demand_scale=0.5)
    n = base.manifest["counts"]["background_vehicles"]
    assert double.manifest["counts"]["background_vehicles"] == 2 * n
    assert 0.35 * n < half.manifest["counts"]["background_vehicles"] < 0.65 * n
    assert [t.id for t in double.trip_pool] == [t.id for t in base.trip_pool]  # the agents are not scaled
    ids = [el.get("id") for el in ET.parse(double.background_file).getroot() if el.tag in ("vehicle", "trip")]
    assert len(ids) == len(set(ids)) and sum(i.endswith(".scale1") for i in ids) == n


def test_trips_table_and_a_later_begin(grid_demand, cosim_home, tmp_path):
    table = tmp_path / "od.csv"
    rows = ["id,from,to,depart,vtype"] + [f"od{i},A0A1,C2C3,{130 + 10 * i},car" for i in range(6)]
    rows += [f"odk{i},B0B1,C3C2,{135 + 10 * i}," for i in range(6)]
    table.write_text("\n".join(rows) + "\n")
    extra = tmp_path / "types.rou.xml"
    extra.write_text('<routes><vType id="car" vClass="passenger" speedFactor="0.9"/></routes>\n')
    r = recipe.adhoc("net", str(grid_demand / "grid.net.xml"), routes=[str(extra)], trips=[str(table)])
    sc = ensure_built(r.with_overrides(agents=4))
    assert sc.begin == 130.0 and sc.horizon == 185 - 130 + 1800 and sc.manifest["counts"]["background_vehicles"] == 8
    assert sc.manifest["import"]["vehicles_by_type"] == {"DEFAULT_VEHTYPE": 6, "car": 6}
    env = VehicleRoutingEnv(sc, EnvConfig(n_agents=4))
    try:
        act = make_policy("shortest", 0)
        obs, _ = env.reset(seed=1)
        while env.agents:
            obs, *_ = env.step(act(env, obs))
        m = env.metrics
    finally:
        env.close()
    # the episode runs on the scenario's clock (begin 130 s) and ends when the last agent arrives
    assert m["arrived"] == 4 and 4 <= m["all_vehicles_finished"] <= 12 and 0 < m["sim_time"] < sc.horizon
    assert all(t.depart >= 130 for t in env.trips) and m["mean_travel_time"] < 300
    with pytest.raises(ScenarioError, match="not for imported demand"):
        r.with_overrides(veh_per_hour=100)


def test_imported_scenario_runs_by_name_in_train(grid_demand, cosim_home, tmp_path):
    """`cosim train` takes the imported scenario by the name it was built under (compare, evaluate and
    demo resolve names the same way, through scenarios.ensure_built)."""
    import json
    import os
    import sys

    base = import_cfg(grid_demand, agents=6, name="grid-six")
    out = tmp_path / "run"
    p = subprocess.run(
        [sys.executable, "-m", "cosim", "train", "-s", "grid-six", "--method", "ippo", "--episodes", "2",
         "--eval-every", "0", "--set", "scenario.demand_scale=2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, COSIM_HOME=str(cosim_home), WANDB_MODE="offline"),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("phase") == "train"]
    assert len(train) == 2 and all(r["agents"] == 6 and r["mean_travel_time"] > 0 for r in train)
    # the configuration tree's scenario.demand_scale: the run used the same scenario with twice the background
    assert json.loads((out / "config.json").read_text())["config"]["scenario"]["demand_scale"] == 2
    scaled = ensure_built("grid-six", demand_scale=2)
    assert scaled.path != base.path and [t.id for t in scaled.trip_pool] == [t.id for t in base.trip_pool]
    assert scaled.manifest["counts"]["background_vehicles"] == 2 * base.manifest["counts"]["background_vehicles"]


def test_show_prints_the_demand_provenance(grid_demand, cosim_home):
    import hashlib
    import os
    import sys

    sc = import_cfg(grid_demand, agents=12)
    p = subprocess.run([sys.executable, "-m", "cosim", "scenario", "show", str(sc.path)], capture_output=True,
                       text=True, env=dict(os.environ, COSIM_HOME=str(cosim_home), COLUMNS="200"), timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = p.stdout
    digest = hashlib.sha256((grid_demand / "extra.rou.xml").read_bytes()).hexdigest()[:16]
    assert f"extra.rou.xml (sha256 {digest}" in out
    eligible = sc.manifest["import"]["eligible_agents"]
    assert f"12 of {eligible} eligible" in out and "truck 2" in out and "time-to-teleport=200" in out


def test_flows_are_expanded_as_sumo_spaces_them(tmp_path):
    from scenarios import imported

    f = tmp_path / "flows.rou.xml"
    f.write_text(
        "<routes>\n"
        '  <flow id="p" begin="0" end="100" period="25" from="a" to="b"/>\n'
        '  <flow id="v" begin="10" end="3610" vehsPerHour="2" from="a" to="b"/>\n'
        '  <flow id="n" begin="0" end="60" number="3" from="a" to="b"><route edges="a b"/></flow>\n'
        '  <interval begin="200" end="260"><flow id="i" period="30" from="a" to="b"/></interval>\n'
        '  <flow id="r" begin="0" end="1000" probability="0.1" from="a" to="b"/>\n'
        "</routes>\n"
    )
    d = imported.read_demand([f], seed=1)
    by = {}
    for u in d.units:
        by.setdefault(u.id.split(".")[0], []).append((u.elem.tag, u.depart))
    assert by["p"] == [("trip", 0.0), ("trip", 25.0), ("trip", 50.0), ("trip", 75.0)]
    assert by["v"] == [("trip", 10.0), ("trip", 1810.0)]
    assert by["n"] == [("vehicle", 0.0), ("vehicle", 20.0), ("vehicle", 40.0)]  # a route: vehicles
    assert by["i"] == [("trip", 200.0), ("trip", 230.0)]  # the interval's times
    assert 60 < len(by["r"]) < 140 and d.flows_expanded == 5
    again = imported.read_demand([f], seed=1)
    assert [u.depart for u in again.units] == [u.depart for u in d.units]  # random flows: the seed decides
    other = imported.read_demand([f], seed=2)
    assert [u.depart for u in other.units if u.id.startswith("r.")] != [u.depart for u in d.units if u.id.startswith("r.")]
