"""A built scenario folder, as the rest of the suite sees it.

The builder (scenarios/build.py) writes the folder; everything downstream (the kernel, the env, the LLM
expert) reads it only through this class, so the folder layout has one owner.

Folder layout::

    manifest.json      source, recipe, sumo_version, hash, counts, attribution, files, background_routing
    net.net.xml        the SUMO network
    background.rou.xml background vehicles (randomTrips/duarouter)
    agents.json        pool of controlled-agent trips, [{"id", "from", "to", "depart"}], the env takes the first N;
                       in an imported scenario each also holds its vehicle as the demand files wrote it
                       ("vehicle", SUMO XML), which runs as plain traffic whenever the env takes fewer agents
    scenario.sumocfg   net + background routes (+ additional files and kept options of an imported .sumocfg)
    map.png            city map
    build.log          the commands the builder ran and their output (for debugging a build)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from scenarios.errors import ScenarioError

# Lane metres one passenger car occupies in a standing queue: SUMO's default length (5 m) plus minGap
# (2.5 m). A net holds at most (lane metres / this) cars at once, which bounds any sensible agent count.
CAR_SPACE_M = 7.5


def vehicle_capacity(lane_km: float) -> int:
    """How many cars fit on lane_km kilometres of lane, bumper to bumper."""
    return int(lane_km * 1000.0 // CAR_SPACE_M)


@dataclass(frozen=True)
class Trip:
    id: str
    origin: str
    destination: str
    depart: float
    vehicle: str | None = None  # imported demand: the vehicle's own XML, for when it is not an agent


@dataclass
class Scenario:
    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """A built folder, checked complete and intact (each file against the digest its manifest
        recorded): a file deleted or damaged would otherwise fail much later, as a traceback from SUMO,
        sumolib or a JSON parser in the middle of a run."""
        from scenarios.cache import damaged

        path = Path(path)
        manifest = read_manifest(path)
        bad = damaged(path, manifest)
        if bad:
            missing = [f for f in bad if not (path / f).is_file()]
            what = "incomplete" if missing else "damaged"
            detail = f"{', '.join(missing)} missing" if missing else f"{', '.join(bad)} changed since it was built"
            raise ScenarioError(
                f"scenario {path} is {what}: {detail}; rebuild it with `cosim scenario build {path} --force`"
            )
        return cls(path=path, manifest=manifest)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def file(self, key: str) -> Path:
        return self.path / self.manifest["files"][key]

    @property
    def net_file(self) -> Path:
        return self.file("net")

    @property
    def background_file(self) -> Path:
        return self.file("background")

    @property
    def sumocfg(self) -> Path:
        return self.file("sumocfg")

    @property
    def demand(self) -> dict:
        return self.manifest["recipe"]["demand"]

    @property
    def imported(self) -> bool:
        """Demand from the user's files (a .sumocfg, route files, a trips table) rather than generated."""
        return "import" in self.manifest

    @property
    def begin(self) -> float:
        """The simulation time an episode starts at (0 for generated demand; an imported .sumocfg's begin)."""
        return float(self.manifest.get("time", {}).get("begin", 0.0))

    @property
    def horizon(self) -> float:
        time = self.manifest.get("time")
        if time is not None:  # imported: resolved at build time from the files (the recipe may say "auto")
            return float(time["end"]) - float(time["begin"])
        return float(self.demand["horizon"])

    @property
    def default_agents(self) -> int:
        counts = self.manifest.get("counts", {})
        if "agents" in counts:  # imported: the number chosen from the demand (--agents or --agent-share)
            return int(counts["agents"])
        return int(self.demand["agents"])

    @property
    def seed(self) -> int:
        return int(self.manifest["recipe"].get("seed", 0))

    @cached_property
    def trip_pool(self) -> list[Trip]:
        raw = json.loads(self.file("agents").read_text())
        return [Trip(t["id"], t["from"], t["to"], float(t["depart"]), t.get("vehicle")) for t in raw]

    def trips(self, n: int | None = None) -> list[Trip]:
        """The first n trips of the pool (n defaults to the recipe's agent count)."""
        n = self.default_agents if n is None else n
        pool = self.trip_pool
        if n == 0 and self.imported:
            return []  # a plain co-simulation of the imported demand
        if n <= 0:
            raise ScenarioError(f"number of agents must be positive, got {n}")
        counts = self.manifest.get("counts", {})
        # builds from before lanes were counted: their km of road, one lane each (an estimate)
        lane_km = counts.get("lane_km", counts.get("road_km"))
        if lane_km is not None and n > vehicle_capacity(lane_km):
            also = f", and it has only {len(pool)} routable trips" if n > len(pool) else ""
            raise ScenarioError(
                f"{n} agents requested but the roads of scenario {self.name!r} hold at most "
                f"{vehicle_capacity(lane_km)} cars at once ({lane_km} km of lanes, {CAR_SPACE_M:g} m per car){also}"
            )
        if n > len(pool) and self.imported:
            raise ScenarioError(
                f"{n} agents requested but {len(pool)} were picked from scenario {self.name!r}'s demand when it was "
                f"built (build it again with --agents {n} or a larger --agent-share)"
            )
        if n > len(pool):
            raise ScenarioError(
                f"{n} agents requested but scenario {self.name!r} has only {len(pool)} routable trips (build a "
                f"larger pool with `cosim scenario build {self.name} --agent-pool {n}` and use the folder it prints)"
            )
        return pool[:n]

    def passive_vehicles(self, agents) -> list[tuple[float, str]]:
        """(departure, XML) of the imported vehicles in the agent pool that are not agents this time: they
        drive exactly as their files say (generated pools hold only agent trips and return nothing)."""
        ids = {t.id for t in agents}
        return [(t.depart, t.vehicle) for t in self.trip_pool if t.vehicle is not None and t.id not in ids]

    @cached_property
    def routed_at_insertion(self) -> int:
        """How many background vehicles SUMO routes as they enter, on its live edge times (trips without a
        route): their routes depend on SUMO-wide rerouting settings. From the manifest; counted in the
        file for a build from before 2026-12-07. `passive_vehicles` may add more of them."""
        recorded = self.manifest.get("background_routing", {}).get("routed_at_insertion")
        if recorded is not None:
            return int(recorded)
        from scenarios.imported import routed_at_insertion

        return routed_at_insertion(self.background_file)

    @cached_property
    def graph(self):
        from scenarios.roadgraph import RoadGraph

        return RoadGraph.from_net_file(self.net_file)


def read_manifest(path: Path) -> dict:
    """A built folder's manifest.json, as a dict with a "files" mapping, or one clear error."""
    mf = path / "manifest.json"
    if not mf.is_file():
        raise ScenarioError(f"{path} is not a built scenario (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ScenarioError(f"cannot read {mf}: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ScenarioError(f'{mf} is not a scenario manifest (no "files" mapping)')
    return manifest
