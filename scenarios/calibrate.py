"""Fit the background demand to the net: the highest tried rate that the net carries without gridlock.

A rate in vehicles per hour that suits one city gridlocks another: uniform random trips (randomTrips.py)
load every part of the net alike, and a real city's capacity lies in a few arterials and signals that a
per-km rule cannot see. So where a recipe gives no tuned rate, the builder runs the demand it would ship
in plain ``sumo`` and lowers the rate until the net carries it (see FIT_CRITERION):

* at least MIN_ARRIVED_SHARE of all the vehicles (background plus the controlled agents on their
  free-flow routes, when the caller passes them) have arrived by ``horizon + END_MARGIN_S`` (a vehicle
  that departs just before the horizon needs time to finish its trip);
* at most MAX_TELEPORT_SHARE of them were teleported out of a jam (SUMO's --time-to-teleport 300, as
  in the env).

Every vehicle due to depart is the denominator, not only the inserted ones: a gridlocked net also shows
as vehicles that never get onto the road (SUMO's insertion backlog), invisible in arrived/inserted.

A rate is checked in SEEDS_PER_RATE runs with different simulation seeds and fits only if every run
does: near its capacity a net tips into gridlock or not by the luck of one local jam. Measured on
Berlin-Adlershof (4 h, 1 000 agents): at 2 300 veh/h three of six seeds gridlocked (190 to 3 829
teleports) while seed 42 had none; 2 000 veh/h failed one seed of six, 1 800 none. One fitting seed
says little, and two are no guarantee either (2 300 veh/h passed seeds 42 and 43): a chosen rate sits
at the edge of what the net carries, not safely below it. Each run stops as soon as its teleports exceed what the
criterion allows (SUMO's --max-num-teleports), so a failing rate costs seconds rather than the minutes
a gridlocked hour takes to simulate, and the first failing seed settles it.

The search tries at most MAX_RATES rates: the starting rate (kept if it fits), then multiplicative
steps down until a rate fits, then geometric bisection between the highest fitting and the lowest
failing rate with the tries left (stopping once they are within RESOLUTION of each other). A step down
multiplies the failing rate by its arrived share (in a run stopped early: the share when it stopped),
kept within [MIN_STEP, STEP_DOWN]: a mild overload
(90 % arrived) steps by STEP_DOWN, a gridlock (2 % arrived, where throughput collapses) by MIN_STEP,
so a start five times too high is still found within the tries. The chosen rate is the highest tried
rate that fits; if none fits, the lowest tried rate is returned with ``fits = False`` (no exception:
the builder still ships a scenario and records the figures).

Standard library only (write_trip_routes takes a RoadGraph built by the caller).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from scenarios import sumotools

MIN_ARRIVED_SHARE = 0.98  # of the vehicles due to depart, arrived by horizon + END_MARGIN_S
MAX_TELEPORT_SHARE = 0.005  # teleports per vehicle due to depart
END_MARGIN_S = 900.0  # simulated seconds after the horizon for the last departures to finish
TIME_TO_TELEPORT_S = 300  # as the env's kernel runs SUMO
MAX_RATES = 4  # rates tried at most ...
SEEDS_PER_RATE = 2  # ... each in up to this many runs (simulation seeds seed, seed + 1, ...): all must fit
STEP_DOWN = 0.6  # next rate after a failing one (at most), while no tried rate fits ...
MIN_STEP = 0.25  # ... and at least, however deep the gridlock
RESOLUTION = 0.9  # stop refining once the highest fitting rate is within this factor of the lowest failing one
CHOSEN_ROUTES = "background.fit.rou.xml"  # where fit_rate leaves the chosen rate's routes, inside `work`


def criterion(seeds: int = SEEDS_PER_RATE) -> str:
    """FIT_CRITERION in words, as fit_rate reports it."""
    return (
        f"arrived >= {MIN_ARRIVED_SHARE:.0%} of all vehicles and teleports <= {MAX_TELEPORT_SHARE:.1%} of them, "
        f"by horizon + {END_MARGIN_S:g} s, in each of {seeds} run{'s' if seeds != 1 else ''} with different "
        f"simulation seeds (plain sumo, --time-to-teleport {TIME_TO_TELEPORT_S})"
    )


FIT_CRITERION = criterion()


def run_stats(net: Path, route_files: Sequence[Path], end: float, seed: int, cwd: Path, log: Path,
              tripinfo: Path | None = None, max_teleports: int | None = None) -> dict:  # fmt: skip
    """One plain `sumo` run of `net` with `route_files` until simulated time `end`; SUMO's own
    statistics of it. With `max_teleports`, SUMO stops as soon as there are more teleports than that
    (a gridlock costs a minute or more of SUMO time per simulated hour; the run is failed by then).

    Returns loaded (vehicles SUMO read from the route files: it reads ahead, so this can include
    vehicles departing after `end`), inserted, running and waiting (on the road / due but not yet
    inserted at the end), due (inserted + waiting: the vehicles whose departure time came before the
    end), arrived (trips finished, teleported ones included), teleports, mean_duration (s, over arrived
    vehicles), arrived_share (arrived / due), end (the simulated time reached), aborted (SUMO stopped
    before `end`: too many teleports) and seconds (wall time). Relative paths are relative to `cwd`;
    SUMO's output is appended to `log`. A SUMO failure raises ScenarioError.
    """
    with tempfile.TemporaryDirectory(prefix="cosim-stats-") as tmp:
        stats = Path(tmp) / "stats.xml"
        args = [
            sumotools.binary("sumo"), "-n", str(net), "-r", ",".join(str(p) for p in route_files),
            "--begin", "0", "--end", f"{end:g}", "--seed", str(int(seed)),
            "--no-step-log", "true", "--no-warnings", "true", "--time-to-teleport", str(TIME_TO_TELEPORT_S),
            # tripinfo devices on every vehicle make SUMO count finished trips and their durations
            "--tripinfo-output", str(tripinfo) if tripinfo is not None else os.devnull,
            "--duration-log.statistics", "true", "--statistic-output", str(stats),
        ]  # fmt: skip
        if max_teleports is not None:
            args += ["--max-num-teleports", str(int(max_teleports))]
        t0 = time.perf_counter()
        sumotools.run(args, "sumo (demand statistics)", cwd, log)
        seconds = time.perf_counter() - t0
        root = ET.parse(stats).getroot()
    vehicles = root.find("vehicles")
    teleports = root.find("teleports")
    trips = root.find("vehicleTripStatistics")
    inserted, running, waiting = (int(vehicles.get(k)) for k in ("inserted", "running", "waiting"))
    arrived = int(trips.get("count")) if trips is not None else inserted - running
    due = inserted + waiting
    performance = root.find("performance")
    reached = float(performance.get("end")) if performance is not None and performance.get("end") else end
    return {
        "loaded": int(vehicles.get("loaded")),
        "inserted": inserted,
        "running": running,
        "waiting": waiting,
        "due": due,
        "arrived": arrived,
        "teleports": int(teleports.get("total")) if teleports is not None else 0,
        "mean_duration": float(trips.get("duration")) if trips is not None and arrived else float("nan"),
        "arrived_share": arrived / due if due else 1.0,
        "end": reached,
        "aborted": reached < end - 0.5,
        "seconds": round(seconds, 3),
    }


def fits(stats: dict) -> bool:
    """Whether one run's statistics meet FIT_CRITERION."""
    n = stats["due"]
    return stats["arrived"] >= MIN_ARRIVED_SHARE * n and stats["teleports"] <= MAX_TELEPORT_SHARE * n


def fit_rate(net_file: Path, *, make_routes: Callable[[float, Path], int], horizon: float, seed: int,
             start_vph: float, work: Path, log: Path, cwd: Path, extra_vehicles: Path | None = None,
             seeds: int = SEEDS_PER_RATE) -> dict:  # fmt: skip
    """The highest background rate (veh/h, at most `start_vph`) that `net_file` carries together with
    `extra_vehicles` (a route file of further vehicles that must fit too, e.g. the controlled agents on
    their free-flow routes), by FIT_CRITERION, trying at most MAX_RATES rates.

    make_routes(veh_per_hour, out_path) writes a routed background route file for that rate over
    [0, horizon) and returns its vehicle count (the builder's randomTrips + duarouter step). Route files
    of the tries go to `work` (removed again); the chosen rate's file is left at
    ``cwd / work / CHOSEN_ROUTES`` and that path is returned as "routes" (the builder moves it to its
    background.rou.xml). SUMO runs in `cwd`, its output appended to `log`; `work`, `net_file` and
    `extra_vehicles` may be relative to `cwd`, and make_routes gets an out_path that is absolute when
    `cwd` is. A rate fits only if it fits in each of `seeds` runs, with simulation seeds seed,
    seed + 1, ... (the first failing run settles it; the module's docstring says why one seed is not
    enough).

    Returns {"veh_per_hour": chosen rate, "vehicles": its background vehicle count, "fits": whether it
    meets the criterion (False: even the lowest tried rate gridlocks, and it is the one returned),
    "routes": Path, "tried": [{"veh_per_hour", "vehicles" (background + extra), "background_vehicles",
    "fits", "seconds" (SUMO's wall time, all runs), "arrived_share", "teleports", "waiting",
    "mean_duration", "aborted_at" (these five from the rate's worst run; aborted_at: the simulated time
    at which SUMO stopped once the teleports exceeded what the criterion allows, else None), "runs":
    [{"seed", "fits", "arrived_share", "teleports", "aborted_at", "seconds"}, ...]}, ...] in the
    order tried, "runs": SUMO runs in all, "criterion": text, "end": the simulated end time of each
    run, "seconds": wall time of the whole search (route generation included)}.
    """
    if not start_vph > 0:
        raise ValueError(f"start_vph must be positive, got {start_vph!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds!r}")
    work = Path(cwd) / work  # relative to cwd, as every path SUMO sees; absolute for make_routes
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    end = float(horizon) + END_MARGIN_S
    extra = [Path(extra_vehicles)] if extra_vehicles is not None else []
    n_extra = sum(_count_vehicles(Path(cwd) / p) for p in extra)
    tried: list[dict] = []
    files: dict[float, tuple[Path, int]] = {}

    def attempt(vph: float) -> float | None:
        """Run one rate; None if it fits, else the factor to step down by."""
        path = work / f"background.try{len(tried)}.rou.xml"
        n_bg = make_routes(vph, path)
        files[vph] = (path, n_bg)
        total = n_bg + n_extra
        runs, worst, ok = [], None, True
        for k in range(seeds):
            # more teleports than the criterion allows for all vehicles: failed, whatever comes after
            s = run_stats(net_file, [path, *extra], end, seed + k, cwd, log,
                          max_teleports=int(MAX_TELEPORT_SHARE * total))  # fmt: skip
            passed = fits(s) and not s["aborted"]
            runs.append({"seed": seed + k, "fits": passed, "arrived_share": round(s["arrived_share"], 4),
                         "teleports": s["teleports"], "aborted_at": s["end"] if s["aborted"] else None,
                         "seconds": s["seconds"]})  # fmt: skip
            if worst is None or (s["arrived_share"], -s["teleports"]) < (worst["arrived_share"], -worst["teleports"]):
                worst = s
            if not passed:
                ok, worst = False, s
                break
        tried.append({
            "veh_per_hour": vph, "vehicles": total, "background_vehicles": n_bg, "fits": ok,
            "seconds": round(sum(r["seconds"] for r in runs), 3),
            "arrived_share": round(worst["arrived_share"], 4), "teleports": worst["teleports"],
            "waiting": worst["waiting"], "mean_duration": round(worst["mean_duration"], 1) if worst["arrived"] else None,
            "aborted_at": worst["end"] if worst["aborted"] else None, "runs": runs,
        })  # fmt: skip
        return None if ok else min(STEP_DOWN, max(MIN_STEP, worst["arrived_share"]))

    good: float | None = None  # highest fitting rate so far
    bad: float | None = None  # lowest failing rate so far
    vph = _rate(start_vph)
    while len(tried) < MAX_RATES:
        step = attempt(vph)
        if step is None:
            good = vph if good is None else max(good, vph)
        else:
            bad = vph if bad is None else min(bad, vph)
        if bad is None:  # the starting rate fits: keep it
            break
        if good is None:
            nxt = _rate(vph * step)
        else:  # bracketed: geometric middle, until the bracket is narrow enough
            if good >= RESOLUTION * bad:
                break
            nxt = _rate(math.sqrt(good * bad))
            if nxt in (good, bad):
                break
        if nxt in files or nxt <= 0:
            break
        vph = nxt

    ok = good is not None
    chosen = good if ok else min(files)
    src, n_bg = files[chosen]
    routes = work / CHOSEN_ROUTES
    src.replace(routes)
    for path, _ in files.values():
        path.unlink(missing_ok=True)
    return {
        "veh_per_hour": chosen,
        "vehicles": n_bg,
        "fits": ok,
        "routes": routes,
        "tried": tried,
        "runs": sum(len(t["runs"]) for t in tried),
        "criterion": criterion(seeds),
        "end": end,
        "seconds": round(time.perf_counter() - t_start, 2),
    }


def _count_vehicles(route_file: Path) -> int:
    """<vehicle> and <trip> elements in a route file (flows are not used by the builder)."""
    n = 0
    for _, elem in ET.iterparse(route_file, events=("end",)):
        if elem.tag in ("vehicle", "trip"):
            n += 1
        elem.clear()
    return n


def _rate(vph: float) -> float:
    """Rates are tried at whole vehicles per hour (the builder's canonical numbers), at least 1."""
    return float(max(1, round(vph)))


AGENT_ACCEL = 2.6  # m/s^2: the env's agent vType (cosim.kernel), so the calibration drives the same cars
_CACHE_LIMIT = 256  # trips between clearing the graph's per-destination shortest-path cache (big nets)


def write_trip_routes(path: Path, graph, trips: Sequence[dict], vtype: str = "calibration_agent") -> int:
    """Controlled-agent trips (the builder's pool entries: {"id", "from", "to", "depart"}) as a route
    file on their free-flow routes through `graph` (a RoadGraph), the way the env first sends them:
    fit_rate's `extra_vehicles`. Returns the number of vehicles written (unroutable trips are skipped)."""
    from xml.sax.saxutils import quoteattr

    lines = ["<routes>", f'  <vType id="{vtype}" vClass="passenger" accel="{AGENT_ACCEL:g}"/>']
    n = 0
    for i, t in enumerate(sorted(trips, key=lambda t: float(t["depart"]))):
        if i and i % _CACHE_LIMIT == 0:
            graph.clear_cache()
        edges = graph.path_ids(t["from"], t["to"])
        if not edges:
            continue
        lines.append(
            f'  <vehicle id={quoteattr(str(t["id"]))} type="{vtype}" depart="{float(t["depart"]):.2f}" '
            f'departLane="best"><route edges="{" ".join(edges)}"/></vehicle>'
        )
        n += 1
    lines.append("</routes>\n")
    Path(path).write_text("\n".join(lines), encoding="utf-8")
    return n
