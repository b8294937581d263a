"""Training on several cities: which city a training episode drives in, and one env per city in a
process that can run one SUMO at a time (libsumo).

The city of training episode e is a function of (run seed, e) alone, like its SUMO seed, so a run is
reproducible wherever its episodes run (in-process or on rollout workers) and a resumed run goes on
exactly. Evaluations run on every city of the run, one row each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def city_of(seed: int, episode: int, cities: int) -> int:
    """The index of the city that training episode `episode` (1-based) drives in, among `cities`."""
    if cities <= 1:
        return 0
    return int(np.random.SeedSequence([int(seed), int(episode), 0x0C17]).generate_state(1)[0] % cities)


class CityEnvs:
    """One env per city, made when first needed; switching cities ends the other city's SUMO (the env
    stays, and its next reset starts a fresh SUMO, which gives the same episode as a reload)."""

    def __init__(self, scenarios: list, make: Callable, first=None) -> None:
        self.scenarios, self.make = list(scenarios), make
        self.envs: dict[int, object] = {0: first} if first is not None else {}
        self.active: int | None = 0 if first is not None else None

    def __len__(self) -> int:
        return len(self.scenarios)

    def name(self, i: int) -> str:
        return self.scenarios[i].name

    def get(self, i: int):
        if self.active is not None and self.active != i:
            self.envs[self.active].suspend()
        if i not in self.envs:
            self.envs[i] = self.make(self.scenarios[i])
        self.active = i
        return self.envs[i]

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
