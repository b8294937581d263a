"""Scenario recipes: what to build, as data.

A recipe is one small TOML file per city in ``scenarios/recipes/`` (or anywhere, passed by path), or an
ad-hoc recipe made from a command-line source (``--osm``, ``--bbox``, ``--place``, ``--net``). It names
the OSM source, the netconvert options, the demand and the seed; nothing else influences a build, so the
canonical JSON of a recipe (plus the SUMO version and the source's bytes) is the cache key.

Recipe file layout::

    name = "helsinki"
    description = "..."
    seed = 42
    [source]      kind = "bundled" (package, file) | "file" (path) | "bbox" (bbox = [W, S, E, N])
                  | "place" (place) | "net" (path) | "sumocfg" (path: a SUMO scenario with its demand)
    [netconvert]  options = ["--geometry.remove", ...]      (ignored for kind = "net" and "sumocfg")
    [demand]      generated: background_veh_per_hour  (number, or "auto": scaled to the km of road)
                  agents, agent_pool, agent_depart_begin, agent_depart_end, min_trip_m, horizon
                  background_min_distance_m (optional, default 300), scale (optional, default 1),
                  background (optional: "osm", the default, or "uniform")
                  imported (kind = "sumocfg", or routes/trips given with kind = "net"):
                  routes = [route/trip/flow files], trips = [CSV tables], agents ("auto" or >= 0) or
                  agent_share (0 < F <= 1), agent_depart_begin, agent_depart_end ("auto": the last
                  departure; both relative to the scenario's begin), horizon ("auto": the .sumocfg's end,
                  else the last departure plus a margin), scale, background_routing (optional:
                  "insertion", the default: trips without a route are routed by SUMO when they enter, on
                  its live times, as in a plain run of the files; "fixed": the builder records the routes
                  SUMO gives them in one run of the whole demand, and every episode replays them)
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import limits
from scenarios.errors import ScenarioError
from scenarios.sources import SOURCES, source_of

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_CITY = "helsinki"


@dataclass
class ScenarioConfig:
    """The scenario section of an experiment's configuration tree: which city the experiment runs on."""

    name: str = DEFAULT_CITY  # shipped city, recipe .toml, .osm(.pbf), .net.xml or .sumocfg file, built folder
    demand_scale: float | None = field(
        default=None, metadata=limits(ge=0)
    )  # multiply the scenario's background demand (a stress test); null: as built
    # training on several cities (`--scenario a,b,c` fills it too): each training episode draws one, by the
    # run's seed and the episode's number; empty: `name` alone
    names: tuple[str, ...] = ()

    def cities(self) -> list[str]:
        """The cities of the experiment: `names`, else `name` (which `--scenario a,b` makes a list)."""
        if self.names:
            return [str(n).strip() for n in self.names]
        return [n.strip() for n in self.name.split(",")] if "," in self.name else [self.name]

    def overrides(self) -> dict:
        """Keyword overrides for scenarios.ensure_built (a scaled demand is its own build in the cache)."""
        if self.demand_scale is not None and not 0 <= self.demand_scale < float("inf"):
            raise ScenarioError(f"scenario.demand_scale must be a number >= 0, got {self.demand_scale}")
        return {"demand_scale": self.demand_scale} if self.demand_scale not in (None, 1, 1.0) else {}


# netconvert options measured to give clean nets from raw OSM (see NOTES.md). Traffic lights stay
# static: actuated controllers have been seen to hang libsumo at the first step.
DEFAULT_NETCONVERT = (
    "--geometry.remove", "--roundabouts.guess", "--ramps.guess", "--junctions.join",
    "--tls.guess-signals", "--tls.discard-simple", "--tls.join", "--tls.default-type", "static",
    "--keep-edges.by-vclass", "passenger", "--remove-edges.isolated",
    "--output.street-names", "--output.original-names", "--no-turnarounds",
)  # fmt: skip

# Demand for a city nobody has tuned yet. "auto" background traffic scales with the size of the net
# (AUTO_VEH_PER_KM_HOUR per km of road, clamped), so a small district does not gridlock and a big
# city is not empty.
ADHOC_DEMAND = {
    "background_veh_per_hour": "auto",
    "agents": 50,
    "agent_pool": 300,
    "agent_depart_begin": 0,
    "agent_depart_end": 900,
    "min_trip_m": 300,
    "horizon": 3600,
    "background_min_distance_m": 300,
}
AUTO_VEH_PER_KM_HOUR = 20.0
AUTO_VEH_PER_HOUR_RANGE = (60.0, 3600.0)
DEFAULT_SEED = 42

DEMAND_KEYS = set(ADHOC_DEMAND)
# background: "osm" weighs origins and destinations by OSM homes and activities over a morning profile
# (scenarios/osmdemand.py); "uniform" is randomTrips at a flat rate (a bare --net always is).
DEMAND_OPTIONAL = {"background_min_distance_m": 300, "scale": 1, "background": "osm"}
BACKGROUND_KINDS = ("osm", "uniform")
# Demand imported from the scenario's own files (see scenarios/imported.py): agents are picked from it.
# "auto" agents: IMPORTED_AUTO_AGENTS, or every eligible vehicle if the demand has fewer.
IMPORTED_DEMAND = {
    "agents": "auto",
    "agent_depart_begin": 0,
    "agent_depart_end": "auto",
    "horizon": "auto",
    "scale": 1,
    "routes": [],
    "trips": [],
}
IMPORTED_OPTIONAL = {"agent_share", "background_routing"}
# how imported vehicles without a route (trips) get one: see the module docstring
BACKGROUND_ROUTING = ("insertion", "fixed")
IMPORTED_AUTO_AGENTS = 50
MAX_NAME = 100
TOP_KEYS = {"name", "description", "seed", "source", "netconvert", "demand"}

# Keyword overrides accepted by the builder's API and CLI, and the demand field each one sets.
OVERRIDES = {
    "agents": "agents",
    "agent_pool": "agent_pool",
    "veh_per_hour": "background_veh_per_hour",
    "horizon": "horizon",
    "min_trip_m": "min_trip_m",
    "agent_share": "agent_share",
    "demand_scale": "scale",
    "demand": "background",
    "background_routing": "background_routing",
}
GENERATED_ONLY = {"agent_pool", "veh_per_hour", "min_trip_m", "demand"}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: dict
    demand: dict
    seed: int = DEFAULT_SEED
    netconvert: tuple[str, ...] = DEFAULT_NETCONVERT
    description: str = ""
    origin: str = field(default="", compare=False)  # where the recipe came from, for messages only

    @property
    def kind(self) -> str:
        return self.source["kind"]

    @property
    def net_source(self) -> bool:
        """The source is a SUMO net (a --net file, or a net shipped in a package): no OSM steps."""
        return is_net_source(self.source)

    @property
    def imported(self) -> bool:
        """The demand comes from the scenario's files rather than being generated."""
        return is_imported(self.source, self.demand)

    def to_dict(self) -> dict:
        """The canonical form: stored as manifest["recipe"] and hashed for the cache key."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "source": dict(sorted(self.source.items())),
            "netconvert": {"options": list(self.netconvert)},
            "demand": dict(sorted(self.demand.items())),
        }

    def with_overrides(self, *, seed: int | None = None, name: str | None = None, **kw) -> Recipe:
        """A copy with demand/seed fields replaced; unknown keywords are a ScenarioError."""
        unknown = set(kw) - set(OVERRIDES)
        if unknown:
            raise ScenarioError(
                f"unknown scenario override(s) {sorted(unknown)}; known: seed, name, {', '.join(OVERRIDES)}"
            )
        demand = dict(self.demand)
        given = {k for k, v in kw.items() if v is not None}
        if self.imported:
            wrong = sorted(given & GENERATED_ONLY)
            if wrong:
                flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
                raise ScenarioError(f"{flags}: not for imported demand ({self.name} brings its own vehicles)")
            if "agents" in given:
                demand.pop("agent_share", None)
            if "agent_share" in given:
                demand["agents"] = "auto"
        elif "agent_share" in given:
            raise ScenarioError("--agent-share picks agents from imported demand (--sumocfg, --routes, --trips)")
        elif "background_routing" in given:
            raise ScenarioError(
                "--background-routing is for imported demand (--sumocfg, --routes, --trips); a generated "
                "background is routed when it is built (duarouter) and drives those routes"
            )
        elif kw.get("agents") == 0:
            raise ScenarioError(
                "--agents 0 (a plain run of the given demand) is for imported demand; "
                f"{self.name} generates its demand around at least one agent"
            )
        for key, value in kw.items():
            if value is not None:
                demand[OVERRIDES[key]] = value
        if kw.get("agents") is not None and kw.get("agent_pool") is None and not self.imported:
            # asking for more agents than the pool holds grows the pool rather than failing
            demand["agent_pool"] = max(int(demand["agent_pool"]), int(kw["agents"]))
        data = self.to_dict()
        data["demand"] = demand
        if seed is not None:
            data["seed"] = seed
        if name is not None:
            data["name"] = name
        return from_dict(data, origin=self.origin)


# ---------------------------------------------------------------------------------------- loading
def shipped() -> dict[str, Path]:
    """Shipped recipe names -> files."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.toml"))}


def load(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a recipe TOML file by path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith(".toml") or (path.is_file() and path.suffix == ".toml"):
        if not path.is_file():
            raise ScenarioError(f"recipe file {path} does not exist")
        return from_file(path)
    known = shipped()
    if text not in known:
        from scenarios import cache

        built = sorted({m.get("name") for _, m in cache.entries()} - set(known) - {None})
        also = f"; built: {', '.join(built[:10])}" if built else ""
        raise ScenarioError(
            f"unknown city {text!r}; known cities: {', '.join(known)}{also} "
            "(or use --osm FILE, --bbox W,S,E,N, --place NAME, --net FILE, --sumocfg FILE)"
        )
    return from_file(known[text])


def from_file(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read recipe {path}: {exc}") from None
    data.setdefault("name", path.stem)
    src = data.get("source")
    if isinstance(src, dict) and src.get("kind") in ("file", "net", "sumocfg") and isinstance(src.get("path"), str):
        # relative paths in a recipe file are relative to that file, not to the working directory
        src["path"] = str((path.parent / Path(src["path"]).expanduser()).resolve())
    demand = data.get("demand")
    for key in ("routes", "trips"):
        if isinstance(demand, dict) and isinstance(demand.get(key), list):
            demand[key] = [str((path.parent / Path(p).expanduser()).resolve()) if isinstance(p, str) else p
                           for p in demand[key]]  # fmt: skip
    return from_dict(data, origin=str(path))


def from_dict(data: dict, origin: str = "") -> Recipe:
    """Validate a recipe mapping (TOML or manifest["recipe"]) into a Recipe."""
    where = f"recipe {origin or data.get('name', '?')}"
    data = copy.deepcopy(data)

    def bad(msg: str) -> ScenarioError:
        return ScenarioError(f"{where}: {msg}")

    extra = set(data) - TOP_KEYS
    if extra:
        raise bad(f"unknown key(s) {sorted(extra)}; expected {sorted(TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise bad(f"name must be letters, digits, '-', '_' or '.', got {name!r}")
    if len(name) > MAX_NAME:  # it becomes part of a folder name (with a hash and, while building, a pid)
        raise bad(f"name must be at most {MAX_NAME} characters, got {len(name)}")
    seed = data.get("seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad(f"seed must be a non-negative integer, got {seed!r}")

    source = data.get("source")
    if not isinstance(source, dict) or source.get("kind") not in SOURCES:
        raise bad(f"[source] needs kind = one of {', '.join(SOURCES)}")
    kind = source["kind"]
    keys = SOURCES[kind].keys
    missing, extra = keys - set(source), set(source) - keys - {"kind"}
    if missing or extra:
        raise bad(f"[source] kind={kind!r} takes exactly {sorted(keys)}")
    source = SOURCES[kind].normalise(source)

    nc = data.get("netconvert", {"options": list(DEFAULT_NETCONVERT)})
    opts = nc.get("options") if isinstance(nc, dict) else None
    if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts) or set(nc) - {"options"}:
        raise bad("[netconvert] must be options = [list of strings]")
    if any("actuated" in o for o in opts):
        raise bad("actuated traffic lights are not supported (they hang libsumo); keep them static")

    given = data.get("demand") or {}
    if not isinstance(given, dict):
        raise bad("[demand] must be a table")
    if is_imported(source, given):
        demand = {**IMPORTED_DEMAND, **given}
        known = set(IMPORTED_DEMAND) | IMPORTED_OPTIONAL
        extra = set(demand) - known
        if extra:
            raise bad(f"[demand] of imported demand takes {sorted(known)}; unknown {sorted(extra)}")
        _check_imported(demand, source, bad)
    else:
        if is_net_source(source):  # a bare SUMO net has no OSM data to weigh the demand by
            if given.get("background", "uniform") != "uniform":
                raise bad("a SUMO net (--net) has no OSM data: its background demand can only be uniform")
            given = {**given, "background": "uniform"}
        demand = {**DEMAND_OPTIONAL, **given}
        known = DEMAND_KEYS | set(DEMAND_OPTIONAL)
        missing, extra = DEMAND_KEYS - set(demand), set(demand) - known
        if missing or extra:
            raise bad(
                f"[demand] needs exactly {sorted(DEMAND_KEYS)}; missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        _check_demand(demand, bad)

    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise bad("description must be a string")
    return Recipe(name=name, source=source, demand=demand, seed=seed, netconvert=tuple(opts),
                  description=desc, origin=origin)  # fmt: skip


def is_net_source(source: dict) -> bool:
    return source_of(source["kind"]).is_net(source)


def is_imported(source: dict, demand: dict) -> bool:
    return source_of(source["kind"]).sumocfg or bool(demand.get("routes")) or bool(demand.get("trips"))


def _check_imported(d: dict, source: dict, bad) -> None:
    if not source_of(source["kind"]).net:
        raise bad("route files and trip tables need a SUMO net (kind = net or sumocfg): their edge ids are the net's")
    for key in ("routes", "trips"):
        files = d[key]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise bad(f"[demand].{key} must be a list of file paths")
        for f in files:
            if not Path(f).is_file():
                raise bad(f"[demand].{key}: {f} does not exist")
    if source.get("kind") == "net" and not (d["routes"] or d["trips"]):
        raise bad("[demand] of a net needs routes or trips")
    number = _number_checker(d, bad)
    if "agent_share" in d:
        v = d["agent_share"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            raise bad(f"[demand].agent_share (--agent-share) must be in (0, 1], got {v!r}")
        if d["agents"] != "auto":
            raise bad("[demand] takes agents or agent_share, not both")
    if d["agents"] != "auto":
        number("agents", 0, integer=True)
    number("agent_depart_begin", 0)
    if d["agent_depart_end"] != "auto":
        number("agent_depart_end", 0)
        if d["agent_depart_end"] < d["agent_depart_begin"]:
            raise bad("[demand] needs agent_depart_begin <= agent_depart_end")
    if d["horizon"] != "auto":
        number("horizon", 1)
    number("scale", 0)
    if d.get("background_routing", "insertion") not in BACKGROUND_ROUTING:
        raise bad(
            f"[demand].background_routing (--background-routing) must be one of {', '.join(BACKGROUND_ROUTING)}, "
            f"got {d['background_routing']!r}"
        )


def _number_checker(d: dict, bad):
    def number(key: str, lo: float, integer: bool = False) -> None:
        v = d[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= lo
        if integer:
            ok = ok and float(v).is_integer()
        if not ok:
            kind = "an integer" if integer else "a number"
            raise bad(f"[demand].{key} must be {kind} >= {lo}, got {v!r}")
        if float(v).is_integer():  # canonical: 900 and 900.0 must hash alike (CLI floats, TOML ints)
            d[key] = int(v)

    return number


def _check_demand(d: dict, bad) -> None:
    number = _number_checker(d, bad)
    if d["background_veh_per_hour"] != "auto":
        number("background_veh_per_hour", 0)
    number("agents", 1, integer=True)
    number("agent_pool", 1, integer=True)
    number("agent_depart_begin", 0)
    number("agent_depart_end", 0)
    number("min_trip_m", 0)
    number("horizon", 1)
    number("background_min_distance_m", 0)
    number("scale", 0)
    if d["background"] not in BACKGROUND_KINDS:
        raise bad(
            f"[demand].background (--demand) must be one of {', '.join(BACKGROUND_KINDS)}, got {d['background']!r}"
        )
    if d["agent_pool"] < d["agents"]:
        raise bad(f"[demand].agent_pool ({d['agent_pool']}) must be >= agents ({d['agents']})")
    if not d["agent_depart_begin"] <= d["agent_depart_end"] < d["horizon"]:
        raise bad("[demand] needs agent_depart_begin <= agent_depart_end < horizon")


# ---------------------------------------------------------------------------------------- ad hoc
def adhoc(kind: str, value: str, name: str | None = None, *, routes: list[str] | None = None,
          trips: list[str] | None = None) -> Recipe:  # fmt: skip
    """A recipe for a command-line source, with the ad-hoc default demand (or, with route files or trip
    tables, or for a .sumocfg, the demand imported from them)."""
    src = source_of(kind)
    if (routes or trips) and not src.net:
        flag = "--routes" if routes else "--trips"
        raise ScenarioError(
            f"{flag} needs --net or --sumocfg: route files and trip tables name the edges of a SUMO net"
        )
    demand_files = {}
    for key, flag, files in (("routes", "--routes", routes), ("trips", "--trips", trips)):
        resolved = []
        for f in files or []:
            p = Path(f).expanduser().resolve()
            if not p.is_file():
                raise ScenarioError(f"{flag} file {f} does not exist")
            resolved.append(str(p))
        if resolved:
            demand_files[key] = resolved
    source, default_name, desc = src.adhoc(value)
    data = {
        "name": name or default_name,
        "description": desc,
        "seed": DEFAULT_SEED,
        "source": source,
        "netconvert": {"options": [] if src.net else list(DEFAULT_NETCONVERT)},
        "demand": dict(IMPORTED_DEMAND, **demand_files) if src.sumocfg or demand_files else dict(ADHOC_DEMAND),
    }
    return from_dict(data, origin=f"{src.flag} {value}")


def auto_veh_per_hour(road_km: float) -> float:
    lo, hi = AUTO_VEH_PER_HOUR_RANGE
    return float(round(min(hi, max(lo, AUTO_VEH_PER_KM_HOUR * road_km))))
