"""Background demand fitted to the net (scenarios/calibrate.py): real SUMO runs on a small generated grid.

The grid (4 x 4 junctions, 100 m blocks, one lane each way) carries ~2 000 random trips an hour and
gridlocks at 5 000: a start of 10 000 veh/h must come down to a rate that the grid carries, a rate it
already carries must be kept after one run, and the statistics must count the route file's vehicles.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sumolib

from scenarios import calibrate, sumotools
from scenarios.roadgraph import RoadGraph

HORIZON = 600
SEED = 42


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calibrate")
    net = folder / "grid.net.xml"
    subprocess.run(
        [sumotools.binary("netgenerate"), "--grid", "--grid.number", "4", "--grid.length", "100", "-L", "1",
         "--no-turnarounds", "--seed", str(SEED), "-o", str(net)],
        check=True, env=sumotools.env(), capture_output=True,
    )  # fmt: skip
    return net


def routes_maker(net: Path, log: Path, fixed_vph: float | None = None):
    """The builder's background step in miniature: randomTrips + duarouter for a rate over [0, HORIZON).
    With fixed_vph, every call writes that rate whatever it is asked for (a net nothing fits)."""
    calls: list[float] = []

    def make(vph: float, out: Path) -> int:
        calls.append(vph)
        rate = fixed_vph if fixed_vph is not None else vph
        args = ["-n", str(net), "-r", str(out), "-o", str(out.with_suffix(".trips.xml")), "-b", "0",
                "-e", str(HORIZON), "-p", f"{3600.0 / rate:.6g}", "--fringe-factor", "5", "--min-distance", "150",
                "--validate", "--seed", str(SEED), "--vehicle-class", "passenger", "--prefix", "bg"]  # fmt: skip
        sumotools.python_tool("randomTrips.py", args, "randomTrips", net.parent, log)
        return vehicles_in(out)

    return make, calls


def vehicles_in(route_file: Path) -> int:
    return sum(1 for _ in sumolib.xml.parse_fast(str(route_file), "vehicle", ["id"]))


def fit(net: Path, tmp_path: Path, start: float, fixed_vph: float | None = None, extra: Path | None = None,
        work: Path | None = None):  # fmt: skip
    log = tmp_path / "build.log"
    make, calls = routes_maker(net, log, fixed_vph)
    result = calibrate.fit_rate(net, make_routes=make, horizon=HORIZON, seed=SEED, start_vph=start,
                                work=work or tmp_path / "work", log=log, cwd=tmp_path, extra_vehicles=extra)  # fmt: skip
    return result, calls


def test_overloaded_rate_is_lowered_to_one_that_fits(grid, tmp_path):
    result, calls = fit(grid, tmp_path, 10000.0)
    tried = result["tried"]
    assert tried[0]["veh_per_hour"] == 10000.0 and not tried[0]["fits"]
    assert tried[0]["arrived_share"] < 0.5  # the start really gridlocks this grid ...
    # ... and SUMO gave up on it once the teleports exceeded what the criterion allows
    assert tried[0]["teleports"] > calibrate.MAX_TELEPORT_SHARE * tried[0]["vehicles"]
    assert tried[0]["aborted_at"] is not None and tried[0]["aborted_at"] < result["end"]
    assert 1 < len(tried) <= calibrate.MAX_RATES and calls == [t["veh_per_hour"] for t in tried]
    # a failing rate stops at its first failing seed; a fitting one passed every seed
    for t in tried:
        runs = t["runs"]
        assert [r["seed"] for r in runs] == [SEED + k for k in range(len(runs))]
        assert all(r["fits"] for r in runs[:-1]) and runs[-1]["fits"] == t["fits"]
        assert len(runs) == calibrate.SEEDS_PER_RATE or not t["fits"]
    assert result["runs"] == sum(len(t["runs"]) for t in tried)
    assert result["fits"] and result["veh_per_hour"] < 10000.0
    # the highest tried rate that fits is chosen; every tried rate above it failed
    fitting = [t["veh_per_hour"] for t in tried if t["fits"]]
    assert result["veh_per_hour"] == max(fitting)
    assert all(not t["fits"] for t in tried if t["veh_per_hour"] > result["veh_per_hour"])
    # its routes are left where the docstring says, the tries' files are gone, and it fits in a re-run
    routes = result["routes"]
    assert routes == tmp_path / "work" / calibrate.CHOSEN_ROUTES and routes.is_file()
    assert sorted(p.name for p in routes.parent.glob("*.rou.xml")) == [calibrate.CHOSEN_ROUTES]
    assert vehicles_in(routes) == result["vehicles"] > 0
    again = calibrate.run_stats(grid, [routes], result["end"], SEED + 1, tmp_path, tmp_path / "build.log")
    assert calibrate.fits(again) and not again["aborted"]
    assert again["loaded"] == again["due"] == result["vehicles"]
    assert again["arrived"] >= calibrate.MIN_ARRIVED_SHARE * again["due"]
    assert again["teleports"] <= calibrate.MAX_TELEPORT_SHARE * again["due"]


def test_rate_that_fits_is_kept_after_one_try(grid, tmp_path):
    result, calls = fit(grid, tmp_path, 600.0, work=Path("fit"))  # relative to cwd, like the builder's paths
    assert calls == [600.0] and len(result["tried"]) == 1
    assert result["routes"] == tmp_path / "fit" / calibrate.CHOSEN_ROUTES and result["routes"].is_file()
    assert result["runs"] == calibrate.SEEDS_PER_RATE  # one rate, checked on each seed
    assert result["fits"] and result["veh_per_hour"] == 600.0
    t = result["tried"][0]
    assert t["fits"] and t["arrived_share"] >= calibrate.MIN_ARRIVED_SHARE and t["teleports"] == 0
    assert t["vehicles"] == t["background_vehicles"] == result["vehicles"] == vehicles_in(result["routes"])
    assert "98%" in result["criterion"]


def test_extra_vehicles_count_and_must_fit_too(grid, tmp_path):
    graph = RoadGraph.from_net_file(grid)
    edges = [e for e in graph.edges if graph.length[graph.index[e]] >= 50]
    trips = [{"id": f"agent{i}", "from": edges[i % len(edges)], "to": edges[(i * 7 + 3) % len(edges)],
              "depart": float(i)} for i in range(40)]  # fmt: skip
    trips = [t for t in trips if t["from"] != t["to"]]
    agents = tmp_path / "agents.rou.xml"
    n_agents = calibrate.write_trip_routes(agents, graph, trips)
    assert n_agents == vehicles_in(agents) == len(trips)
    result, _ = fit(grid, tmp_path, 600.0, extra=agents)
    t = result["tried"][0]
    assert t["vehicles"] == t["background_vehicles"] + n_agents
    assert result["fits"] and result["veh_per_hour"] == 600.0


def test_net_that_fits_nothing_returns_the_lowest_rate_flagged(grid, tmp_path):
    result, calls = fit(grid, tmp_path, 5000.0, fixed_vph=5000.0)
    assert len(calls) == calibrate.MAX_RATES and not any(t["fits"] for t in result["tried"])
    assert result["fits"] is False
    assert result["veh_per_hour"] == min(calls) < 5000.0
    assert result["routes"].is_file()


def test_run_stats_counts_the_route_files_vehicles(grid, tmp_path):
    log = tmp_path / "build.log"
    make, _ = routes_maker(grid, log)
    routes = tmp_path / "bg.rou.xml"
    n = make(1200.0, routes)
    tripinfo = tmp_path / "tripinfo.xml"
    s = calibrate.run_stats(grid, [routes], HORIZON + calibrate.END_MARGIN_S, SEED, tmp_path, log, tripinfo=tripinfo)
    assert n == HORIZON * 1200 // 3600 > 0  # randomTrips' period is exact
    assert s["loaded"] == s["due"] == s["inserted"] == s["arrived"] == n
    assert s["running"] == s["waiting"] == s["teleports"] == 0 and s["arrived_share"] == 1.0
    arrived = [t for t in sumolib.xml.parse_fast(str(tripinfo), "tripinfo", ["id", "duration"])]
    assert len(arrived) == n
    assert s["mean_duration"] == pytest.approx(sum(float(t.duration) for t in arrived) / n, abs=0.01)
    # a run cut short: only the vehicles due by then count, and those still on the road are not arrived
    short = calibrate.run_stats(grid, [routes], HORIZON / 2, SEED, tmp_path, log)
    departs = [float(v.depart) for v in sumolib.xml.parse_fast(str(routes), "vehicle", ["id", "depart"])]
    assert short["due"] == sum(d < HORIZON / 2 for d in departs) < n
    assert short["arrived"] + short["running"] + short["waiting"] == short["due"]
    assert short["running"] > 0 and short["arrived_share"] == short["arrived"] / short["due"] < 1


def test_the_builder_fits_a_rate_left_to_it(grid, cosim_home, tmp_path):
    """An ad-hoc net (rate "auto") pushed ten times past what it carries (--demand-scale 60 on the per-km
    estimate): the builder ships the fitted rate, records the search, and that background fits when
    run again with the scenario's agents."""
    from scenarios import ensure_built, recipe

    r = recipe.adhoc("net", str(grid), "calgrid").with_overrides(demand_scale=60, agents=5, horizon=HORIZON + 600)
    sc = ensure_built(r)
    gen = sc.manifest["generated"]
    fit = gen["calibration"]
    start = recipe.auto_veh_per_hour(sc.manifest["counts"]["road_km"]) * 60
    assert fit["tried"][0]["veh_per_hour"] == start and not fit["tried"][0]["fits"]
    assert fit["fits"] and gen["veh_per_hour"] == fit["veh_per_hour"] < start
    n = sc.manifest["counts"]["background_vehicles"]
    assert n == vehicles_in(sc.background_file) == fit["vehicles"]
    agents = tmp_path / "agents.rou.xml"
    calibrate.write_trip_routes(agents, sc.graph, [{"id": t.id, "from": t.origin, "to": t.destination,
                                                    "depart": t.depart} for t in sc.trips()])  # fmt: skip
    stats = calibrate.run_stats(sc.net_file, [sc.background_file, agents], sc.horizon + calibrate.END_MARGIN_S,
                                sc.seed, tmp_path, tmp_path / "log")  # fmt: skip
    assert calibrate.fits(stats) and stats["due"] == n + 5
