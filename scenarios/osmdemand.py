"""Background demand weighted by what OpenStreetMap says is there, instead of uniform random trips.

Uniform randomTrips starts and ends as many trips on a quiet side street as on a block of flats or a
shopping street. Here every OSM feature that houses people or draws them becomes weight on the road
edges next to it, and randomTrips draws origins and destinations from those weights:

* homes: residential buildings (building=apartments/house/...) and landuse=residential areas;
* activities: shop=*, office=*, trip-attracting amenity=* (school, hospital, restaurant, ...),
  commercial/retail/office/school/... buildings and landuse=commercial/retail areas.

A building counts with its floor area (footprint x building:levels) at the mean of its outline's
nodes; a landuse area is cut into cells of LANDUSE_CELL_M so that a large neighbourhood spreads over
all of its streets, not onto the one nearest its centre; a point (a shop node) counts as a small unit
of POINT_FLOOR_M2. Each of these is snapped to the nearest passenger edge and shared with the edges
of the same street (both directions of a two-way road) within SAME_STREET_M of it.

The demand itself is three parts, all drawn by SUMO's randomTrips.py (and routed, validated, by its
duarouter), so the suite keeps one trip generator:

* local trips with origins weighted towards homes and destinations towards activities (a morning:
  HOME_ORIGIN_SHARE / ACTIVITY_DEST_SHARE), on top of a uniform BASE_SHARE that stands for what OSM
  does not tag (untyped buildings, parking);
* through traffic, THROUGH_SHARE of all vehicles, entering and leaving at the net's fringe
  (randomTrips --fringe-factor max);
* both over a morning-peak profile: randomTrips takes one period per equal slice of [begin, end),
  so the rate follows MORNING_PROFILE instead of staying flat.

An OSM file that cannot be read, a net without a geo-projection, or an area where OSM has no home and
no activity falls back to uniform local trips (randomTrips' own edge choice); the provenance says so.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from scenarios import sumotools
from scenarios.errors import ScenarioError
from scenarios.trips import MIN_ORIGIN_EDGE_M

VCLASS = "passenger"
PREFIX = "bg"  # local trips: bg0, bg1, ... as the uniform background always had
THROUGH_PREFIX = "bgt"  # through trips: bgt0, ... (same vType as the local ones)
VTYPE = f"{PREFIX}_{VCLASS}"  # the id randomTrips gives its vType for --prefix bg --vehicle-class passenger

# --- what counts as a home or an activity (OSM wiki tag values; the common ones, not every rare one)
HOME_BUILDINGS = {
    "residential", "apartments", "house", "detached", "semidetached_house", "terrace", "dormitory",
    "bungalow", "farm", "houseboat",
}  # fmt: skip
ACTIVITY_BUILDINGS = {
    "commercial", "retail", "office", "supermarket", "kiosk", "school", "university", "college",
    "kindergarten", "hospital", "public", "civic", "government", "hotel", "industrial", "train_station",
}  # fmt: skip
# amenity values people drive to in a morning (benches, parking, waste baskets ... are not destinations)
ACTIVITY_AMENITIES = {
    "school", "university", "college", "kindergarten", "childcare", "hospital", "clinic", "doctors",
    "dentist", "pharmacy", "restaurant", "cafe", "fast_food", "bar", "pub", "nightclub", "bank",
    "library", "theatre", "cinema", "arts_centre", "community_centre", "townhall", "courthouse",
    "post_office", "police", "fire_station", "marketplace", "place_of_worship", "social_facility",
    "embassy", "fuel", "car_wash", "veterinary",
}  # fmt: skip
HOME_LANDUSE = {"residential"}
ACTIVITY_LANDUSE = {"commercial", "retail", "education"}

# --- weights (floor area in m², so buildings, areas and points add up in one unit)
DEFAULT_LEVELS = 1.0  # no guess where building:levels is missing: the footprint counts once
MAX_LEVELS = 100.0  # a building:levels typo (e.g. 500) must not outweigh a whole city
POINT_FLOOR_M2 = 150.0  # a shop/office/amenity node: about one small city-centre unit (chosen, not measured)
# Floor area per m² of a landuse area: 1.0 is a low floor-area ratio for a residential or commercial
# block (5-7 storey perimeter blocks reach 2-4); low on purpose, since typed buildings inside the area
# are counted again on their own.
LANDUSE_FLOOR_RATIO = 1.0
LANDUSE_CELL_M = 25.0  # landuse areas are cut into cells this wide (about a building plot)

# --- snapping features to edges
SAMPLE_M = 2.0  # edge shapes are sampled this densely for the KD-tree (nearest-point error <= 1 m)
SAME_STREET_M = 6.0  # edges this much farther than the nearest one are the same street (other direction)
MAX_SNAP_M = 250.0  # a feature farther than this from every edge lies outside the net: dropped

# --- the morning mix (chosen, not fitted: in household travel surveys most morning-peak car trips
# start at home and end at work, school or an errand; the rest are non-home-based)
HOME_ORIGIN_SHARE = 0.75  # of the OSM-weighted origins, this share is drawn by homes, the rest by activities
ACTIVITY_DEST_SHARE = 0.75  # of the OSM-weighted destinations, this share by activities, the rest by homes
BASE_SHARE = 0.10  # of the local origins/destinations, uniform over all edges (what OSM does not tag)
# Through traffic (fringe to fringe): 20-30 % is the usual order for a central-area cordon; 25 % chosen.
THROUGH_SHARE = 0.25
THROUGH_MIN_SPEED = (
    8.0  # m/s: fringe edges slower than 30 km/h (service roads, living streets) carry no through traffic
)
# Relative rate per equal slice of the horizon, mean 1: a weekday morning peak's shape (a rise to the
# peak two thirds in, then easing off), drawn by hand, not fitted to counts; peak slice 1.25 x mean.
MORNING_PROFILE = (0.75, 0.95, 1.15, 1.25, 1.05, 0.85)


# ---------------------------------------------------------------------------------------- OSM weights
@dataclass
class OsmWeights:
    """Floor area (m²) of homes and of activities snapped to each edge, and what went into it."""

    homes: dict[str, float] = field(default_factory=dict)
    activities: dict[str, float] = field(default_factory=dict)
    features: dict[str, int] = field(default_factory=lambda: {"homes": 0, "activities": 0})
    dropped: int = 0  # points (features, landuse cells) farther than MAX_SNAP_M from every edge


def candidate_edges(net) -> list:
    """Edges a background trip may start or end on: normal passenger edges, not inside a roundabout
    (randomTrips' own rule) and long enough to insert a car (scenarios.trips' rule for agents)."""
    roundabout = {eid for r in net.getRoundabouts() for eid in r.getEdges()}
    return [
        e
        for e in net.getEdges(withInternal=False)
        if e.allows(VCLASS) and e.getID() not in roundabout and e.getLength() >= MIN_ORIGIN_EDGE_M
    ]


def osm_weights(net, osm_xml: Path) -> OsmWeights:
    """Read homes and activities from an OSM file and snap them to the net's candidate edges.

    Raises RuntimeError (pyosmium's) for an unreadable file and for a net without a geo-projection.
    """
    import numpy as np

    homes, activities, counts = _read_features(net, osm_xml)
    out = OsmWeights(features=counts)
    snapper = _Snapper(candidate_edges(net))
    for pts, target in ((homes, out.homes), (activities, out.activities)):
        if pts:
            xs, ys, ws = (np.asarray(v, dtype=float) for v in zip(*pts))
            out.dropped += snapper.add(xs, ys, ws, target)
    return out


def _read_features(net, osm_xml: Path) -> tuple[list, list, dict[str, int]]:
    """(x, y, floor m²) points of homes and of activities in net coordinates, and how many OSM
    objects each category drew from. pyosmium assembles areas (closed ways and multipolygons)."""
    import numpy as np
    import osmium

    homes: list[tuple[float, float, float]] = []
    activities: list[tuple[float, float, float]] = []
    counts = {"homes": 0, "activities": 0}
    net.getGeoProj()  # RuntimeError now if the net cannot place lon/lat

    def xy(lons, lats):
        x, y = net.convertLonLat2XY(np.asarray(lons), np.asarray(lats))
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    from scenarios.osm import open_osm  # the file with its format named when the file name does not say it

    fp = osmium.FileProcessor(open_osm(Path(osm_xml)), osmium.osm.NODE | osmium.osm.WAY | osmium.osm.RELATION)
    for obj in fp.with_locations().with_areas():
        tags = obj.tags
        if obj.is_node():
            if _is_activity_point(tags) and obj.location.valid():
                x, y = xy([obj.location.lon], [obj.location.lat])
                activities.append((float(x[0]), float(y[0]), POINT_FLOOR_M2))
                counts["activities"] += 1
            continue
        if not obj.is_area():
            continue  # ways and relations come again as assembled areas
        building, landuse = tags.get("building"), tags.get("landuse")
        is_home = building in HOME_BUILDINGS or landuse in HOME_LANDUSE
        is_activity = (
            building in ACTIVITY_BUILDINGS or landuse in ACTIVITY_LANDUSE or _is_activity_point(tags)
        ) and not is_home
        if not (is_home or is_activity):
            continue
        rings = _rings(obj, xy)
        if not rings:
            continue
        target = homes if is_home else activities
        if building and building != "no":
            target.append(_building_point(rings, _levels(tags)))
        else:
            target.extend(_area_cells(rings, LANDUSE_FLOOR_RATIO))
        counts["homes" if is_home else "activities"] += 1
        if is_home and (tags.get("shop") or tags.get("office") or tags.get("amenity") in ACTIVITY_AMENITIES):
            activities.append(_building_point(rings, 0.0, POINT_FLOOR_M2))  # a shop on the ground floor
            counts["activities"] += 1
    return homes, activities, counts


def _is_activity_point(tags) -> bool:
    return bool(tags.get("shop") or tags.get("office") or tags.get("amenity") in ACTIVITY_AMENITIES)


def _levels(tags) -> float:
    try:
        levels = float(tags.get("building:levels", "").split(";")[0].replace(",", "."))
    except ValueError:
        return DEFAULT_LEVELS
    return min(max(levels, 1.0), MAX_LEVELS) if math.isfinite(levels) else DEFAULT_LEVELS


def _rings(area, xy) -> list[tuple]:
    """[(outer ring xy array, [inner ring xy arrays])] of an osmium Area, skipping broken rings."""
    import numpy as np

    out = []
    for outer in area.outer_rings():
        pts = [(n.lon, n.lat) for n in outer if n.location.valid()]
        if len(pts) < 3:
            continue
        ring = np.column_stack(xy(*zip(*pts)))
        holes = []
        for inner in area.inner_rings(outer):
            hp = [(n.lon, n.lat) for n in inner if n.location.valid()]
            if len(hp) >= 3:
                holes.append(np.column_stack(xy(*zip(*hp))))
        out.append((ring, holes))
    return out


def _shoelace(ring) -> float:
    import numpy as np

    x, y = ring[:, 0], ring[:, 1]
    return abs(float((x * np.roll(y, -1) - y * np.roll(x, -1)).sum())) / 2.0


def _area_m2(rings) -> float:
    return max(sum(_shoelace(r) - sum(_shoelace(h) for h in holes) for r, holes in rings), 0.0)


def _building_point(rings, levels: float, fixed_m2: float | None = None) -> tuple[float, float, float]:
    """A building as one point: the mean of its outline's nodes, weight footprint x levels."""
    import numpy as np

    nodes = np.vstack([r for r, _ in rings])
    weight = fixed_m2 if fixed_m2 is not None else _area_m2(rings) * levels
    return float(nodes[:, 0].mean()), float(nodes[:, 1].mean()), weight


def _area_cells(rings, ratio: float) -> list[tuple[float, float, float]]:
    """A landuse area as the centres of the LANDUSE_CELL_M grid cells inside it, sharing area x ratio
    equally (an area smaller than a cell is one point at its nodes' mean)."""
    import numpy as np
    from matplotlib.path import Path as MplPath

    total = _area_m2(rings) * ratio
    if total <= 0:
        return []
    cells = []
    for ring, holes in rings:
        (x0, y0), (x1, y1) = ring.min(axis=0), ring.max(axis=0)
        gx = np.arange(x0 + LANDUSE_CELL_M / 2, x1, LANDUSE_CELL_M)
        gy = np.arange(y0 + LANDUSE_CELL_M / 2, y1, LANDUSE_CELL_M)
        if not len(gx) or not len(gy):
            continue
        grid = np.array(np.meshgrid(gx, gy)).reshape(2, -1).T
        inside = MplPath(ring).contains_points(grid)
        for hole in holes:
            inside &= ~MplPath(hole).contains_points(grid)
        cells.append(grid[inside])
    pts = np.vstack(cells) if cells else np.empty((0, 2))
    if not len(pts):
        x, y, _ = _building_point(rings, 0.0, 0.0)
        return [(x, y, total)]
    return [(float(x), float(y), total / len(pts)) for x, y in pts]


class _Snapper:
    """Nearest edges of points: a KD-tree (scipy) on the edges' shapes sampled every SAMPLE_M."""

    def __init__(self, edges: list) -> None:
        import numpy as np
        from scipy.spatial import cKDTree

        self.ids = [e.getID() for e in edges]
        pts, owner = [], []
        for i, e in enumerate(edges):
            shape = np.asarray([p[:2] for p in e.getShape()], dtype=float)
            for a, b in zip(shape[:-1], shape[1:]):
                n = max(int(math.ceil(float(np.hypot(*(b - a))) / SAMPLE_M)), 1)
                t = np.linspace(0.0, 1.0, n + 1)[:, None]
                pts.append(a + t * (b - a))
                owner.extend([i] * (n + 1))
        self.owner = np.asarray(owner)
        self.tree = cKDTree(np.vstack(pts)) if pts else None

    def add(self, xs, ys, ws, target: dict[str, float]) -> int:
        """Add each point's weight to its nearest edge(s) in target; the number of points dropped."""
        import numpy as np

        if self.tree is None:
            return len(xs)
        xy = np.column_stack([xs, ys])
        d0, _ = self.tree.query(xy, k=1, distance_upper_bound=MAX_SNAP_M)
        near = np.isfinite(d0)
        for p, d, w in zip(xy[near], d0[near], ws[near]):
            edges = sorted({int(self.owner[j]) for j in self.tree.query_ball_point(p, d + SAME_STREET_M)})
            share = w / len(edges)
            for i in edges:
                target[self.ids[i]] = target.get(self.ids[i], 0.0) + share
        return int((~near).sum())


# ---------------------------------------------------------------------------------------- demand
def generate(net_file: Path, osm_xml: Path, out_routes: Path, *, veh_per_hour: float, horizon: float, seed: int,
             min_distance_m: float, work: Path, log: Path, cwd: Path) -> dict:  # fmt: skip
    """Write a routed background route file weighted by OSM homes and activities; its provenance.

    out_routes gets passenger vehicles with routes (duarouter-validated), unique ids (bg<n> local,
    bgt<n> through), sorted by departure; their number is round(veh_per_hour x horizon / 3600) less
    any trip randomTrips could not find or route. Relative paths are taken from cwd (the build folder);
    work is scratch space; log is the build log the SUMO tools append to.
    """
    import sumolib

    t0 = time.perf_counter()
    net_file, osm_xml, out_routes, work, log = (cwd / p for p in (net_file, osm_xml, out_routes, work, log))
    work.mkdir(parents=True, exist_ok=True)
    net = sumolib.net.readNet(str(net_file))
    prov: dict = {"method": "osm-weighted", "fallback": None}

    n_total = max(int(round(veh_per_hour * horizon / 3600.0)), 0)
    fringe_ok = _has_fringe(net)
    through_share = THROUGH_SHARE if fringe_ok else 0.0
    n_through = int(round(n_total * through_share))
    n_local = n_total - n_through
    slices = _slices(horizon, len(MORNING_PROFILE))
    local_counts, through_counts = _split(n_local, MORNING_PROFILE), _split(n_through, MORNING_PROFILE)
    prov["through_note"] = None if fringe_ok else f"no fringe edge faster than {THROUGH_MIN_SPEED:g} m/s"
    common = ["-n", str(net_file), "-b", "0", "-e", f"{horizon:.6g}", "--min-distance", f"{min_distance_m:g}",
              "--validate", "--seed", str(seed), "--vehicle-class", VCLASS, "--threads", "1"]  # fmt: skip

    # The through trips do not depend on OSM: randomTrips draws them in a second process meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        through = None
        if n_through:
            args = [*common, "--prefix", THROUGH_PREFIX, "-p", *_periods(through_counts, slices),
                    "--fringe-factor", "max", "--fringe-threshold", f"{THROUGH_MIN_SPEED:g}", "--lanes"]  # fmt: skip
            through = pool.submit(_random_trips, args, work / "through", "randomTrips (through traffic)", cwd, log)

        weights, reason = None, None
        try:
            weights = osm_weights(net, osm_xml)
        except (RuntimeError, OSError) as exc:  # pyosmium's parse errors; a net without geo-projection
            reason = f"OSM not usable ({str(exc).strip()[:160]})"
        if weights is not None:
            prov["osm_features"] = dict(weights.features)
            prov["osm_points_outside_net"] = weights.dropped
            if not weights.homes and not weights.activities:
                reason = "no home or activity in the OSM data near the net's roads"
        if reason:
            prov.update(method="uniform", fallback=reason)

        parts = []
        if n_local:
            args = [*common, "--prefix", PREFIX, "-p", *_periods(local_counts, slices)]
            if not reason:
                prefix = work / "osmweights"
                prov["weighted_edges"] = _write_weights(prefix, candidate_edges(net), weights, horizon)
                args += ["--weights-prefix", str(prefix)]
            parts.append(_random_trips(args, work / "local", "randomTrips (local trips)", cwd, log))
        if through is not None:
            try:
                parts.append(through.result())
            except ScenarioError as exc:  # the local trips still make a background; say why it lacks through traffic
                prov["through_note"] = str(exc)

    n_written, n_through_written = _merge(parts, out_routes)
    prov.update(
        through_share=through_share,
        profile=[
            [b, e, round((lc + tc) * 3600.0 / (e - b), 3)]
            for (b, e), lc, tc in zip(slices, local_counts, through_counts)
        ],
        vehicles_requested=n_total,
        vehicles=n_written,
        vehicles_through=n_through_written,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return prov


def _has_fringe(net) -> bool:
    """Whether the net has edges where through traffic can enter and leave (randomTrips' fringe test)."""
    fast = [e for e in net.getEdges(withInternal=False) if e.allows(VCLASS) and e.getSpeed() > THROUGH_MIN_SPEED]
    enter = any(not e.getAllowedIncoming(VCLASS) and e.getAllowedOutgoing(VCLASS) for e in fast)
    leave = any(not e.getAllowedOutgoing(VCLASS) and e.getAllowedIncoming(VCLASS) for e in fast)
    return enter and leave


def _slices(horizon: float, n: int) -> list[tuple[float, float]]:
    """The equal slices randomTrips cuts [0, horizon) into for n periods."""
    return [(horizon * i / n, horizon * (i + 1) / n) for i in range(n)]


def _split(n: int, profile) -> list[int]:
    """n vehicles over the slices in proportion to the profile (largest remainder: the sum stays n)."""
    total = sum(profile)
    exact = [n * f / total for f in profile]
    counts = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _periods(counts: list[int], slices) -> list[str]:
    """randomTrips periods that give exactly counts[i] departures in slice i.

    randomTrips departs at begin, begin + p, ... while < end: ceil(width / p) vehicles. A period a
    hair above width / n gives n whatever the float rounding; 0 means no vehicle in that slice.
    """
    return [repr((e - b) / n * (1 + 1e-9)) if n else "0" for n, (b, e) in zip(counts, slices)]


def _write_weights(prefix: Path, edges: list, w: OsmWeights, horizon: float) -> dict[str, int]:
    """PREFIX.src.xml / PREFIX.dst.xml in SUMO's edgedata format for randomTrips --weights-prefix.

    Origins need a way out (an allowed outgoing edge), destinations a way in. Each category is
    normalised to 1 over the eligible edges, mixed by the morning shares, and BASE_SHARE spread evenly.
    A category OSM has nothing of lends its share to the other.
    """
    counts = {"residential": len(w.homes), "activity": len(w.activities)}
    roles = (
        ("src", lambda e: e.getAllowedOutgoing(VCLASS), HOME_ORIGIN_SHARE),
        ("dst", lambda e: e.getAllowedIncoming(VCLASS), 1.0 - ACTIVITY_DEST_SHARE),
    )
    for role, usable, home_share in roles:
        ids = sorted(e.getID() for e in edges if usable(e))
        eligible = set(ids)
        h = _normalised({k: v for k, v in w.homes.items() if k in eligible})
        a = _normalised({k: v for k, v in w.activities.items() if k in eligible})
        if not h:
            home_share = 0.0
        elif not a:
            home_share = 1.0
        base = BASE_SHARE / len(ids) if ids else 0.0
        values = {
            k: base + (1.0 - BASE_SHARE) * (home_share * h.get(k, 0.0) + (1.0 - home_share) * a.get(k, 0.0))
            for k in ids
        }
        lines = [f'        <edge id={quoteattr(k)} value="{v:.9g}"/>\n' for k, v in values.items() if v > 0]
        text = f'<edgedata>\n    <interval id="{role}" begin="0" end="{horizon:.6g}">\n{"".join(lines)}    </interval>\n</edgedata>\n'  # fmt: skip
        Path(f"{prefix}.{role}.xml").write_text(text, encoding="utf-8")
        counts[role] = sum(1 for k in ids if h.get(k, 0.0) + a.get(k, 0.0) > 0)
    return counts


def _normalised(d: dict[str, float]) -> dict[str, float]:
    total = sum(d.values())
    return {k: v / total for k, v in d.items()} if total > 0 else {}


def _random_trips(args: list[str], stem: Path, what: str, cwd: Path, log: Path) -> Path:
    routes = Path(f"{stem}.rou.xml")
    args = [*args, "-o", f"{stem}.trips.xml", "-r", str(routes)]
    sumotools.python_tool("randomTrips.py", args, what, cwd, log)
    return routes


def _merge(parts: list[Path], out: Path) -> tuple[int, int]:
    """One route file from randomTrips' outputs: one vType, vehicles sorted by departure (local before
    through at equal times), no generator comments (no timestamps: same seed, same bytes)."""
    import xml.etree.ElementTree as ET

    vehicles = []
    for order, path in enumerate(parts):
        if not path.is_file():
            continue
        for i, veh in enumerate(ET.parse(path).getroot().iter("vehicle")):
            veh.set("type", VTYPE)
            vehicles.append((float(veh.get("depart")), order, i, veh))
    vehicles.sort(key=lambda v: v[:3])
    root = ET.Element("routes")
    ET.SubElement(root, "vType", {"id": VTYPE, "vClass": VCLASS})
    root.extend(v[3] for v in vehicles)
    ET.indent(root, "    ")
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        fh.write(b"<!-- background demand: scenarios/osmdemand.py (randomTrips.py + duarouter) -->\n")
        fh.write(ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n")
    tmp.replace(out)
    through = sum(1 for v in vehicles if v[3].get("id", "").startswith(THROUGH_PREFIX))
    return len(vehicles), through


# ---------------------------------------------------------------------------------------- analysis
def trip_ends(routes: Path) -> tuple[Counter[str], Counter[str]]:
    """(origins, destinations): how many vehicles of a route file start / end on each edge.

    Reads vehicles with an inline <route edges=...> and <trip from= to=> (flows are not counted).
    """
    import xml.etree.ElementTree as ET

    origins: Counter[str] = Counter()
    destinations: Counter[str] = Counter()
    for _, elem in ET.iterparse(routes, events=("end",)):
        if elem.tag == "vehicle":
            route = elem.find("route")
            edges = route.get("edges", "").split() if route is not None else []
            if edges:
                origins[edges[0]] += 1
                destinations[edges[-1]] += 1
            elem.clear()
        elif elem.tag == "trip":
            if elem.get("from") and elem.get("to"):
                origins[elem.get("from")] += 1
                destinations[elem.get("to")] += 1
            elem.clear()
    return origins, destinations
