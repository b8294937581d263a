"""Shared fixtures: a private scenario cache for the session and the two shipped cities, built once.

Every test that needs a city asks for `helsinki` or `kouvola`; they are built on first use into a
temporary COSIM_HOME (never the user's ~/.cache/cosim) and reused by all later tests.
"""

from __future__ import annotations

import pytest

from scenarios import Scenario, ensure_built


@pytest.fixture(scope="session")
def cosim_home(tmp_path_factory):
    """A fresh COSIM_HOME for the whole session (the build cache lives in <it>/scenarios)."""
    home = tmp_path_factory.mktemp("cosim_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COSIM_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def helsinki(cosim_home) -> Scenario:
    return ensure_built("helsinki")


@pytest.fixture(scope="session")
def kouvola(cosim_home) -> Scenario:
    return ensure_built("kouvola")


@pytest.fixture(scope="session")
def net_city(cosim_home) -> Scenario:
    """A city built from a plain SUMO net (`--net`): Braunschweig from the eclipse-sumo wheel's tools."""
    from scenarios import recipe, sumotools

    net = sumotools.tool("game/bs3d/bs.net.xml")
    return ensure_built(recipe.adhoc("net", net, "bs3d").with_overrides(agents=20, veh_per_hour=600))


@pytest.fixture(scope="session")
def grid_demand(tmp_path_factory):
    """A small SUMO scenario made with SUMO's own tools, as a user would bring one: a 4x4 grid net
    (netgenerate), routed vehicles and unrouted trips (randomTrips), a file with a flow and trucks, and
    a .sumocfg naming them all. Returns the folder; `grid.sumocfg` and the files it names are inside."""
    import subprocess
    import sys

    from scenarios import sumotools

    d = tmp_path_factory.mktemp("grid_demand")
    env = sumotools.env()

    def run(args):
        subprocess.run(args, cwd=d, env=env, check=True, capture_output=True)

    run([sumotools.binary("netgenerate"), "--grid", "--grid.number", "4", "--grid.length", "200",
         "--default.lanenumber", "1", "--no-turnarounds", "-o", "grid.net.xml"])  # fmt: skip
    random_trips = sumotools.tool("randomTrips.py")
    run([sys.executable, random_trips, "-n", "grid.net.xml", "-r", "routes.rou.xml", "-o", "work.trips.xml",
         "-b", "0", "-e", "600", "-p", "5", "--seed", "1", "--validate", "--prefix", "r"])  # fmt: skip
    run([sys.executable, random_trips, "-n", "grid.net.xml", "-o", "trips.trips.xml", "-r", "work.rou.xml",
         "-b", "0", "-e", "600", "-p", "8", "--seed", "2", "--prefix", "t"])  # fmt: skip
    (d / "extra.rou.xml").write_text(
        "<routes>\n"
        '  <vType id="truck" vClass="truck" length="12" speedDev="0"/>\n'
        '  <vType id="car" vClass="passenger" speedFactor="0.9" speedDev="0"/>\n'
        '  <route id="loop" edges="A0A1 A1B1 B1B2"/>\n'
        '  <flow id="f" type="car" begin="10" end="610" period="40" from="B0B1" to="C3C2"/>\n'
        '  <trip id="truck0" type="truck" depart="30" from="A0A1" to="C2C3"/>\n'
        '  <vehicle id="truck1" type="truck" depart="200" route="loop"/>\n'
        "</routes>\n"
    )
    (d / "grid.sumocfg").write_text(
        '<configuration>\n  <input>\n    <net-file value="grid.net.xml"/>\n'
        '    <route-files value="routes.rou.xml,trips.trips.xml,extra.rou.xml"/>\n  </input>\n'
        '  <time>\n    <begin value="0"/>\n    <end value="900"/>\n  </time>\n'
        '  <processing>\n    <time-to-teleport value="200"/>\n  </processing>\n'
        '  <output>\n    <summary-output value="summary.xml"/>\n  </output>\n</configuration>\n'
    )
    # bad input (tests/test_bad_input.py): demand naming an edge the net lacks, a .sumocfg whose route
    # file is missing, demand without any passenger car, trip tables with an unknown edge, a bad
    # departure time and a duplicate id
    (d / "bad-edges.rou.xml").write_text('<routes>\n  <trip id="x" depart="0" from="A0A1" to="Z9Z8"/>\n</routes>\n')
    (d / "missing.sumocfg").write_text(
        '<configuration><input><net-file value="grid.net.xml"/><route-files value="nofile.rou.xml"/></input>'
        "</configuration>\n"
    )
    (d / "trucks.rou.xml").write_text(
        '<routes>\n  <vType id="truck" vClass="truck"/>\n'
        '  <trip id="k0" type="truck" depart="5" from="A0A1" to="C2C3"/>\n</routes>\n'
    )
    header = "id,from,to,depart\n"
    (d / "unknown-edge.csv").write_text(header + "a,A0A1,C2C3,0\nb,A0A1,NOPE,5\n")
    (d / "bad-depart.csv").write_text(header + "a,A0A1,C2C3,0\nb,A0A1,C2C3,soon\n")
    (d / "duplicate-id.csv").write_text(header + "a,A0A1,C2C3,0\na,B0B1,C3C2,5\n")
    # issue 26: a departure in epoch milliseconds, one after an explicit horizon, a spreadsheet's CSV
    # (byte-order mark) with an unknown edge, and a vehicle whose route edges do not connect
    (d / "epoch-ms.csv").write_text(header + "a,A0A1,C2C3,0\nb,A0A1,C2C3,1000000000000\n")
    (d / "late.csv").write_text(header + "a,A0A1,C2C3,0\nb,A0A1,C2C3,5000\n")
    (d / "bom-unknown-edge.csv").write_text("\ufeff" + header + "a,A0A1,C2C3,0\nb,A0A1,NOPE,5\n", encoding="utf-8")
    (d / "disconnected.rou.xml").write_text(
        '<routes>\n  <vehicle id="gap" depart="0"><route edges="A0A1 C2C3"/></vehicle>\n</routes>\n'
    )
    return d


@pytest.fixture(scope="session")
def busy_grid_cfg(tmp_path_factory):
    """A 3x3 one-lane grid with more demand than its shortest routes carry, as SUMO files: only trips,
    which SUMO routes as they enter. Returns the .sumocfg."""
    import subprocess
    import sys

    from scenarios import sumotools

    d = tmp_path_factory.mktemp("busy_grid")

    def run(args):
        subprocess.run(args, cwd=d, env=sumotools.env(), check=True, capture_output=True)

    run([sumotools.binary("netgenerate"), "--grid", "--grid.number", "3", "--grid.length", "150",
         "--default.lanenumber", "1", "--no-turnarounds", "-o", "grid.net.xml"])  # fmt: skip
    run([sys.executable, sumotools.tool("randomTrips.py"), "-n", "grid.net.xml", "-o", "demand.trips.xml",
         "-b", "0", "-e", "300", "-p", "1.5", "--seed", "3", "--fringe-factor", "10", "--min-distance", "300",
         "--prefix", "d"])  # fmt: skip
    (d / "grid.sumocfg").write_text(
        '<configuration>\n  <input>\n    <net-file value="grid.net.xml"/>\n'
        '    <route-files value="demand.trips.xml"/>\n  </input>\n'
        '  <time>\n    <begin value="0"/>\n    <end value="1200"/>\n  </time>\n</configuration>\n'
    )
    return d / "grid.sumocfg"


@pytest.fixture(scope="session")
def busy_grid(busy_grid_cfg, cosim_home):
    """The busy grid imported with half of its trips as agents: routes matter here."""
    from scenarios import ensure_built, recipe

    return ensure_built(recipe.adhoc("sumocfg", str(busy_grid_cfg)).with_overrides(agent_share=0.5))
