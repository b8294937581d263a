"""OpenStreetMap input: reading and checking OSM files, downloading a bounding box, geocoding a place.

netconvert reads OSM XML only, so every OSM source passes through pyosmium once: PBF (or XML, o5m,
compressed) in, plain OSM XML out. The same pass checks the file really is OSM (pyosmium's parser
errors become one-line messages) and counts the drivable ways, so "no road here" is reported as such
instead of as netconvert's empty-net error.

Areas come from the Overpass API (raw OSM with signal tags and turn-restriction relations, which an
osmnx graph export would lose); place names are turned into a bounding box by osmnx's Nominatim
geocoder. Both endpoints are configurable for mirrors and for tests (COSIM_OVERPASS_URL,
COSIM_NOMINATIM_URL). Nothing here is imported on the cache-hit path.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scenarios.errors import ScenarioError

DEFAULT_OVERPASS_URL = "https://overpass-api.de/api/interpreter"
OVERPASS_TIMEOUT_S = 180
MAX_BBOX_DEG2 = 1.0  # about 100 km x 50 km at mid latitudes; Overpass refuses much more in one query

# highway=* values a passenger car may drive on (netconvert's keep-edges.by-vclass passenger keeps these)
DRIVABLE = {
    "motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential",
    "living_street", "service", "road", "motorway_link", "trunk_link", "primary_link",
    "secondary_link", "tertiary_link",
}  # fmt: skip
_SNIFF = {b"<?xml": "osm", b"<osm": "osm"}


@dataclass
class OsmSummary:
    nodes: int = 0
    ways: int = 0
    relations: int = 0
    drivable_ways: int = 0
    signals: int = 0


def _open(path: Path):
    """An osmium.io.File, telling osmium the format when the file name does not."""
    import osmium

    name = path.name.lower()
    known = (".osm", ".pbf", ".o5m", ".osm.gz", ".osm.bz2", ".osc", ".opl")
    if name.endswith(known):
        return osmium.io.File(str(path))
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip()
    if any(head.startswith(m) for m in _SNIFF):
        return osmium.io.File(str(path), "osm")
    if b"OSMHeader" in head:
        return osmium.io.File(str(path), "pbf")
    return osmium.io.File(str(path))  # let osmium say it cannot detect the format


def to_osm_xml(src: Path, dst: Path, label: str | None = None) -> OsmSummary:
    """Convert any OSM file pyosmium reads into OSM XML for netconvert; check it has drivable roads.

    label names the input in error messages (a download's temp file means nothing to the user).
    """
    import osmium

    label = label or str(src)
    if not src.is_file():
        raise ScenarioError(f"OSM file {src} does not exist")
    if src.stat().st_size == 0:
        raise ScenarioError(f"{label} is empty, not an OSM file")
    s = OsmSummary()
    entities = osmium.osm.NODE | osmium.osm.WAY | osmium.osm.RELATION  # changesets are not map data
    try:
        with osmium.SimpleWriter(str(dst), overwrite=True) as writer, _sigint_as_flag() as interrupted:
            for obj in osmium.FileProcessor(_open(src), entities):
                if interrupted:
                    raise KeyboardInterrupt
                if obj.is_node():
                    s.nodes += 1
                    if obj.tags.get("highway") == "traffic_signals":
                        s.signals += 1
                elif obj.is_way():
                    s.ways += 1
                    if obj.tags.get("highway") in DRIVABLE:
                        s.drivable_ways += 1
                else:
                    s.relations += 1
                writer.add(obj)
    except RuntimeError as exc:
        msg = str(exc).strip().rstrip(".")
        hint = " (truncated or corrupt download?)" if "PBF" in msg or "EOF" in msg else ""
        raise ScenarioError(f"{label} is not a readable OSM file: {msg}{hint}") from None
    if s.drivable_ways == 0:
        raise ScenarioError(
            f"{label} has no drivable road ({s.nodes} nodes, {s.ways} ways, none tagged highway=motorway…service)"
        )
    return s


class _Flag:
    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


@contextmanager
def _sigint_as_flag():
    """Take Ctrl-C as a flag while pyosmium runs; the caller raises it between objects, we at the end.

    A KeyboardInterrupt raised while pybind11 converts arguments is swallowed there and resurfaces as
    an unrelated TypeError; a handler that only sets a flag keeps the interrupt an interrupt.
    """
    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else handles Ctrl-C: leave it to them
        yield flag
        return

    def handler(signum, frame):
        flag.set = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
    if flag:  # it came after the last object: still an interrupt
        raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------- Overpass
def overpass_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("COSIM_OVERPASS_URL") or DEFAULT_OVERPASS_URL


def overpass_query(bbox: tuple[float, float, float, float], timeout_s: int = OVERPASS_TIMEOUT_S) -> str:
    """All highway ways in the box with all their nodes (complete ways), plus their turn restrictions."""
    w, s, e, n = bbox
    return (
        f"[out:xml][timeout:{timeout_s}];"
        f'way["highway"]({s},{w},{n},{e})->.roads;'
        '(.roads;node(w.roads);rel(bw.roads)["type"="restriction"];);'
        "out body;"
    )


def download_bbox(bbox: tuple[float, float, float, float], dst: Path, url: str | None = None,
                  timeout_s: float = OVERPASS_TIMEOUT_S) -> None:  # fmt: skip
    """Fetch raw OSM for a W,S,E,N box from the Overpass API into dst (OSM XML)."""
    w, s, e, n = bbox
    if (e - w) * (n - s) > MAX_BBOX_DEG2:
        raise ScenarioError(
            f"bounding box {w},{s},{e},{n} covers {(e - w) * (n - s):.2f} square degrees, more than Overpass "
            f"serves in one query ({MAX_BBOX_DEG2}); download an extract and use --osm FILE"
        )
    url = overpass_url(url)
    body = urllib.parse.urlencode({"data": overpass_query(bbox)}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"User-Agent": "reled-cosim"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp, open(dst, "wb") as fh:
            shutil.copyfileobj(resp, fh)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip().splitlines()
        tail = f": {detail[0][:200]}" if detail else ""
        raise ScenarioError(f"Overpass API at {url} answered HTTP {exc.code} {exc.reason}{tail}") from None
    except urllib.error.URLError as exc:
        raise ScenarioError(f"cannot reach Overpass API at {url}: {exc.reason}") from None
    except (socket.timeout, TimeoutError):
        raise ScenarioError(f"Overpass API at {url} did not answer within {timeout_s:g} s") from None
    except (ConnectionError, OSError) as exc:
        raise ScenarioError(f"cannot reach Overpass API at {url}: {exc}") from None
    remark = _overpass_remark(dst)
    if remark:
        raise ScenarioError(f"Overpass API at {url} did not complete the query: {remark}")


def _overpass_remark(path: Path) -> str:
    """Overpass reports runtime errors (timeouts, memory) in a <remark> inside an HTTP 200 answer."""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4096))
        tail = fh.read().decode("utf-8", "replace")
    if "<remark>" in tail:
        return tail.split("<remark>", 1)[1].split("</remark>", 1)[0].strip()[:200]
    return ""


# ---------------------------------------------------------------------------------------- Nominatim
def nominatim_url(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("COSIM_NOMINATIM_URL") or None


def geocode_bbox(place: str, url: str | None = None) -> tuple[float, float, float, float]:
    """W,S,E,N of a place name, from Nominatim via osmnx (which also honours osmnx.settings)."""
    import osmnx as ox
    import requests
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    saved = (ox.settings.nominatim_url, ox.settings.use_cache, ox.settings.log_console)
    endpoint = nominatim_url(url) or ox.settings.nominatim_url
    ox.settings.nominatim_url = endpoint
    ox.settings.use_cache = False  # osmnx would otherwise write ./cache into the user's working directory
    ox.settings.log_console = False
    try:
        try:
            gdf = ox.geocode_to_gdf(place)
        except TypeError:  # no polygon among the results: take the best match, its bounding box will do
            gdf = ox.geocode_to_gdf(place, which_result=1)
    except InsufficientResponseError:
        raise ScenarioError(f"cannot geocode place {place!r}: Nominatim at {endpoint} found no match") from None
    except ResponseStatusCodeError as exc:
        raise ScenarioError(f"Nominatim at {endpoint} answered an error for {place!r}: {exc}") from None
    except requests.exceptions.RequestException as exc:
        reason = getattr(exc, "args", [exc])[0]
        raise ScenarioError(f"cannot reach Nominatim at {endpoint}: {_short(reason)}") from None
    finally:
        ox.settings.nominatim_url, ox.settings.use_cache, ox.settings.log_console = saved
    row = gdf.iloc[0]
    return check(row["bbox_west"], row["bbox_south"], row["bbox_east"], row["bbox_north"], place)


def check(w, s, e, n, place) -> tuple[float, float, float, float]:
    from scenarios.recipe import check_bbox

    try:
        return check_bbox([w, s, e, n])
    except ScenarioError:
        raise ScenarioError(f"Nominatim returned an unusable bounding box for {place!r}: {w},{s},{e},{n}") from None


def _short(reason) -> str:
    text = str(reason)
    # requests wraps urllib3's errors several layers deep; the innermost clause is the useful one
    if "Errno" in text:
        text = "[Errno" + text.rsplit("[Errno", 1)[1]
        text = text.split("'))", 1)[0].rstrip(")'\"")
    return text[:200]
