"""Bad input fails with one clear message and leaves nothing in the cache; interrupted builds are harmless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scenarios import ScenarioError, cache, ensure_built, recipe, sumotools
from scenarios.build import resolve

pytestmark = pytest.mark.usefixtures("cosim_home")  # never touch the user's own cache


def cache_names() -> set[str]:
    return {p.name for p in cache.root().iterdir()} if cache.root().is_dir() else set()


@pytest.fixture
def nothing_left(cosim_home):
    """Asserts a failing build leaves no entry and no temp folder behind."""
    before = cache_names()
    yield
    after = cache_names()
    assert after - before == set(), f"left behind: {after - before}"


def helsinki_pbf() -> Path:
    from scenarios.build import source_path

    return source_path(recipe.load("helsinki"))


def test_unknown_city_lists_known_ones(nothing_left):
    with pytest.raises(ScenarioError, match=r"unknown city 'atlantis'; known cities: helsinki, kouvola"):
        ensure_built("atlantis")


def test_missing_file(nothing_left, tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        ensure_built(str(tmp_path / "gone.osm.pbf"))
    with pytest.raises(ScenarioError, match=r"OSM file .*gone\.osm does not exist"):
        recipe.adhoc("file", str(tmp_path / "gone.osm"))
    with pytest.raises(ScenarioError, match=r"net file .*gone\.net\.xml does not exist"):
        recipe.adhoc("net", str(tmp_path / "gone.net.xml"))


def test_truncated_pbf(nothing_left, tmp_path):
    bad = tmp_path / "cut.osm.pbf"
    data = helsinki_pbf().read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScenarioError, match=r"cut\.osm\.pbf is not a readable OSM file: PBF error.*truncated or corrupt"):
        ensure_built(str(bad))


def test_corrupt_pbf(nothing_left, tmp_path):
    bad = tmp_path / "noise.osm.pbf"
    data = bytearray(helsinki_pbf().read_bytes())
    data[2000:6000] = os.urandom(4000)
    bad.write_bytes(bytes(data))
    with pytest.raises(ScenarioError, match=r"noise\.osm\.pbf is not a readable OSM file"):
        ensure_built(str(bad))


@pytest.mark.parametrize(
    "fname, content, message",
    [
        ("notes.osm", "just some text\n", r"notes\.osm is not a readable OSM file: XML parsing error"),
        ("page.osm", "<html><body>404</body></html>", r"page\.osm is not a readable OSM file"),
        ("empty.osm.pbf", "", r"empty\.osm\.pbf is empty, not an OSM file"),
        ("data.csv", "a,b\n1,2\n", r"data\.csv is not a readable OSM file: Could not detect file format"),
    ],
)
def test_not_osm(nothing_left, tmp_path, fname, content, message):
    f = tmp_path / fname
    f.write_text(content)
    with pytest.raises(ScenarioError, match=message):
        ensure_built(recipe.adhoc("file", str(f)))


def test_osm_without_roads(nothing_left, tmp_path):
    f = tmp_path / "park.osm"
    f.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n<osm version='0.6'>\n"
        + "".join(f"<node id='{i}' lat='60.17{i}' lon='24.94{i}'/>\n" for i in range(1, 5))
        + "<way id='1'><nd ref='1'/><nd ref='2'/><nd ref='3'/><nd ref='4'/><nd ref='1'/>"
        "<tag k='building' v='yes'/></way>\n"
        "<way id='2'><nd ref='1'/><nd ref='3'/><tag k='highway' v='footway'/></way>\n</osm>\n"
    )
    with pytest.raises(ScenarioError, match=r"park\.osm has no drivable road \(4 nodes, 2 ways"):
        ensure_built(str(f))


def test_disconnected_net_has_no_routable_trip(nothing_left, tmp_path):
    """Two one-way roads that never meet: netconvert makes a valid net on which no trip can be routed."""
    (tmp_path / "n.nod.xml").write_text(
        "<nodes><node id='a' x='0' y='0'/><node id='b' x='1000' y='0'/>"
        "<node id='c' x='0' y='500'/><node id='d' x='1000' y='500'/></nodes>"
    )
    (tmp_path / "e.edg.xml").write_text(
        "<edges><edge id='ab' from='a' to='b' numLanes='1' speed='13.9'/>"
        "<edge id='cd' from='c' to='d' numLanes='1' speed='13.9'/></edges>"
    )
    net = tmp_path / "islands.net.xml"
    subprocess.run([sumotools.binary("netconvert"), "-n", str(tmp_path / "n.nod.xml"), "-e",
                    str(tmp_path / "e.edg.xml"), "-o", str(net)], check=True, env=sumotools.env(),
                   capture_output=True)  # fmt: skip
    with pytest.raises(ScenarioError, match=r"only 0 routable trips .* 50 agents needed: .* too disconnected"):
        ensure_built(str(net))


def test_not_a_net(nothing_left, tmp_path):
    f = tmp_path / "fake.net.xml"
    f.write_text("<routes><vehicle id='x' depart='0'/></routes>")
    with pytest.raises(ScenarioError, match=r"fake\.net\.xml is not a SUMO net \(root element <routes>\)"):
        ensure_built(str(f))
    f.write_text("garbage")
    with pytest.raises(ScenarioError, match=r"fake\.net\.xml is not a SUMO net \(not XML\)"):
        ensure_built(str(f))


def test_netconvert_failure_is_condensed(nothing_left):
    r = recipe.load("kouvola")
    bad = recipe.from_dict({**r.to_dict(), "netconvert": {"options": ["--no-such-option"]}}, origin="test")
    with pytest.raises(ScenarioError) as info:
        ensure_built(bad)
    msg = str(info.value)
    assert msg.startswith("netconvert failed: ") and "no-such-option" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "bbox, message",
    [("1,2,3", "W,S,E,N"), ("24.95,60.16,24.93,60.17", "W < E"), ("a,b,c,d", "W,S,E,N"), ("0,0,200,1", "W < E")],
)
def test_bad_bbox(bbox, message):
    with pytest.raises(ScenarioError, match=message):
        recipe.adhoc("bbox", bbox)


def test_bad_recipes(tmp_path):
    base = recipe.load("kouvola").to_dict()
    cases = [
        ({"colour": "red"}, "unknown key"),
        ({"source": {"kind": "ftp"}}, "kind = one of"),
        ({"demand": {**base["demand"], "agents": 0}}, "agents must be an integer >= 1"),
        ({"demand": {**base["demand"], "agent_pool": 5}}, "agent_pool .* must be >= agents"),
        ({"demand": {**base["demand"], "agent_depart_end": 5000}}, "agent_depart_end < horizon"),
        ({"netconvert": {"options": ["--tls.default-type", "actuated"]}}, "actuated"),
        ({"name": "../etc"}, "name must be"),
    ]
    for change, message in cases:
        with pytest.raises(ScenarioError, match=message):
            recipe.from_dict({**base, **change}, origin="t")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed")
    with pytest.raises(ScenarioError, match="cannot read recipe"):
        resolve(str(broken))


# ------------------------------------------------------------------------------------------ interruption
def _start_build(cosim_home: Path, seed: int) -> subprocess.Popen:
    env = {**os.environ, "COSIM_HOME": str(cosim_home)}
    return subprocess.Popen([sys.executable, "-m", "scenarios.cli", "build", "kouvola", "--seed", str(seed)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _wait_for_midway(proc: subprocess.Popen, timeout: float = 30.0) -> Path:
    """Wait until the build has a temp folder with the OSM converted (netconvert about to run or running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in cache.root().glob(cache.TMP_PREFIX + "kouvola-*"):
            if (tmp / "work" / "input.osm").is_file():
                return tmp
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("build never reached the middle")


def _expected_entry(seed: int) -> Path:
    from scenarios.build import source_digest

    r = recipe.load("kouvola").with_overrides(seed=seed)
    return cache.entry(r.name, cache.build_hash(r.to_dict(), source_digest(r)))


def test_kill_9_midway_then_rebuild(cosim_home):
    proc = _start_build(cosim_home, seed=7)
    tmp = _wait_for_midway(proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    final = _expected_entry(7)
    assert tmp.is_dir() and not final.exists()  # the wreck is only ever a temp folder
    assert all(p.name != final.name for p, _ in cache.entries())
    sc = ensure_built("kouvola", seed=7)
    assert sc.path == final and (final / "manifest.json").is_file()
    assert not tmp.exists()  # the dead build's temp folder was cleaned up
    assert sc.manifest["counts"]["agent_pool"] == 100 and sc.seed == 7


def test_ctrl_c_midway_leaves_nothing(cosim_home):
    proc = _start_build(cosim_home, seed=8)
    tmp = _wait_for_midway(proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert not tmp.exists() and not _expected_entry(8).exists()
    assert b"Traceback" not in err
