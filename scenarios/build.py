"""The OSM -> SUMO scenario builder and its entry point for the rest of the suite, `ensure_built`.

Pipeline (each step's output is the next one's input, all inside a temporary folder in the cache):

1. source   bundled extract / local file as is; bbox and place downloaded from the Overpass API
            (a place is geocoded to its bounding box first); a SUMO net is copied and skips 2-3
2. osm      pyosmium: any OSM format -> OSM XML, checking it is OSM and has drivable roads
3. net      netconvert on the raw OSM (signals and turn restrictions survive; an osmnx export loses them)
4. agents   the controlled-agent trip pool, sampled from the seed on the passenger routing graph
5. traffic  randomTrips.py + duarouter (--validate) for the background vehicles
6. config   scenario.sumocfg, written by sumo itself (--save-configuration), relative paths
7. map      map.png
8. manifest manifest.json, written last; then one atomic rename publishes the folder (see cache.py)

Agents are sampled before background traffic because a net where no trip can be routed should fail
in a second, not after the slowest step. The cache-hit path (recipe -> hash -> folder exists) imports
only the standard library and this package's light modules.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from scenarios import cache, sumotools
from scenarios import recipe as recipes
from scenarios.errors import ScenarioError
from scenarios.recipe import Recipe
from scenarios.scenario import CAR_SPACE_M, Scenario, read_manifest, vehicle_capacity
from scenarios.sources import source_of

Progress = Callable[[str], None]

FILES = {
    "net": "net.net.xml",
    "background": "background.rou.xml",
    "agents": "agents.json",
    "sumocfg": "scenario.sumocfg",
    "map": "map.png",
}
# randomTrips: favour trips that enter/leave at the net's fringe, as through traffic does (NOTES.md)
FRINGE_FACTOR = 5


# ---------------------------------------------------------------------------------------- entry points
def ensure_built(name_or_path: str | Path | Recipe = recipes.DEFAULT_CITY, *, force: bool = False,
                 progress: Progress | None = None, overpass_url: str | None = None,
                 nominatim_url: str | None = None, **overrides) -> Scenario:  # fmt: skip
    """The built scenario for a shipped city name, a recipe .toml, an OSM or net file, a built folder,
    a cache entry's name or a Recipe, building it first if the cache does not hold it.

    overrides: seed, agents, agent_pool, veh_per_hour, horizon, min_trip_m, name. A built folder with
    overrides is rebuilt from the recipe in its manifest.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    target = resolve(name_or_path)
    if isinstance(target, Path):
        if not overrides and not force:
            return Scenario.load(target)
        recipe = read_manifest(target).get("recipe")
        if not isinstance(recipe, dict):
            raise ScenarioError(f"{target / 'manifest.json'} holds no recipe to rebuild from")
        target = recipes.from_dict(recipe, origin=str(target))
    if overrides:
        target = target.with_overrides(**overrides)
    return build(target, force=force, progress=progress, overpass_url=overpass_url, nominatim_url=nominatim_url)


def resolve(name_or_path: str | Path | Recipe) -> Recipe | Path:
    """What a user-given scenario reference means: a Recipe to build, or the Path of a built folder."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    text = str(name_or_path).strip()
    if not text:
        raise ScenarioError("empty scenario name")
    if text in recipes.shipped() and "/" not in text:
        return recipes.load(text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise ScenarioError(f"{path} is not a built scenario (no manifest.json)")
        return path
    if text.endswith(".toml"):
        return recipes.load(path)
    if path.is_file():
        low = path.name.lower()
        if low.endswith((".net.xml", ".net.xml.gz")):
            return recipes.adhoc("net", text)
        if low.endswith(".sumocfg"):
            return recipes.adhoc("sumocfg", text)
        return recipes.adhoc("file", text)
    for folder, manifest in cache.entries():
        if folder.name == text:
            return _cache_entry(folder, manifest)
    for folder, manifest in cache.entries():  # newest first
        if manifest.get("name") == text:
            return _cache_entry(folder, manifest)
    if "/" in text or text.endswith((".osm", ".pbf", ".xml", ".gz", ".bz2")):
        raise ScenarioError(f"{text} does not exist")
    return recipes.load(text)  # raises "unknown city ... known cities: ..."


def _cache_entry(folder: Path, manifest: dict) -> Recipe | Path:
    """A cache entry named by the user: its folder, or its recipe when files have gone missing from it,
    so that it is rebuilt like any other cache miss (a folder given by path is not rebuilt silently)."""
    if cache.complete(folder):
        return folder
    try:
        return recipes.from_dict(manifest["recipe"], origin=str(folder))
    except (KeyError, TypeError, ScenarioError):
        return folder  # no usable recipe: Scenario.load says what is wrong with the folder


def source_digest(r: Recipe) -> str | None:
    """sha256 of the source's bytes for file-based sources (None for downloads: the recipe is the key).
    Imported demand adds its files' bytes: a .sumocfg with every file it names, route files, trip tables."""
    path = source_path(r)
    if path is None:
        return None
    files = [path]
    if source_of(r.kind).sumocfg:
        from scenarios.imported import read_sumocfg

        cfg = read_sumocfg(path)
        files += [cfg.net, *cfg.routes, *cfg.additional]
    if r.imported:
        files += [Path(f) for f in (*r.demand["routes"], *r.demand["trips"])]
    digests = [cache.file_digest(f) for f in files]
    if len(digests) == 1:
        return digests[0]
    import hashlib

    return hashlib.sha256(" ".join(digests).encode()).hexdigest()


def source_path(r: Recipe) -> Path | None:
    """The local file a recipe is built from (None for a download)."""
    return source_of(r.kind).path(r.source, r.name)


def build(r: Recipe, *, force: bool = False, progress: Progress | None = None,
          overpass_url: str | None = None, nominatim_url: str | None = None) -> Scenario:  # fmt: skip
    """Build a recipe into the cache (or return the cached build) and load it."""
    digest = source_digest(r)
    key = cache.build_hash(r.to_dict(), digest)
    final = cache.entry(r.name, key)
    if not force and cache.complete(final):
        return Scenario.load(final)
    source_of(r.kind).check_endpoints(overpass_url, nominatim_url)  # fails now, not after a temp folder exists
    cache.clean_stale()
    tmp = cache.new_temp(r.name, key)
    try:
        _Build(r, tmp, key, digest, progress, overpass_url, nominatim_url).run()
        if final.exists():  # forced, or damaged by hand: move the old build aside so the new one takes its name
            old = cache.new_temp(r.name + "-old", key)
            old.rmdir()
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        cache.publish(tmp, final)
    except BaseException:  # Ctrl-C included: never leave a half-built folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Scenario.load(final)


# ---------------------------------------------------------------------------------------- the pipeline
class _Build:
    def __init__(self, r: Recipe, out: Path, key: str, digest: str | None, progress: Progress | None,
                 overpass_url: str | None, nominatim_url: str | None) -> None:  # fmt: skip
        self.r, self.out, self.key, self.digest = r, out, key, digest
        self.progress = progress or (lambda msg: None)
        self.overpass_url, self.nominatim_url = overpass_url, nominatim_url
        self.work = out / "work"
        self.work.mkdir()
        self.log = out / "build.log"
        self.timings: dict[str, float] = {}
        self.source_info: dict = {"kind": r.kind}
        self.counts: dict = {}
        self.generated: dict | None = None  # how the background demand was made (manifest["generated"])
        self.background_routing: dict | None = None  # manifest["background_routing"] of an imported build

    @contextmanager
    def step(self, name: str, message: str):
        """Report a step to the progress callback and time it (the manifest keeps the timings)."""
        self.progress(f"{self.r.name}: {message}")
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0

    def run(self) -> None:
        if self.r.imported:
            self.run_imported()
            return
        d = self.r.demand
        if self.r.net_source:
            with self.step("source", "copying SUMO net"):
                self.copy_net()
        else:
            with self.step("source", "reading OSM source"):
                raw = self.fetch()
            with self.step("osm", "converting OSM to XML (pyosmium)"):
                self.osm_to_xml(raw)
            with self.step("net", "building the SUMO net (netconvert)"):
                self.netconvert()
        with self.step("graph", "reading the net"):
            net, graph = self.read_net()
        self.check_agent_counts()
        with self.step("agents", f"sampling {d['agent_pool']} agent trips"):
            from scenarios import trips

            pool = trips.sample(
                graph, pool=d["agent_pool"], need=d["agents"], seed=self.r.seed,
                depart_begin=d["agent_depart_begin"], depart_end=d["agent_depart_end"], min_trip_m=d["min_trip_m"],
            )  # fmt: skip
            (self.out / FILES["agents"]).write_text(json.dumps(pool.trips, indent=1))
            self.counts["agent_pool"] = len(pool.trips)
        with self.step("traffic", "routing background traffic (randomTrips + duarouter)"):
            veh_per_hour = self.background(graph, pool.trips[: d["agents"]])
        with self.step("config", "writing scenario.sumocfg"):
            self.sumocfg()
        with self.step("map", "drawing the map"):
            from scenarios import mapplot

            title = f"{self.r.name}: {self.counts['edges']} edges, {self.counts['road_km']:.1f} km of road"
            mapplot.draw(net, self.out / FILES["map"], title, self.attribution()[0], pool.trips[: d["agents"]],
                         trip_ends=self.trip_ends())  # fmt: skip
        shutil.rmtree(self.work, ignore_errors=True)
        self.write_manifest(veh_per_hour)

    def run_imported(self) -> None:
        """A SUMO scenario with its own demand: net (and additional files) copied, agents picked from the
        demand, the rest written back as background (scenarios/imported.py)."""
        from scenarios import imported

        cfg = None
        with self.step("source", "copying the SUMO scenario"):
            if source_of(self.r.kind).sumocfg:
                cfg = imported.read_sumocfg(source_path(self.r))
                self.source_info.update(path=str(cfg.path), net=str(cfg.net), sha256=self.digest)
                self.copy_net(cfg.net)
                self.copy_additional(cfg.additional)
            else:
                self.copy_net()
        with self.step("graph", "reading the net"):
            net, graph = self.read_net()
        with self.step("demand", "importing the demand"):
            info = self.import_demand(net, graph, cfg)
        with self.step("config", "writing scenario.sumocfg"):
            self.sumocfg(info["time"], cfg)
        pool = json.loads((self.out / FILES["agents"]).read_text())
        background = self.out / FILES["background"]
        mode = self.r.demand.get("background_routing", "insertion")
        if mode == "fixed":
            with self.step("routes", "recording the routes SUMO gives the trips at insertion"):
                rows = sorted((r for r in pool if r.get("vehicle")), key=lambda r: r["depart"])
                whole = self.work / "pool.rou.xml"
                whole.write_text("<routes>\n" + "".join(f"    {r['vehicle']}\n" for r in rows) + "</routes>\n")
                routes = imported.record_insertion_routes(
                    self.out, FILES["sumocfg"], [background, whole], self.r.seed, self.work / "vehroutes.xml", self.log
                )
                left = imported.fix_routes(background, pool, routes)
                (self.out / FILES["agents"]).write_text(json.dumps(pool, indent=1))
        else:
            left = imported.routed_at_insertion(background)
        self.background_routing = {"mode": mode, "routed_at_insertion": left}
        with self.step("map", "drawing the map"):
            from scenarios import mapplot

            title = f"{self.r.name}: {self.counts['edges']} edges, {self.counts['road_km']:.1f} km of road"
            mapplot.draw(
                net, self.out / FILES["map"], title, self.attribution()[0], pool[:50], trip_ends=self.trip_ends()
            )
        shutil.rmtree(self.work, ignore_errors=True)
        self.write_manifest(0.0, imported=info)

    def import_demand(self, net, graph, cfg) -> dict:
        from scenarios import imported

        d = self.r.demand
        paths = list(cfg.routes) if cfg is not None else []
        paths += [Path(p) for p in d["routes"]]
        edges = {e.getID() for e in net.getEdges()}
        rows: dict[str, str] = {}  # trips-table trip id -> "trips table FILE line N"
        for i, table in enumerate(d["trips"]):
            xml = self.work / f"trips-{i}.xml"
            rows.update(imported.trips_csv_to_xml(Path(table), xml, edges))
            paths.append(xml)
        if not paths:
            raise ScenarioError(f"{self._source_label()} names no route files: there is no demand to import")
        demand = imported.read_demand(paths, self.r.seed)
        imported.check_edges(demand, edges)
        imported.check_routes(demand, net)
        dated = [u for u in demand.units if u.depart is not None]
        departs = [u.depart for u in dated]
        if cfg is not None and cfg.begin is not None:
            begin = cfg.begin
        else:
            begin = float(int(min(departs))) if departs else 0.0
        last = max(departs) if departs else begin
        if d["horizon"] != "auto":
            end, how = begin + float(d["horizon"]), f"begin {begin:g} s + --horizon {float(d['horizon']):g} s"
        elif cfg is not None and cfg.end is not None:
            end, how = cfg.end, f"the end in {cfg.path.name}"
        else:
            end, how = last + imported.HORIZON_MARGIN_S, "the last departure + 30 min"
        if end <= begin:
            raise ScenarioError(
                f"{self._source_label()}: the simulation ends ({end:g} s) before it begins ({begin:g} s)"
            )

        def where(u) -> str:
            return rows.get(u.id) or f"{u.elem.tag} {u.id!r} in {u.source}"

        if end - begin > imported.MAX_HORIZON_S:
            latest = max(dated, key=lambda u: u.depart)
            raise ScenarioError(
                f"{where(latest)}: departure {latest.depart:g} s makes the simulation {end - begin:g} s long ({how}), "
                f"more than the {imported.MAX_HORIZON_S:g} s (7 days) a scenario may last; departures are seconds "
                "(milliseconds or a date by mistake?)"
            )
        late = [u for u in dated if u.id in rows and u.depart > end]
        if late:
            u = min(late, key=lambda u: u.depart)
            raise ScenarioError(
                f"{where(u)}: departure {u.depart:g} s is after the simulation's end {end:g} s ({how}): the trip "
                f"would never drive{f' (and {len(late) - 1} more rows)' if len(late) > 1 else ''}"
            )
        imported.check_routable(self.out / FILES["net"], demand, (begin, end), self.work, self.out, self.log)
        w_end = last if d["agent_depart_end"] == "auto" else begin + float(d["agent_depart_end"])
        window = (begin + float(d["agent_depart_begin"]), min(w_end, end))
        agents = d["agents"]
        if agents == "auto" and "agent_share" not in d:
            eligible = imported.choose_agents(demand, graph, agents=0, share=None, seed=self.r.seed, window=window)
            agents = min(recipes.IMPORTED_AUTO_AGENTS, eligible.eligible)
        cap = vehicle_capacity(self.counts["lane_km"])
        if agents != "auto" and agents > cap:
            raise ScenarioError(
                f"--agents {agents} is more than {self.r.name}'s roads can hold: {self.counts['lane_km']} km of "
                f"lanes fit at most {cap} cars at once ({CAR_SPACE_M:g} m per car)"
            )
        choice = imported.choose_agents(
            demand, graph, agents=None if agents == "auto" else int(agents), share=d.get("agent_share"),
            seed=self.r.seed, window=window,
        )  # fmt: skip
        (self.out / FILES["agents"]).write_text(json.dumps(choice.agents, indent=1))
        chosen = {a["id"] for a in choice.agents}
        rest = [u for u in demand.units if u.id not in chosen]
        background = imported.scaled(rest, float(d["scale"]), self.r.seed)
        imported.write_background(self.out / FILES["background"], demand, background)
        vehicles = [u for u in background if u.elem.tag in ("vehicle", "trip")]
        self.counts.update(agents=len(choice.agents), agent_pool=len(choice.agents), background_vehicles=len(vehicles))
        return {
            "files": demand.files,
            "flows_expanded": demand.flows_expanded,
            "vehicles_by_type": imported.counts_by_type(demand.units),
            "eligible_agents": choice.eligible,
            "agent_window": list(window),
            "agents_chosen": len(choice.agents),
            "agent_share": d.get("agent_share"),
            "scale": d["scale"],
            "background_by_type": imported.counts_by_type(background),
            "sumo_options": cfg.options if cfg is not None else {},
            "dropped_options": cfg.dropped if cfg is not None else [],
            "additional_files": [p.name for p in (cfg.additional if cfg is not None else [])],
            "time": {"begin": begin, "end": end, "last_departure": last},
        }

    def copy_additional(self, files: list[Path]) -> None:
        """Additional files (signal programs, detectors, vTypes) next to the net, under their own names."""
        if not files:
            return
        folder = self.out / "additional"
        folder.mkdir()
        for i, f in enumerate(files):
            shutil.copyfile(f, folder / f"{i:02d}-{f.name}")

    # ---------------------------------------------------------------- steps
    def fetch(self) -> Path:
        from scenarios import osm

        src = source_of(self.r.kind)
        if not src.downloads:
            path = source_path(self.r)
            self.source_info.update({k: v for k, v in self.r.source.items() if k != "kind"})
            self.source_info["path"] = str(path)
            self.source_info["sha256"] = self.digest
            return path

        def say(msg: str) -> None:
            self.progress(f"{self.r.name}: {msg}")

        bbox = src.bbox(self.r.source, self.nominatim_url, say)
        if "place" in self.r.source:
            self.source_info.update(place=self.r.source["place"], nominatim_url=osm.nominatim_url(self.nominatim_url))
        url = osm.overpass_url(self.overpass_url)
        say(f"downloading OSM for bbox {','.join(f'{v:g}' for v in bbox)} from {url}")
        dst = self.work / "download.osm"
        osm.download_bbox(bbox, dst, url, progress=say)
        self.source_info.update(bbox=list(bbox), overpass_url=url,
                                downloaded_at=_now(), sha256=cache.file_digest(dst))  # fmt: skip
        return dst

    def osm_to_xml(self, raw: Path) -> None:
        from scenarios import osm

        label = source_of(self.r.kind).download_label(self.r.source, self.source_info.get("bbox"))
        summary = osm.to_osm_xml(raw, self.work / "input.osm", label)
        self.source_info["osm"] = {"nodes": summary.nodes, "ways": summary.ways, "relations": summary.relations,
                                   "drivable_ways": summary.drivable_ways, "signal_nodes": summary.signals}  # fmt: skip

    def netconvert(self) -> None:
        args = [sumotools.binary("netconvert"), "--osm-files", "work/input.osm", "-o", FILES["net"],
                *self.r.netconvert]  # fmt: skip
        sumotools.run(args, "netconvert", self.out, self.log)

    def copy_net(self, src: Path | None = None) -> None:
        src = src or source_path(self.r)
        dst = self.out / FILES["net"]
        opener = gzip.open if _is_gzip(src) else open
        try:
            with opener(src, "rb") as fin, open(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        except (OSError, EOFError) as exc:
            raise ScenarioError(f"cannot read net file {src}: {exc}") from None
        root = _root_tag(dst)
        if root != "net":
            raise ScenarioError(f"{src} is not a SUMO net ({'root element <' + root + '>' if root else 'not XML'})")
        self.source_info.update(path=str(src), sha256=self.digest)

    def read_net(self):
        import sumolib

        from scenarios.roadgraph import RoadGraph

        path = self.out / FILES["net"]
        if source_of(self.r.kind).sumocfg:
            label = self.source_info.get("net", path)
        else:
            label = self.source_info.get("path", path) if self.r.net_source else "netconvert's output"
        try:
            net = sumolib.net.readNet(str(path))
        except Exception as exc:  # sumolib raises SAX errors and assorted parse errors
            raise ScenarioError(f"{label} is not a readable SUMO net: {str(exc).strip()[:200]}") from None
        edges = [e for e in net.getEdges() if not e.isSpecial()]
        if not edges:
            if self.r.net_source:
                raise ScenarioError(f"{label} has no roads")
            n = self.source_info.get("osm", {}).get("drivable_ways", "?")
            raise ScenarioError(
                f"netconvert kept no road for cars from {self._source_label()} ({n} drivable OSM ways, "
                "all dropped as isolated or closed to passenger cars)"
            )
        graph = RoadGraph.from_net(net)
        if len(graph.edges) == 0:
            raise ScenarioError(f"{label} has no edge that passenger cars may use")
        self.counts.update(
            edges=len(edges),
            passenger_edges=len(graph.edges),
            junctions=len(net.getNodes()),
            signals=len(net.getTrafficLights()),
            signalized_junctions=sum(n.getType().startswith("traffic_light") for n in net.getNodes()),
            road_km=round(sum(e.getLength() for e in edges) / 1000.0, 2),
        )
        lane_m = sum(lane.getLength() for e in edges for lane in e.getLanes() if lane.allows("passenger"))
        self.counts["lane_km"] = round(lane_m / 1000.0, 2)
        return net, graph

    def check_agent_counts(self) -> None:
        """Refuse agent counts the net cannot hold, before the pool is sampled (100 000 trips take ~20 s on
        kouvola) and long before a run would crawl with them."""
        d, cap = self.r.demand, vehicle_capacity(self.counts["lane_km"])
        # The pool is only sampled, never all on the road at once: the ad-hoc default pool is always
        # allowed, so that a small net still builds with the default demand.
        limits = {"agents": cap, "agent_pool": max(cap, recipes.ADHOC_DEMAND["agent_pool"])}
        for key, flag in (("agents", "--agents"), ("agent_pool", "--agent-pool")):
            if d[key] > limits[key]:
                raise ScenarioError(
                    f"{flag} {d[key]} ([demand].{key}) is more than {self.r.name}'s roads can hold: "
                    f"{self.counts['lane_km']} km of lanes fit at most {cap} cars at once ({CAR_SPACE_M:g} m per car)"
                )

    def background(self, graph, agent_trips: list[dict]) -> float:
        """The background traffic: OSM-weighted or uniform randomTrips at the recipe's rate; where the
        recipe leaves the rate to the builder ("auto"), the highest rate the net carries together with
        the agents (scenarios/calibrate.py), starting from the per-km estimate."""
        d = self.r.demand
        auto = d["background_veh_per_hour"] == "auto"
        vph = recipes.auto_veh_per_hour(self.counts["road_km"]) if auto else float(d["background_veh_per_hour"])
        vph *= float(d["scale"])
        routes = self.out / FILES["background"]
        source = "uniform" if self.r.net_source else d["background"]  # a bare net has no OSM to weigh by
        self.generated = {"background": source, "scale": d["scale"]}
        if vph <= 0:
            routes.write_text('<routes xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>\n')
            self.counts["background_vehicles"] = 0
            self.generated["veh_per_hour"] = 0.0
            return 0.0
        made: dict[float, dict] = {}  # provenance of each rate generated (the calibration tries several)

        def make_routes(rate: float, out: Path) -> int:
            made[rate] = self._generate(source, rate, out)
            return self._count_vehicles(out)

        if auto:
            from scenarios import calibrate

            agents = self.work / "agents.fit.rou.xml"
            calibrate.write_trip_routes(agents, graph, agent_trips)
            fit = calibrate.fit_rate(
                Path(FILES["net"]), make_routes=make_routes, horizon=float(d["horizon"]), seed=self.r.seed,
                start_vph=vph, work=Path("work/fit"), log=self.log, cwd=self.out, extra_vehicles=agents,
            )  # fmt: skip
            shutil.move(str(fit.pop("routes")), routes)
            vph = float(fit["veh_per_hour"])
            self.generated["calibration"] = fit
        else:
            make_routes(vph, routes)
        self.generated.update(veh_per_hour=round(vph, 3), **made.get(vph, {}))
        n = self._count_vehicles(routes)
        if n == 0:
            raise ScenarioError(
                f"no background trip of at least {d['background_min_distance_m']:g} m could be routed on "
                f"{self._source_label()} (net too small or disconnected; see {self.log.name})"
            )
        self.counts["background_vehicles"] = n
        return vph

    def _generate(self, source: str, vph: float, out: Path) -> dict:
        """One background route file at `vph` veh/h into `out`; its provenance."""
        d = self.r.demand
        if source == "osm":
            from scenarios import osmdemand

            return osmdemand.generate(
                Path(FILES["net"]), Path("work/input.osm"), out, veh_per_hour=vph, horizon=float(d["horizon"]),
                seed=self.r.seed, min_distance_m=float(d["background_min_distance_m"]), work=Path("work/demand"),
                log=Path(self.log.name), cwd=self.out,
            )  # fmt: skip
        args = [
            "-n", FILES["net"], "-r", str(out), "-o", "work/background.trips.xml",
            "-b", "0", "-e", f"{d['horizon']:g}", "-p", f"{3600.0 / vph:.6g}",
            "--fringe-factor", str(FRINGE_FACTOR), "--min-distance", f"{d['background_min_distance_m']:g}",
            "--validate", "--seed", str(self.r.seed), "--vehicle-class", "passenger", "--prefix", "bg",
        ]  # fmt: skip
        sumotools.python_tool("randomTrips.py", args, "randomTrips/duarouter", self.out, self.log)
        return {"method": "uniform"}

    def trip_ends(self) -> dict[str, int]:
        """Background trips starting or ending on each edge: the map shades where the demand is."""
        from scenarios.osmdemand import trip_ends

        origins, destinations = trip_ends(self.out / FILES["background"])
        return dict(origins + destinations)

    @staticmethod
    def _count_vehicles(routes: Path) -> int:
        import sumolib

        return sum(1 for _ in sumolib.xml.parse_fast(str(routes), "vehicle", ["id"])) if routes.is_file() else 0

    def sumocfg(self, time: dict | None = None, cfg=None) -> None:
        begin, end = (time["begin"], time["end"]) if time else (0, self.r.demand["horizon"])
        args = [sumotools.binary("sumo"), "-n", FILES["net"], "-r", FILES["background"], "--begin", f"{begin:g}",
                "--end", f"{end:g}"]  # fmt: skip
        additional = sorted((self.out / "additional").glob("*")) if (self.out / "additional").is_dir() else []
        if additional:
            args += ["--additional-files", ",".join(f"additional/{p.name}" for p in additional)]
        for key, value in cfg.options.items() if cfg is not None else ():
            args += [f"--{key}", value]
        args += ["--save-configuration", FILES["sumocfg"]]
        sumotools.run(args, "sumo --save-configuration", self.out, self.log)

    def attribution(self) -> tuple[str, str]:
        return source_of(self.r.kind).attribution()

    def write_manifest(self, veh_per_hour: float, imported: dict | None = None) -> None:
        from scenarios import imported as imported_mod

        attribution, licence = self.attribution()
        manifest = {
            "name": self.r.name,
            "description": self.r.description,
            "source": self.source_info,
            "recipe": self.r.to_dict(),
            "sumo_version": sumotools.version(),
            "builder_version": cache.BUILDER_VERSION,
            "hash": self.key,
            "built_at": _now(),
            "counts": self.counts,
            "background_veh_per_hour": veh_per_hour,
            "attribution": attribution,
            "licence": licence,
            "files": dict(FILES),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }
        if self.generated is not None:
            manifest["generated"] = self.generated
        # how the background gets its routes: "fixed" (as built: a generated background is routed by
        # duarouter; an imported one with --background-routing fixed by a recorded SUMO run) or "insertion"
        # (SUMO routes its trips as they enter, on live times); and how many vehicles it routes that way
        manifest["background_routing"] = self.background_routing or {
            "mode": "fixed",
            "routed_at_insertion": imported_mod.routed_at_insertion(self.out / FILES["background"]),
        }
        if imported is not None:
            manifest["time"] = {k: imported["time"][k] for k in ("begin", "end")}
            manifest["import"] = imported
        extra = sorted(str(p.relative_to(self.out)) for p in (self.out / "additional").glob("*")) if (
            self.out / "additional").is_dir() else []  # fmt: skip
        manifest["sha256"] = cache.digests(self.out, [*FILES.values(), *extra])  # verified by every cache hit
        tmp = self.out / "manifest.json.part"
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        tmp.rename(self.out / "manifest.json")

    def _source_label(self) -> str:
        return source_of(self.r.kind).label(self.r.source)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _root_tag(path: Path) -> str | None:
    """The XML root element's name, reading only the start of the file."""
    import xml.etree.ElementTree as ET

    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            return elem.tag
    except ET.ParseError:
        return None
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"
