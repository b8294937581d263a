"""OpenStreetMap input: reading and checking OSM files, downloading a bounding box, geocoding a place.

netconvert reads OSM XML only, so every OSM source passes through pyosmium once: PBF (or XML, o5m,
compressed) in, plain OSM XML out. The same pass checks the file really is OSM (pyosmium's parser
errors become one-line messages) and counts the drivable ways, so "no road here" is reported as such
instead of as netconvert's empty-net error.

Areas come from the Overpass API (raw OSM with signal tags and turn-restriction relations, which an
osmnx graph export would lose); place names are turned into a bounding box by osmnx's Nominatim
geocoder. Both endpoints are configurable for mirrors and for tests (COSIM_OVERPASS_URL,
COSIM_NOMINATIM_URL), and checked to be http(s) URLs before any work starts.

Public servers are slow or busy at times, so every request reports progress while it waits (a user
otherwise sees a silent command for minutes), gives up after ``COSIM_HTTP_TIMEOUT_S`` seconds without
an answer (default 180, Overpass's own default query limit), and retries "busy" answers (HTTP 429,
503, 504) a few times after short waits instead of osmnx's endless one-minute retries. Nothing here is
imported on the cache-hit path.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scenarios.errors import ScenarioError

DEFAULT_OVERPASS_URL = "https://overpass-api.de/api/interpreter"
TIMEOUT_ENV = "COSIM_HTTP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 180.0  # seconds without an answer; also the Overpass query's own [timeout:]
BUSY_STATUS = {429, 503, 504}  # rate limited / overloaded: worth another try after a pause
RETRY_WAITS_S = (3.0, 10.0)  # pauses before the 2nd and 3rd try; then give up
MAX_RETRY_AFTER_S = 30.0  # a server's Retry-After is honoured up to this
PROGRESS_EVERY_S = 10.0  # how often a waiting request reports that it still waits
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


def open_osm(path: Path):
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
            for obj in osmium.FileProcessor(open_osm(src), entities):
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


def check_bbox(value) -> tuple[float, float, float, float]:
    """W,S,E,N in degrees (a string "W,S,E,N" or a 4-sequence), validated."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else []
    try:
        if len(parts) != 4:
            raise ValueError
        w, s, e, n = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ScenarioError(
            f"bounding box must be W,S,E,N in degrees (e.g. 24.93,60.16,24.95,60.17), got {value!r}"
        ) from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ScenarioError(f"bounding box {w},{s},{e},{n} is not W,S,E,N with W < E and S < N in degrees")
    return (w, s, e, n)


# ---------------------------------------------------------------------------------------- HTTP
def check_url(url: str, origin: str, what: str) -> str:
    """url itself if it is an absolute http(s) URL with a host; else one clear error naming where it came
    from (a typo such as "notaurl" would otherwise surface as a traceback deep inside urllib/requests)."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise ScenarioError(f"{origin}: {url!r} is not a URL for {what} (want http(s)://host[:port]/path)")
    return url


def _endpoint(explicit: str | None, env: str, flag: str, what: str) -> str | None:
    if explicit is not None:
        return check_url(explicit, flag, what)
    if os.environ.get(env):
        return check_url(os.environ[env], env, what)
    return None


def http_timeout() -> float:
    """Seconds to wait for an answer from Overpass or Nominatim ($COSIM_HTTP_TIMEOUT_S, default 180)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ScenarioError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


class _Busy(Exception):
    """An endpoint answered "busy" (BUSY_STATUS); raised inside a try so the retry loop can wait."""

    def __init__(self, status: int, reason: str, retry_after: str | None) -> None:
        super().__init__(status, reason)
        self.status, self.reason = status, reason
        try:
            self.retry_after = min(float(retry_after), MAX_RETRY_AFTER_S) if retry_after else 0.0
        except ValueError:  # an HTTP date: not worth parsing for a pause of seconds
            self.retry_after = 0.0


def _with_retries(attempt, what: str, hint: str, progress) -> object:
    """attempt() until it does not raise _Busy: at most 1 + len(RETRY_WAITS_S) tries, short pauses."""
    say = progress or (lambda msg: None)
    tries = len(RETRY_WAITS_S) + 1
    for i in range(tries):
        try:
            return attempt()
        except _Busy as busy:
            if i + 1 == tries:
                raise ScenarioError(
                    f"{what} is busy: it answered HTTP {busy.status} {busy.reason} to all {tries} tries; "
                    f"try again later{hint}"
                ) from None
            wait = max(RETRY_WAITS_S[i], busy.retry_after)
            say(f"{what} answered HTTP {busy.status} {busy.reason}; try {i + 2} of {tries} in {wait:g} s")
            time.sleep(wait)


@contextmanager
def _reporting(progress, message):
    """Call progress(message(elapsed_s)) every PROGRESS_EVERY_S while the body runs (it blocks in I/O)."""
    if progress is None:
        yield
        return
    done = threading.Event()
    t0 = time.monotonic()

    def tick() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            progress(message(time.monotonic() - t0))

    thread = threading.Thread(target=tick, name="cosim-http-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# ---------------------------------------------------------------------------------------- Overpass
def overpass_url(explicit: str | None = None) -> str:
    """The Overpass endpoint: --overpass-url, else $COSIM_OVERPASS_URL, else the public one; checked."""
    found = _endpoint(explicit, "COSIM_OVERPASS_URL", "--overpass-url", "the Overpass API")
    return found or DEFAULT_OVERPASS_URL


def overpass_query(bbox: tuple[float, float, float, float], timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """All highway ways in the box with all their nodes (complete ways), plus their turn restrictions."""
    w, s, e, n = bbox
    return (
        f"[out:xml][timeout:{max(1, round(timeout_s))}];"
        f'way["highway"]({s},{w},{n},{e})->.roads;'
        '(.roads;node(w.roads);rel(bw.roads)["type"="restriction"];);'
        "out body;"
    )


def download_bbox(bbox: tuple[float, float, float, float], dst: Path, url: str | None = None,
                  timeout_s: float | None = None, progress=None) -> None:  # fmt: skip
    """Fetch raw OSM for a W,S,E,N box from the Overpass API into dst (OSM XML).

    timeout_s: seconds without an answer before giving up (default: http_timeout()); the query asks
    the server to give up at the same time. progress(msg) hears about waits and retries.
    """
    w, s, e, n = bbox
    if (e - w) * (n - s) > MAX_BBOX_DEG2:
        raise ScenarioError(
            f"bounding box {w},{s},{e},{n} covers {(e - w) * (n - s):.2f} square degrees, more than Overpass "
            f"serves in one query ({MAX_BBOX_DEG2}); download an extract and use --osm FILE"
        )
    url = overpass_url(url)
    timeout_s = http_timeout() if timeout_s is None else timeout_s
    body = urllib.parse.urlencode({"data": overpass_query(bbox, timeout_s)}).encode()
    got = [0]  # bytes received so far, for the progress lines

    def message(elapsed: float) -> str:
        if got[0]:
            return f"downloading from Overpass at {url}… {got[0] / 1e6:.1f} MB, {elapsed:.0f} s"
        return f"waiting for Overpass at {url}… {elapsed:.0f} s (gives up after {timeout_s:g} s)"

    def attempt() -> None:
        got[0] = 0
        req = urllib.request.Request(url, data=body, method="POST", headers={"User-Agent": "reled-cosim"})
        try:
            with _reporting(progress, message), urllib.request.urlopen(req, timeout=timeout_s) as resp, \
                    open(dst, "wb") as fh:  # fmt: skip
                while chunk := resp.read(1 << 16):
                    fh.write(chunk)
                    got[0] += len(chunk)
        except urllib.error.HTTPError as exc:
            if exc.code in BUSY_STATUS:
                raise _Busy(exc.code, exc.reason, exc.headers.get("Retry-After")) from None
            detail = exc.read(300).decode("utf-8", "replace").strip().splitlines()
            tail = f": {detail[0][:200]}" if detail else ""
            raise ScenarioError(f"Overpass API at {url} answered HTTP {exc.code} {exc.reason}{tail}") from None
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise ScenarioError(f"cannot reach Overpass API at {url}: {exc.reason}") from None
            raise _too_slow("Overpass API", url, timeout_s) from None
        except TimeoutError:
            raise _too_slow("Overpass API", url, timeout_s) from None
        except (ConnectionError, OSError) as exc:
            raise ScenarioError(f"cannot reach Overpass API at {url}: {exc}") from None

    _with_retries(attempt, f"Overpass API at {url}", " or set COSIM_OVERPASS_URL to another instance", progress)
    remark = _overpass_remark(dst)
    if remark:
        raise ScenarioError(f"Overpass API at {url} did not complete the query: {remark}")


def _too_slow(what: str, url: str, timeout_s: float) -> ScenarioError:
    return ScenarioError(f"{what} at {url} did not answer within {timeout_s:g} s (set {TIMEOUT_ENV} to wait longer)")


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
    """--nominatim-url, else $COSIM_NOMINATIM_URL (checked); None means osmnx's default endpoint."""
    return _endpoint(explicit, "COSIM_NOMINATIM_URL", "--nominatim-url", "Nominatim")


def _raise_if_busy(response, *args, **kwargs):
    """A requests response hook: osmnx retries 429/504 itself, every minute and without end; we want a
    few short retries with progress instead, so the answer is taken away from osmnx as an exception."""
    if response.status_code in BUSY_STATUS:
        raise _Busy(response.status_code, response.reason, response.headers.get("Retry-After"))


def geocode_bbox(place: str, url: str | None = None, timeout_s: float | None = None,
                 progress=None) -> tuple[float, float, float, float]:  # fmt: skip
    """W,S,E,N of a place name, from Nominatim via osmnx (which also honours osmnx.settings).

    timeout_s and progress as for download_bbox; "busy" answers are retried a few times.
    """
    import osmnx as ox
    import requests
    from osmnx._errors import InsufficientResponseError, ResponseStatusCodeError

    s = ox.settings
    endpoint = nominatim_url(url) or s.nominatim_url
    timeout_s = http_timeout() if timeout_s is None else timeout_s
    saved = (s.nominatim_url, s.use_cache, s.log_console, s.requests_timeout, s.requests_kwargs)
    s.nominatim_url = endpoint
    s.use_cache = False  # osmnx would otherwise write ./cache into the user's working directory
    s.log_console = False
    s.requests_timeout = timeout_s
    s.requests_kwargs = {**s.requests_kwargs, "hooks": {"response": [_raise_if_busy]}}

    def message(elapsed: float) -> str:
        return f"waiting for Nominatim at {endpoint}… {elapsed:.0f} s (gives up after {timeout_s:g} s)"

    def attempt():
        with _reporting(progress, message):
            try:
                return ox.geocode_to_gdf(place)
            except TypeError:  # no polygon among the results: take the best match, its bounding box will do
                return ox.geocode_to_gdf(place, which_result=1)

    try:
        gdf = _with_retries(attempt, f"Nominatim at {endpoint}", " or set COSIM_NOMINATIM_URL to another instance",
                            progress)  # fmt: skip
    except InsufficientResponseError:
        raise ScenarioError(f"cannot geocode place {place!r}: Nominatim at {endpoint} found no match") from None
    except ResponseStatusCodeError as exc:
        raise ScenarioError(f"Nominatim at {endpoint} answered an error for {place!r}: {exc}") from None
    except requests.exceptions.Timeout:
        raise _too_slow("Nominatim", endpoint, timeout_s) from None
    except requests.exceptions.RequestException as exc:
        reason = getattr(exc, "args", [exc])[0]
        raise ScenarioError(f"cannot reach Nominatim at {endpoint}: {_short(reason)}") from None
    finally:
        s.nominatim_url, s.use_cache, s.log_console, s.requests_timeout, s.requests_kwargs = saved
    row = gdf.iloc[0]
    return check(row["bbox_west"], row["bbox_south"], row["bbox_east"], row["bbox_north"], place)


def check(w, s, e, n, place) -> tuple[float, float, float, float]:
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
