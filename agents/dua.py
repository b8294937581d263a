"""The `dua` baseline: the agents' dynamic user equilibrium against the scenario's real background.

SUMO's own ``duaIterate.py`` (Gawron's route choice, the model of human day-to-day learning that URB
uses) iterates the agents' trips only: the background, passive imported vehicles and the scenario's
additional files run in every iteration exactly as they run in the env (``-+``, handed to SUMO and not
to the router). The last iteration's routes are then replayed as the agents' plans. An equilibrium is
computed once per (scenario files, agents, clock, iterations, seed) and cached under
``COSIM_HOME/dua/``, with what each iteration measured:

* ``mean_travel_time``: the agents' mean over the iteration's simulation (SUMO's tripinfo);
* ``relative_gap``: from duarouter's own route sets, sum over agents of (cost of the route used - cost
  of the cheapest alternative) / sum of the cheapest costs, under the iteration's travel times. It
  shrinks towards 0 as no agent can gain by switching among the routes it knows (the route-set gap of
  this project's records; duaIterate itself only watches the spread of mean travel times).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from agents.base import TrainError
from core.jsonio import atomic_write
from core.paths import home_dir
from cosim.kernel import AGENT_ACCEL, AGENT_VTYPE
from scenarios import sumotools
from scenarios.errors import ScenarioError

DUA_VERSION = 1
DUA_TIME_LIMIT_S = 3600.0


@dataclass
class Equilibrium:
    routes: dict[str, list[str]]  # agent id -> edge ids
    # per iteration: mean_travel_time, relative_gap (None while no agent knows a second route)
    iterations: list[dict] = field(default_factory=list)
    folder: Path | None = None

    @property
    def relative_gap(self) -> float | None:
        return self.iterations[-1]["relative_gap"] if self.iterations else None


def _key(scenario, trips, begin: float, end: float, iterations: int, seed: int) -> str:
    parts = {
        "version": DUA_VERSION,
        "sumo": sumotools.version(),
        "files": scenario.manifest.get("sha256") or str(scenario.path),
        "agents": [(t.id, t.origin, t.destination, round(t.depart, 2)) for t in trips],
        "clock": [begin, end],
        "iterations": iterations,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _scenario_inputs(scenario) -> list[Path]:
    """The route and additional files the scenario's .sumocfg loads (the background among them)."""
    root = ET.parse(scenario.sumocfg).getroot()
    out = []
    for tag in ("route-files", "additional-files"):
        for el in root.iter(tag):
            out += [scenario.sumocfg.parent / v.strip() for v in el.get("value", "").split(",") if v.strip()]
    return out


def _write_trips(path: Path, trips) -> None:
    rows = sorted(trips, key=lambda t: t.depart)
    lines = ["<routes>", f'  <vType id="{AGENT_VTYPE}" vClass="passenger" accel="{AGENT_ACCEL}"/>']
    lines += [
        f'  <trip id="{t.id}" type="{AGENT_VTYPE}" depart="{t.depart:.2f}" departLane="best" from="{t.origin}" '
        f'to="{t.destination}"/>'
        for t in rows
    ]
    path.write_text("\n".join([*lines, "</routes>\n"]))


def _iteration_record(folder: Path, step: int, agents: set[str]) -> dict:
    """What iteration `step` measured: the agents' mean travel time and the route-set relative gap."""
    finished = list(ET.parse(folder / f"{step:03d}" / f"tripinfo_{step:03d}.xml").getroot().iter("tripinfo"))
    durations = [float(el.get("duration")) for el in finished if el.get("id") in agents]
    gap = best = 0.0
    choices = 0  # vehicles with more than one known route: without any, there is no gap to speak of
    for veh in ET.parse(folder / f"{step:03d}" / f"agents_{step:03d}.rou.alt.xml").getroot().iter("vehicle"):
        dist = veh.find("routeDistribution")
        if dist is None:
            continue
        costs = [float(r.get("cost", "nan")) for r in dist.iter("route")]
        used = costs[int(dist.get("last", "0"))]
        cheapest = min(costs)
        choices += len(costs) > 1
        gap += used - cheapest
        best += cheapest
    return {
        "iteration": step,
        "arrived": len(durations),
        "vehicles": len(finished),  # every vehicle that finished, background included
        "mean_travel_time": sum(durations) / len(durations) if durations else float("nan"),
        "relative_gap": gap / best if best > 0 and choices else None,
    }


def _final_routes(folder: Path, step: int) -> dict[str, list[str]]:
    out = {}
    for veh in ET.parse(folder / f"{step:03d}" / f"agents_{step:03d}.rou.xml").getroot().iter("vehicle"):
        route = veh.find("route")
        if route is not None:
            out[veh.get("id")] = route.get("edges", "").split()
    return out


def equilibrium(scenario, trips, begin: float, end: float, iterations: int = 30, seed: int = 42) -> Equilibrium:
    """The agents' equilibrium routes against the real background (computed once, then from the cache)."""
    if iterations < 1:
        raise TrainError(f"dua needs at least one iteration, got {iterations}")
    folder = home_dir("dua") / _key(scenario, trips, begin, end, iterations, seed)
    done = folder / "equilibrium.json"
    if done.is_file():
        data = json.loads(done.read_text())
        return Equilibrium(data["routes"], data["iterations"], folder)
    work = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _write_trips(work / "agents.xml", trips)
        extra = _scenario_inputs(scenario)
        passive = scenario.passive_vehicles(trips)
        if passive:
            (work / "passive.rou.xml").write_text(
                "<routes>\n" + "\n".join("  " + xml for _, xml in sorted(passive, key=lambda p: p[0])) + "\n</routes>\n"
            )
            extra.append(work / "passive.rou.xml")
        args = ["-n", str(scenario.net_file), "-t", "agents.xml", "-b", f"{begin:g}", "-e", f"{end:g}",
                "-l", str(iterations), "--time-to-teleport", "300", "--disable-warnings", "--no-gzip"]  # fmt: skip
        if extra:
            args += ["-+", ",".join(str(p) for p in extra)]
        args += ["sumo--seed", str(int(seed)), "duarouter--seed", str(int(seed))]
        try:
            sumotools.python_tool("assign/duaIterate.py", args, "duaIterate.py", work, work / "dua-run.log",
                                  time_limit=DUA_TIME_LIMIT_S)  # fmt: skip
            last = iterations - 1
            names = {t.id for t in trips}
            records = [_iteration_record(work, s, names) for s in range(iterations)]
            routes = _final_routes(work, last)
        except (ScenarioError, OSError, ET.ParseError) as exc:
            raise TrainError(f"dua: the agents' demand could not be routed to an equilibrium ({exc})") from None
        missing = names - routes.keys()
        if missing:
            raise TrainError(f"dua: duaIterate.py found no route for {len(missing)} agents, e.g. {sorted(missing)[0]}")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(done, json.dumps({"routes": routes, "iterations": records}, indent=1))
        return Equilibrium(routes, records, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
