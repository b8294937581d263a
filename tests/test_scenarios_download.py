"""The bbox and place sources, over real HTTP against a local stand-in for Overpass and Nominatim.

A ThreadingHTTPServer on 127.0.0.1 answers POSTs (Overpass) with the fixture OSM file and GET
/search (Nominatim) with a JSON list in Nominatim's format, recording every request so the tests can
check what the builder actually asked for. Nothing is mocked: the builder's urllib client and osmnx's
requests-based geocoder do real round trips.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scenarios import ScenarioError, cache, ensure_built, recipe

FIXTURE = Path(__file__).parent / "fixtures" / "helsinki_kamppi.osm"
KAMPPI = (24.9350, 60.1665, 24.9410, 60.1700)  # W, S, E, N of the fixture (tests/fixtures/make_fixtures.py)

pytestmark = pytest.mark.usefixtures("cosim_home")  # never touch the user's own cache


def nominatim_result(bbox) -> dict:
    w, s, e, n = bbox
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "place_id": 1, "licence": "Data © OpenStreetMap contributors, ODbL 1.0", "osm_type": "relation",
        "osm_id": 1, "lat": str((s + n) / 2), "lon": str((w + e) / 2), "class": "boundary",
        "type": "administrative", "place_rank": 20, "importance": 0.5, "addresstype": "suburb",
        "name": "Kamppi", "display_name": "Kamppi, Helsinki, Finland",
        "boundingbox": [str(s), str(n), str(w), str(e)],  # Nominatim's order: S, N, W, E
        "geojson": {"type": "Polygon", "coordinates": [ring]},
    }  # fmt: skip


class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []  # (method, path, body)
        self.places = {"Kamppi, Helsinki": [nominatim_result(KAMPPI)]}
        self.busy = 0  # answer this many of the next requests with HTTP 429 (rate limited)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _busy(self) -> bool:
                if outer.busy <= 0:
                    return False
                outer.busy -= 1
                self._send(429, b"Too many requests", "text/plain")
                return True

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                outer.requests.append(("GET", url.path, url.query))
                if self._busy():
                    pass
                elif url.path.rstrip("/").endswith("/search"):
                    q = urllib.parse.parse_qs(url.query).get("q", [""])[0]
                    self._send(200, json.dumps(outer.places.get(q, [])).encode(), "application/json")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                outer.requests.append(("POST", self.path, body))
                query = urllib.parse.parse_qs(body).get("data", [""])[0]
                if self._busy():
                    pass
                elif self.path.startswith("/search"):
                    self._send(404, b"no Overpass here", "text/plain")
                elif "highway" not in query:
                    self._send(400, b"Error: bad query", "text/plain")
                elif "(0.0,0.0," in query:  # a box in the sea: a valid answer with nothing in it
                    self._send(200, b"<?xml version='1.0'?><osm version='0.6'></osm>", "application/osm3s+xml")
                else:
                    self._send(200, FIXTURE.read_bytes(), "application/osm3s+xml")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def posts(self) -> list[str]:
        return [urllib.parse.parse_qs(b)["data"][0] for m, _, b in self.requests if m == "POST"]


@pytest.fixture(scope="module")
def server():
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def test_bbox_downloads_from_overpass(cosim_home, server, monkeypatch):
    monkeypatch.setenv("COSIM_OVERPASS_URL", server.url + "/api/interpreter")
    n_before = len(server.requests)
    sc = ensure_built(recipe.adhoc("bbox", ",".join(map(str, KAMPPI))), agents=10, agent_pool=20)
    m = sc.manifest
    assert m["source"]["kind"] == "bbox" and m["source"]["bbox"] == list(KAMPPI)
    assert m["source"]["overpass_url"] == server.url + "/api/interpreter"
    assert m["licence"] == "ODbL-1.0" and m["counts"]["edges"] >= 15 and m["counts"]["signals"] >= 1
    (query,) = server.posts()[-1:]
    assert len(server.requests) == n_before + 1
    assert '(60.1665,24.935,60.17,24.941)' in query and 'way["highway"]' in query and "restriction" in query
    # a second build is a cache hit: no request reaches the server
    assert ensure_built(recipe.adhoc("bbox", ",".join(map(str, KAMPPI))), agents=10, agent_pool=20).path == sc.path
    assert len(server.requests) == n_before + 1


def test_place_is_geocoded_then_downloaded(cosim_home, server):
    n_before = len(server.requests)
    sc = ensure_built(recipe.adhoc("place", "Kamppi, Helsinki"), agents=10, agent_pool=20,
                      overpass_url=server.url + "/api/interpreter", nominatim_url=server.url + "/")  # fmt: skip
    new = server.requests[n_before:]
    assert [(m, p) for m, p, _ in new] == [("GET", "/search"), ("POST", "/api/interpreter")]
    assert urllib.parse.parse_qs(new[0][2])["q"] == ["Kamppi, Helsinki"]
    m = sc.manifest
    assert m["name"] == "kamppi-helsinki" and m["source"]["place"] == "Kamppi, Helsinki"
    assert m["source"]["bbox"] == pytest.approx(list(KAMPPI))
    assert "(60.1665,24.935,60.17,24.941)" in server.posts()[-1]
    assert m["counts"]["agent_pool"] == 20 and (sc.path / "map.png").is_file()


def test_place_that_cannot_be_geocoded(cosim_home, server):
    before = {p.name for p in cache.root().iterdir()}
    with pytest.raises(ScenarioError, match=r"cannot geocode place 'Atlantis': Nominatim at .*127\.0\.0\.1.* found no match"):
        ensure_built(recipe.adhoc("place", "Atlantis"), nominatim_url=server.url, overpass_url=server.url)
    assert {p.name for p in cache.root().iterdir()} == before


def test_area_without_roads(cosim_home, server):
    with pytest.raises(ScenarioError, match=r"the Overpass answer for bbox .* has no drivable road"):
        ensure_built(recipe.adhoc("bbox", "0,0,0.01,0.01"), overpass_url=server.url)


def test_overpass_unreachable(cosim_home, closed_port):
    before = {p.name for p in cache.root().iterdir()}
    with pytest.raises(ScenarioError, match=rf"cannot reach Overpass API at {closed_port}/api: .*refused"):
        ensure_built(recipe.adhoc("bbox", "24.90,60.10,24.91,60.11"), overpass_url=closed_port + "/api")
    assert {p.name for p in cache.root().iterdir()} == before


def test_nominatim_unreachable(cosim_home, closed_port):
    with pytest.raises(ScenarioError, match=rf"cannot reach Nominatim at {closed_port}.*: .*refused"):
        ensure_built(recipe.adhoc("place", "Kallio, Helsinki"), nominatim_url=closed_port)


def test_overpass_http_error_and_huge_box(cosim_home, server):
    with pytest.raises(ScenarioError, match=r"Overpass API at .* answered HTTP 404"):
        ensure_built(recipe.adhoc("place", "Kamppi, Helsinki", name="kamppi-404"),
                     nominatim_url=server.url, overpass_url=server.url + "/search")  # fmt: skip
    with pytest.raises(ScenarioError, match="square degrees, more than Overpass serves"):
        ensure_built(recipe.adhoc("bbox", "20,60,25,62"), overpass_url=server.url)


# ------------------------------------------------------------------------- bad endpoints, busy, silent
@pytest.fixture
def silent() -> str:
    """A server on 127.0.0.1 that accepts every connection and never answers."""
    srv = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:  # the listening socket was closed
                return

    threading.Thread(target=accept_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()
    for conn in held:
        conn.close()


@pytest.fixture
def quick(monkeypatch):
    """Seconds instead of minutes: a 1.5 s timeout, progress every 0.2 s, retries after 0.05 s."""
    from scenarios import osm

    monkeypatch.setenv("COSIM_HTTP_TIMEOUT_S", "1.5")
    monkeypatch.setattr(osm, "PROGRESS_EVERY_S", 0.2)
    monkeypatch.setattr(osm, "RETRY_WAITS_S", (0.05, 0.05))


@pytest.mark.parametrize(
    "kind, value, kwargs, message",
    [
        ("bbox", "24.90,60.10,24.91,60.11", {"overpass_url": "notaurl"}, r"--overpass-url: 'notaurl' is not a URL"),
        ("place", "Kallio", {"nominatim_url": "localhost:8080"}, r"--nominatim-url: 'localhost:8080' is not a URL"),
        ("bbox", "24.90,60.10,24.91,60.11", {"overpass_url": "http://h:port/x"}, r"is not a URL for the Overpass"),
    ],
)
def test_endpoint_that_is_not_a_url(cosim_home, kind, value, kwargs, message):
    before = {p.name for p in cache.root().iterdir()}
    with pytest.raises(ScenarioError, match=message):
        ensure_built(recipe.adhoc(kind, value), **kwargs)
    assert {p.name for p in cache.root().iterdir()} == before


@pytest.mark.parametrize("env", ["COSIM_OVERPASS_URL", "COSIM_NOMINATIM_URL"])
def test_endpoint_from_environment_that_is_not_a_url(cosim_home, monkeypatch, env):
    monkeypatch.setenv(env, "notaurl")
    with pytest.raises(ScenarioError, match=rf"^{env}: 'notaurl' is not a URL"):
        ensure_built(recipe.adhoc("place", "Kallio"))


@pytest.mark.timeout(60)  # the code before the fix waited 180 s
def test_overpass_that_never_answers(cosim_home, silent, quick):
    before = {p.name for p in cache.root().iterdir()}
    lines: list[str] = []
    with pytest.raises(ScenarioError, match=r"Overpass API at .*127\.0\.0\.1.* did not answer within 1\.5 s "
                                            r"\(set COSIM_HTTP_TIMEOUT_S to wait longer\)"):  # fmt: skip
        ensure_built(recipe.adhoc("bbox", "24.90,60.10,24.91,60.11"), overpass_url=silent + "/api",
                     progress=lines.append)  # fmt: skip
    prefix = f"bbox_24.9_60.1_24.91_60.11: waiting for Overpass at {silent}/api… "
    waiting = [m for m in lines if m.startswith(prefix)]
    assert waiting, lines  # the user saw that it waits, and for whom
    assert waiting[0].endswith("s (gives up after 1.5 s)")
    assert {p.name for p in cache.root().iterdir()} == before


@pytest.mark.timeout(60)
def test_nominatim_that_never_answers(cosim_home, silent, quick):
    lines: list[str] = []
    with pytest.raises(ScenarioError, match=r"Nominatim at .*127\.0\.0\.1.* did not answer within 1\.5 s"):
        ensure_built(recipe.adhoc("place", "Kallio, Helsinki"), nominatim_url=silent, progress=lines.append)
    assert any(m.startswith(f"kallio-helsinki: waiting for Nominatim at {silent}… ") for m in lines), lines


@pytest.mark.timeout(60)  # the code before the fix retried every 55 s without end
def test_nominatim_that_stays_busy(cosim_home, server, quick):
    server.busy = 10
    n_before = len(server.requests)
    lines: list[str] = []
    try:
        with pytest.raises(ScenarioError, match=rf"^Nominatim at {server.url}/ is busy: it answered HTTP 429 "
                                                r"Too Many Requests to all 3 tries; try again later"):  # fmt: skip
            ensure_built(recipe.adhoc("place", "Kamppi, Helsinki", name="kamppi-busy"),
                         nominatim_url=server.url + "/", progress=lines.append)  # fmt: skip
    finally:
        server.busy = 0
    assert [(m, p) for m, p, _ in server.requests[n_before:]] == [("GET", "/search")] * 3  # bounded
    retries = [m for m in lines if "answered HTTP 429 Too Many Requests; try" in m]
    assert [m.rsplit("; ", 1)[1] for m in retries] == ["try 2 of 3 in 0.05 s", "try 3 of 3 in 0.05 s"]


@pytest.mark.timeout(60)
def test_busy_once_then_served(cosim_home, server, quick):
    """A rate limit that lifts: one 429 from each endpoint costs one short pause, not a failed build."""
    lines: list[str] = []
    server.busy = 1
    bbox = "24.9350,60.1665,24.9410,60.1700"
    sc = ensure_built(recipe.adhoc("bbox", bbox, name="kamppi-busy-once"), agents=10, agent_pool=20,
                      overpass_url=server.url + "/api/interpreter", progress=lines.append)  # fmt: skip
    assert server.busy == 0 and sc.manifest["counts"]["edges"] >= 15
    assert [m for m in lines if "429" in m] == [
        f"kamppi-busy-once: Overpass API at {server.url}/api/interpreter answered HTTP 429 Too Many Requests; "
        "try 2 of 3 in 0.05 s"
    ]
