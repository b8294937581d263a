"""A built scenario folder, as the rest of the suite sees it.

The builder (scenarios/build.py) writes the folder; everything downstream (the kernel, the env, the LLM
expert) reads it only through this class, so the folder layout has one owner.

Folder layout::

    manifest.json      source, recipe, sumo_version, hash, counts, attribution, files
    net.net.xml        the SUMO network
    background.rou.xml background vehicles (randomTrips/duarouter)
    agents.json        pool of controlled-agent trips, [{"id", "from", "to", "depart"}], the env takes the first N
    scenario.sumocfg   net + background routes
    map.png            city map
    build.log          the commands the builder ran and their output (for debugging a build)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from scenarios.errors import ScenarioError


@dataclass(frozen=True)
class Trip:
    id: str
    origin: str
    destination: str
    depart: float


@dataclass
class Scenario:
    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> "Scenario":
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise ScenarioError(f"{path} is not a built scenario (no manifest.json)")
        return cls(path=path, manifest=json.loads(mf.read_text()))

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
    def horizon(self) -> float:
        return float(self.demand["horizon"])

    @property
    def default_agents(self) -> int:
        return int(self.demand["agents"])

    @property
    def seed(self) -> int:
        return int(self.manifest["recipe"].get("seed", 0))

    @cached_property
    def trip_pool(self) -> list[Trip]:
        raw = json.loads(self.file("agents").read_text())
        return [Trip(t["id"], t["from"], t["to"], float(t["depart"])) for t in raw]

    def trips(self, n: int | None = None) -> list[Trip]:
        """The first n trips of the pool (n defaults to the recipe's agent count)."""
        n = self.default_agents if n is None else n
        pool = self.trip_pool
        if n <= 0:
            raise ScenarioError(f"number of agents must be positive, got {n}")
        if n > len(pool):
            raise ScenarioError(
                f"{n} agents requested but scenario {self.name!r} has only {len(pool)} routable trips"
                f" (raise [demand].agent_pool in its recipe)"
            )
        return pool[:n]

    @cached_property
    def graph(self):
        from scenarios.roadgraph import RoadGraph

        return RoadGraph.from_net_file(self.net_file)
