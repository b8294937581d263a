"""Demand that comes with the scenario: a `.sumocfg`, SUMO route/trip/flow files, or a trips table.

A researcher's calibrated scenario (RESCO's Cologne and Ingolstadt, TAPAS, InTAS, LuST, their own city)
is its demand as much as its net. The builder keeps that demand as the files say and only picks the
controlled agents out of it:

* every file is read element by element; vehicle types, named routes and distributions are kept as
  they are; `<flow>`s are expanded into the vehicles SUMO would insert (ids `flow.N`, SUMO's spacing for
  `period`/`vehsPerHour`/`number`; `probability` and `exp(...)` flows drawn from the scenario's seed);
* every edge the demand names must be in the net, and trips without a route must be routable: duarouter
  checks them at build time. They stay trips, so SUMO routes them at insertion exactly as the original
  run does (routed by duarouter instead, cologne8's mean route length moves from 749.6 m to 743.7 m);
* agents are passenger vehicles departing in the agent window whose origin and destination are
  connected on the passenger road graph, picked in an order drawn from the seed; each keeps its id,
  origin, destination and departure (and its own XML, so that it drives as written whenever a run
  uses fewer agents than were picked);
* `scale` multiplies the background (non-agent) vehicles: whole copies plus a seeded draw for the
  fraction; copies are named `<id>.scale<k>`.

Persons and containers are kept as background and are neither agents nor scaled.

How exact the copy is: with `--agents 0` a single file of trips and vehicles runs exactly as the
original `sumo -c` (RESCO cologne8 and ingolstadt21: identical trip statistics at the same seed). The
background is one file, sorted by departure, so where the original has several route files or flows,
SUMO draws the vehicles' random speed factors in another order (it reads several files in chunks of
time and creates flow vehicles when due): the runs then agree in distribution, and vehicle by vehicle
only without random draws (tests/test_scenario_import.py). Elements that a file has out of time order
are kept (SUMO itself would drop them with a warning).
"""

from __future__ import annotations

import copy
import csv
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenarios import sumotools
from scenarios.errors import ScenarioError

DEFINITIONS = {"vType", "vTypeDistribution", "route", "routeDistribution"}
VEHICLES = {"vehicle", "trip", "flow"}
FLOW_ONLY = ("begin", "end", "period", "vehsPerHour", "probability", "number")
DEFAULT_FLOW_END = 86400.0  # SUMO's default end of a flow without one
# A horizon left to the builder covers the demand: the last departure plus this long to finish trips.
HORIZON_MARGIN_S = 1800.0
# The longest simulation a scenario may hold: a week of traffic. A longer one is a departure in
# milliseconds or a date, and routing towards it would take duarouter and SUMO for ever.
MAX_HORIZON_S = 7 * 86400.0
# Options of an imported .sumocfg that the co-simulation keeps (the rest are inputs it rewrites,
# outputs it must not write into the cache, or settings the kernel owns: seed, begin, end, step length).
KEPT_SECTIONS = {"processing", "routing", "mesoscopic"}
KERNEL_OPTIONS = {"seed", "random", "begin", "end", "step-length", "no-step-log", "no-warnings"}
PASSENGER_TYPES = {"DEFAULT_VEHTYPE", "DEFAULT_RAILTYPE", "DEFAULT_PEDTYPE", "DEFAULT_BIKETYPE"}


def _xml_root(path: Path, tag: str | tuple[str, ...], what: str) -> ET.Element:
    """A SUMO XML file's root element, which must be <tag> (or one of several), or one clear error."""
    tags = (tag,) if isinstance(tag, str) else tag
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from None
    if root.tag not in tags:
        raise ScenarioError(f"{path} is not {what} (root element <{root.tag}>, expected <{tags[0]}>)")
    return root


# ---------------------------------------------------------------------------------------- .sumocfg
@dataclass
class SumoConfig:
    path: Path
    net: Path
    routes: list[Path]
    additional: list[Path]
    begin: float | None
    end: float | None
    options: dict[str, str] = field(default_factory=dict)  # kept options, name -> value
    dropped: list[str] = field(default_factory=list)  # options not carried over, for the manifest


def read_sumocfg(path: Path) -> SumoConfig:
    """The inputs and times of a SUMO configuration file (paths relative to it), or one clear error."""
    # <configuration> as people write it; <sumoConfiguration> as `sumo --save-configuration` writes it
    # (the scenario.sumocfg of every build here among them)
    root = _xml_root(path, ("configuration", "sumoConfiguration"), "a SUMO configuration")
    values: dict[str, tuple[str, str]] = {}
    for section in root:
        for opt in section:
            value = opt.get("value")
            if value is not None:
                values[opt.tag] = (section.tag, value)

    def files(key: str) -> list[Path]:
        text = values.get(key, ("", ""))[1]
        out = [(path.parent / p).resolve() for p in text.replace(",", " ").split()]
        missing = [str(p) for p in out if not p.is_file()]
        if missing:
            raise ScenarioError(f"{path}: {key} {', '.join(missing)} does not exist")
        return out

    nets = files("net-file")
    if len(nets) != 1:
        raise ScenarioError(f"{path} names no net-file" if not nets else f"{path} names several net files")
    routes = files("route-files")
    additional = files("additional-files")

    def number(key: str) -> float | None:
        if key not in values:
            return None
        try:
            return float(values[key][1])
        except ValueError:
            raise ScenarioError(f"{path}: {key} must be a number of seconds, got {values[key][1]!r}") from None

    kept, dropped = {}, []
    for key, (section, value) in values.items():
        if key in ("net-file", "route-files", "additional-files"):
            continue
        if section in KEPT_SECTIONS and key not in KERNEL_OPTIONS:
            kept[key] = value
        elif key not in ("begin", "end"):
            dropped.append(key)
    return SumoConfig(path, nets[0], routes, additional, number("begin"), number("end"), kept, sorted(dropped))


# ---------------------------------------------------------------------------------------- trips table
def trips_csv_to_xml(csv_path: Path, out: Path, edges: set[str]) -> dict[str, str]:
    """A trips table (id,from,to,depart[,vtype]) as a SUMO trip file; every row is checked first.
    Returns where each trip came from ("trips table FILE line N", by id) for later messages."""
    try:  # utf-8-sig: a spreadsheet's CSV starts with a byte-order mark, which is not part of the first column
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = {h.strip() for h in reader.fieldnames or ()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScenarioError(f"cannot read trips table {csv_path}: {exc}") from None
    need = {"id", "from", "to", "depart"}
    if not need <= header:
        raise ScenarioError(
            f"trips table {csv_path} needs the columns id,from,to,depart (optional vtype); it has {sorted(header)}"
        )
    if not rows:
        raise ScenarioError(f"trips table {csv_path} has no rows")
    seen: dict[str, str] = {}
    trips = []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        where = f"trips table {csv_path} line {line}"
        tid = (row["id"] or "").strip()
        if not tid:
            raise ScenarioError(f"{where}: empty id")
        if tid in seen:
            raise ScenarioError(f"{where}: duplicate id {tid!r}")
        seen[tid] = where
        for key in ("from", "to"):
            if (row[key] or "").strip() not in edges:
                raise ScenarioError(f"{where}: {key} edge {row[key]!r} is not in the net")
        try:
            depart = float(row["depart"])
        except (TypeError, ValueError):
            depart = float("nan")
        if not math.isfinite(depart) or depart < 0:
            raise ScenarioError(f"{where}: depart must be a number of seconds >= 0, got {row['depart']!r}")
        trips.append((depart, tid, row["from"].strip(), row["to"].strip(), (row.get("vtype") or "").strip()))
    trips.sort(key=lambda t: t[0])
    root = ET.Element("routes")
    for depart, tid, src, dst, vtype in trips:
        attrs = {"id": tid, "depart": f"{depart:.2f}", "from": src, "to": dst}
        if vtype:
            attrs["type"] = vtype
        ET.SubElement(root, "trip", attrs)
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="unicode")
    return seen


# ---------------------------------------------------------------------------------------- demand files
@dataclass
class Unit:
    """One top-level demand element after flow expansion: a vehicle, a trip, or a person/container."""

    elem: ET.Element
    depart: float | None  # None: not a number ("triggered", ...)
    source: str  # file it came from, for messages

    @property
    def id(self) -> str:
        return self.elem.get("id", "")


@dataclass
class Demand:
    definitions: list[ET.Element]
    units: list[Unit]
    files: list[dict]
    flows_expanded: int = 0


def read_demand(paths: list[Path], seed: int) -> Demand:
    """Every element of the route files in order, flows expanded into vehicles."""
    from scenarios.cache import file_digest

    rng = np.random.default_rng(seed)
    defs: list[ET.Element] = []
    units: list[Unit] = []
    info = []
    flows = 0
    for path in paths:
        root = _xml_root(path, "routes", "a SUMO route file")
        info.append({"path": str(path), "sha256": file_digest(path)})
        for el in _flattened(root):
            if el.tag in DEFINITIONS:
                defs.append(el)
            elif el.tag == "flow":
                for v in _expand_flow(el, rng, path):
                    units.append(Unit(v, float(v.get("depart")), str(path)))
                flows += 1
            elif el.tag in ("include",):
                raise ScenarioError(f"{path}: <include> is not supported; merge the included file into the demand")
            else:  # vehicle, trip, person, personFlow, container, ...
                units.append(Unit(el, _number(el.get("depart")), str(path)))
    ids: dict[str, str] = {}
    for u in units:
        if u.id and u.id in ids:
            raise ScenarioError(f"demand: id {u.id!r} appears twice ({ids[u.id]} and {u.source})")
        ids[u.id] = u.source
    return Demand(defs, units, info, flows)


def _flattened(root: ET.Element):
    """The file's top-level elements in order, with <interval> groups opened (the interval's begin and
    end become the defaults of the flows inside it)."""
    for el in root:
        if el.tag != "interval":
            yield el
            continue
        for child in el:
            if child.tag == "flow":
                child = copy.deepcopy(child)
                for key in ("begin", "end"):
                    if child.get(key) is None and el.get(key) is not None:
                        child.set(key, el.get(key))
            yield child


def _number(text: str | None) -> float | None:
    try:
        v = float(text) if text is not None else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def _expand_flow(flow: ET.Element, rng: np.random.Generator, path: Path) -> list[ET.Element]:
    fid = flow.get("id")
    where = f"{path}: flow {fid!r}"
    begin = _number(flow.get("begin", "0"))
    end = _number(flow.get("end")) if flow.get("end") is not None else None
    number = _number(flow.get("number")) if flow.get("number") is not None else None
    if begin is None or (flow.get("end") is not None and end is None):
        raise ScenarioError(f"{where}: begin/end must be numbers of seconds")
    period_text = flow.get("period")
    vph = _number(flow.get("vehsPerHour")) if flow.get("vehsPerHour") is not None else None
    prob = _number(flow.get("probability")) if flow.get("probability") is not None else None
    if end is None:
        end = DEFAULT_FLOW_END if number is None or (period_text is None and vph is None) else math.inf
    departs: list[float] = []
    limit = int(number) if number is not None else None
    if period_text is not None and period_text.startswith("exp("):
        rate = _number(period_text[4:-1])
        if rate is None or rate <= 0:
            raise ScenarioError(f"{where}: period {period_text!r} needs a positive rate")
        t = begin + rng.exponential(1.0 / rate)
        while t < end and (limit is None or len(departs) < limit):
            departs.append(t)
            t += rng.exponential(1.0 / rate)
    elif period_text is not None or vph is not None:
        period = _number(period_text) if period_text is not None else (3600.0 / vph if vph else None)
        if period is None or period <= 0:
            raise ScenarioError(f"{where}: period/vehsPerHour must be positive")
        i = 0
        while begin + i * period < end and (limit is None or i < limit):
            departs.append(begin + i * period)
            i += 1
    elif prob is not None:
        if not 0 < prob <= 1 or not math.isfinite(end):
            raise ScenarioError(f"{where}: probability must be in (0, 1] with an end time")
        for t in np.arange(begin, end, 1.0):
            if rng.random() < prob and (limit is None or len(departs) < limit):
                departs.append(float(t))
    elif number is not None:
        if not math.isfinite(end) or number <= 0:
            raise ScenarioError(f"{where}: number needs an end time")
        period = (end - begin) / number
        departs = [begin + i * period for i in range(int(number))]
    else:
        raise ScenarioError(f"{where} has none of period, vehsPerHour, probability, number")
    has_route = flow.get("route") is not None or flow.find("route") is not None
    out = []
    for i, depart in enumerate(departs):
        v = copy.deepcopy(flow)
        v.tag = "vehicle" if has_route else "trip"
        for key in FLOW_ONLY:
            v.attrib.pop(key, None)
        v.set("id", f"{fid}.{i}")
        v.set("depart", f"{depart:.2f}")
        out.append(v)
    return out


def check_edges(demand: Demand, edges: set[str]) -> None:
    """Every edge named by the demand is in the net: a clear error now, not a SUMO abort at run time."""
    bad: dict[str, str] = {}
    routes: dict[str, list[str]] = {}
    for el in demand.definitions:
        for r in [el] if el.tag == "route" else el.iter("route"):
            names = (r.get("edges") or "").split()
            if r.get("id"):
                routes[r.get("id")] = names
            for e in names:
                if e not in edges:
                    bad.setdefault(e, f"route {r.get('id')!r}")
    for u in demand.units:
        for e in _edges_named(u.elem):
            if e not in edges:
                bad.setdefault(e, f"{u.elem.tag} {u.id!r} in {u.source}")
    if bad:
        first = next(iter(bad.items()))
        raise ScenarioError(
            f"the demand uses {len(bad)} edge{'s' if len(bad) > 1 else ''} that are not in the net "
            f"(e.g. {first[0]!r}, used by {first[1]})"
        )


def _edges_named(el: ET.Element) -> list[str]:
    out = [el.get(k) for k in ("from", "to") if el.get(k)]
    out += (el.get("via") or "").split()
    for r in el.iter("route"):
        out += (r.get("edges") or "").split()
    for sub in el.iter():  # persons' walks and rides, stops on edges
        if sub is not el and sub.tag != "route":
            out += [sub.get(k) for k in ("from", "to", "edge") if sub.get(k)]
            out += (sub.get("edges") or "").split() if sub.tag in ("walk", "ride") else []
    return out


def check_routes(demand: Demand, net) -> None:
    """Every route the demand spells out is connected in the net, each edge leading to the next: SUMO
    refuses a disconnected route when it loads the vehicle, which would end every run at that moment."""
    following: dict[str, set[str]] = {}
    checked: set[tuple[str, ...]] = set()

    def first_gap(edges: tuple[str, ...]) -> tuple[str, str] | None:
        for a, b in zip(edges, edges[1:]):
            nxt = following.get(a)
            if nxt is None:
                nxt = following[a] = {e.getID() for e in net.getEdge(a).getOutgoing()}
            if b not in nxt:
                return a, b
        return None

    def spelled():
        for el in demand.definitions:
            for r in [el] if el.tag == "route" else el.iter("route"):
                yield f"route {r.get('id')!r}", r
        for u in demand.units:
            if u.elem.tag == "vehicle":
                for r in u.elem.iter("route"):
                    yield f"vehicle {u.id!r} in {u.source}", r

    for owner, r in spelled():
        edges = tuple((r.get("edges") or "").split())
        if edges in checked:
            continue
        gap = first_gap(edges)
        if gap is not None:
            raise ScenarioError(
                f"{owner}: the route is not connected: edge {gap[0]!r} does not lead to {gap[1]!r} in the net"
            )
        checked.add(edges)


def check_routable(net: Path, demand: Demand, window: tuple[float, float], work: Path, cwd: Path, log: Path) -> None:
    """duarouter routes the trips that have no route and depart within the simulation's (begin, end): one
    it cannot route is an error now (SUMO would abort the run with it). Trips departing outside the window
    never drive, and are not routed (duarouter would step its clock towards them, for ever where a
    departure is a typo). Its routes are not used: SUMO routes trips at insertion, as the original run."""
    trips = [
        u.elem for u in demand.units
        if u.elem.tag in ("trip", "flow") and (u.depart is None or window[0] <= u.depart <= window[1])
    ]  # fmt: skip
    if not trips:
        return
    probe = work / "routable.trips.xml"
    _write(probe, [d for d in demand.definitions if d.tag in ("vType", "vTypeDistribution")], trips)
    sumotools.run(
        [sumotools.binary("duarouter"), "-n", str(net), "--route-files", str(probe), "-o", str(work / "routable.rou.xml"),
         "--ignore-errors", "false", "--no-step-log", "true", "--no-warnings", "true", "--keep-vtype-distributions", "true"],
        "duarouter (checking that every trip can be routed)", cwd, log,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- agents
def passenger_types(demand: Demand) -> set[str]:
    """Vehicle types whose class is passenger (SUMO's default class)."""
    out = {"DEFAULT_VEHTYPE"}
    for d in demand.definitions:
        if d.tag == "vType" and d.get("vClass", "passenger") == "passenger":
            out.add(d.get("id"))
    return out


def route_edges(demand: Demand) -> dict[str, list[str]]:
    out = {}
    for d in demand.definitions:
        if d.tag == "route" and d.get("id"):
            out[d.get("id")] = (d.get("edges") or "").split()
    return out


def endpoints(u: Unit, named_routes: dict[str, list[str]]) -> tuple[str, str] | None:
    """Origin and destination edge of a plain vehicle or trip (None for anything an agent cannot be:
    stops, via points, TAZ or junction trips, route distributions)."""
    el = u.elem
    if el.tag not in ("vehicle", "trip") or el.find("stop") is not None or el.get("via"):
        return None
    child = el.find("route")
    if child is not None:
        edges = (child.get("edges") or "").split()
    elif el.get("route") is not None:
        edges = named_routes.get(el.get("route"), [])
    elif el.get("from") and el.get("to"):
        edges = [el.get("from"), el.get("to")]
    else:
        return None
    if len(edges) < 1 or edges[0] == edges[-1]:
        return None
    return edges[0], edges[-1]


@dataclass
class Choice:
    agents: list[dict]
    eligible: int
    window: tuple[float, float]


def choose_agents(demand: Demand, graph, *, agents: int | None, share: float | None, seed: int,
                  window: tuple[float, float]) -> Choice:  # fmt: skip
    """Agents picked from the demand: eligible vehicles in an order drawn from the seed, the first N kept
    (their lengths and free-flow times are the edge-only router's, as in `scenarios.trips.sample`)."""
    graph = graph.edges_only()
    types = passenger_types(demand)
    named = route_edges(demand)
    eligible = []
    for i, u in enumerate(demand.units):
        if u.depart is None or not window[0] <= u.depart <= window[1]:
            continue
        if u.elem.get("type", "DEFAULT_VEHTYPE") not in types:
            continue
        ends = endpoints(u, named)
        if ends is None or ends[0] not in graph.index or ends[1] not in graph.index:
            continue
        eligible.append((i, ends))
    want = agents if agents is not None else max(1, round((share or 0.0) * len(eligible)))
    if want == 0:
        return Choice([], len(eligible), window)
    if not eligible:
        raise ScenarioError(
            f"the demand has no passenger vehicle departing between {window[0]:g} s and {window[1]:g} s that an "
            "agent could drive (a plain vehicle or trip with a route, or from/to, on passenger roads)"
        )
    if want > len(eligible):
        raise ScenarioError(
            f"--agents {want}: the demand has only {len(eligible)} passenger vehicles departing between "
            f"{window[0]:g} s and {window[1]:g} s that an agent could drive"
        )
    order = np.random.default_rng(seed).permutation(len(eligible))
    chosen = []
    for k in order:
        i, (src, dst) = eligible[int(k)]
        o, d = graph.index[src], graph.index[dst]
        path = graph.path(o, d)
        if not path:
            continue
        u = demand.units[i]
        chosen.append(
            {
                "id": u.id,
                "from": src,
                "to": dst,
                "depart": u.depart,
                "length_m": round(float(graph.length[path].sum()), 1),
                "freeflow_s": round(float(graph.fftime[path].sum()), 1),
                "type": u.elem.get("type", "DEFAULT_VEHTYPE"),
                "vehicle": ET.tostring(u.elem, encoding="unicode").strip(),
            }
        )
        if len(chosen) == want:
            break
    if len(chosen) < want:
        raise ScenarioError(
            f"only {len(chosen)} of the {len(eligible)} eligible vehicles have a route on the passenger road graph; "
            f"{want} agents asked for"
        )
    return Choice(chosen, len(eligible), window)


# ---------------------------------------------------------------------------------------- background
def scaled(units: list[Unit], scale: float, seed: int) -> list[Unit]:
    """Vehicles multiplied by `scale` (whole copies and a seeded draw for the fraction); persons kept."""
    if scale == 1.0:
        return list(units)
    rng = np.random.default_rng([seed, 1])
    whole, frac = int(math.floor(scale)), scale - math.floor(scale)
    out = []
    for u in units:
        if u.elem.tag not in ("vehicle", "trip"):
            out.append(u)
            continue
        n = whole + (1 if rng.random() < frac else 0)
        for k in range(n):
            if k == 0:
                out.append(u)
            else:
                el = copy.deepcopy(u.elem)
                el.set("id", f"{u.id}.scale{k}")
                out.append(Unit(el, u.depart, u.source))
    return out


def write_background(path: Path, demand: Demand, units: list[Unit]) -> None:
    """Definitions first, then the units sorted by departure (SUMO reads a route file in time order);
    units without a numeric departure stay behind the unit before them."""
    last = -math.inf
    keyed = []
    for i, u in enumerate(units):
        if u.depart is not None:
            last = u.depart
        keyed.append((last, i, u.elem))
    keyed.sort(key=lambda k: (k[0], k[1]))
    _write(path, demand.definitions, [el for _, _, el in keyed])


def _write(path: Path, defs: list[ET.Element], elems: list[ET.Element]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<routes>\n')
        for el in [*defs, *elems]:
            el.tail = None
            fh.write("    " + ET.tostring(el, encoding="unicode").strip() + "\n")
        fh.write("</routes>\n")


# ---------------------------------------------------------------------------------------- fixed routes
TRIP_ENDS = ("from", "to", "via", "fromTaz", "toTaz", "fromJunction", "toJunction", "fromXY", "toXY",
             "fromLonLat", "toLonLat")  # fmt: skip


def record_insertion_routes(cwd: Path, sumocfg: str, route_files: list[Path], seed: int, out: Path, log: Path) -> dict:
    """One SUMO run of the whole demand as its files say (trips routed at insertion under SUMO's default
    device settings): the route every vehicle drove, by id (`--vehroute-output`, last route only)."""
    sumotools.run(
        [sumotools.binary("sumo"), "-c", sumocfg, "-r", ",".join(str(p) for p in route_files), "--seed", str(seed),
         "--vehroute-output", str(out), "--vehroute-output.last-route", "true",
         "--vehroute-output.write-unfinished", "true", "--no-step-log", "true", "--no-warnings", "true"],
        "sumo (recording the routes SUMO gives the trips at insertion)", cwd, log,
    )  # fmt: skip
    routes = {}
    for _, el in ET.iterparse(out):
        if el.tag == "vehicle":
            r = el.find("route")
            if r is not None and r.get("edges"):
                routes[el.get("id")] = r.get("edges")
            el.clear()
    return routes


def routed(elem: ET.Element, routes: dict[str, str]) -> ET.Element | None:
    """A `<trip>` as a `<vehicle>` on its recorded route (None: not a trip, or never inserted)."""
    if elem.tag != "trip" or elem.get("id") not in routes:
        return None
    el = copy.deepcopy(elem)
    el.tag = "vehicle"
    for key in TRIP_ENDS:
        el.attrib.pop(key, None)
    route = ET.Element("route", edges=routes[elem.get("id")])
    el.insert(0, route)
    return el


def fix_routes(background: Path, pool: list[dict], routes: dict[str, str]) -> int:
    """Rewrite the background file and the agent pool's vehicles (plain traffic when they are not agents)
    with the recorded routes, in place; returns how many trips of the background file are left to SUMO's
    insertion routing (never inserted in the recording)."""
    tree = ET.parse(background)
    root, left = tree.getroot(), 0
    for i, el in enumerate(list(root)):
        new = routed(el, routes)
        if new is not None:
            root[i] = new
        elif el.tag == "trip":
            left += 1
    _write(background, [], list(root))
    for row in pool:
        if row.get("vehicle"):
            el = ET.fromstring(row["vehicle"])
            new = routed(el, routes)
            if new is not None:
                row["vehicle"] = ET.tostring(new, encoding="unicode").strip()
    return left


def routed_at_insertion(background: Path) -> int:
    """Vehicles of the background file that SUMO routes when they enter (trips without a route)."""
    return sum(1 for _, el in ET.iterparse(background) if el.tag == "trip")


def counts_by_type(units: list[Unit]) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in units:
        key = u.elem.get("type", "DEFAULT_VEHTYPE") if u.elem.tag in ("vehicle", "trip") else u.elem.tag
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
