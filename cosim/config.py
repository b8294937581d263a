"""The env section of an experiment's configuration: light to import (no SUMO, numpy or PettingZoo),
so the command line can show its defaults without loading the simulator."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.settings import limits


@dataclass
class EnvConfig:
    n_agents: int | None = field(default=None, metadata=limits(ge=0))  # None: the scenario recipe's default
    backend: str = field(default="libsumo", metadata=limits(choices=("libsumo", "traci")))  # libsumo | traci
    gui: bool = False
    max_actions: int = field(
        default=6, metadata=limits(gt=0)
    )  # fixed action width: keeps policies portable across cities
    horizon: float | None = field(default=None, metadata=limits(gt=0))  # s; None: the recipe's horizon
    observation: str = "default"
    reward: str = "travel_time"
    reward_scale: float = field(default=60.0, metadata=limits(gt=0))
    teleport_penalty: float = field(default=5.0, metadata=limits(ge=0))
    timeout_penalty: float = field(default=10.0, metadata=limits(ge=0))
    # "policy": agents choose at decision points; "sumo-rerouting": no decisions, SUMO's own
    # travel-time rerouting device steers the agents (a baseline through the same env and metrics)
    control: str = "policy"
    label: str | None = None  # TraCI connection label (several simulations in one process)
    sumo_args: tuple[str, ...] = ()
