"""The env section of an experiment's configuration: light to import (no SUMO, numpy or PettingZoo),
so the command line can show its defaults without loading the simulator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EnvConfig:
    n_agents: int | None = None  # None: the scenario recipe's default
    backend: str = "libsumo"  # libsumo | traci
    gui: bool = False
    max_actions: int = 6  # fixed action width: keeps policies portable across cities
    horizon: float | None = None  # s; None: the recipe's horizon
    observation: str = "default"
    reward: str = "travel_time"
    reward_scale: float = 60.0
    teleport_penalty: float = 5.0
    timeout_penalty: float = 10.0
    # "policy": agents choose at decision points; "sumo-rerouting": no decisions, SUMO's own
    # travel-time rerouting device steers the agents (a baseline through the same env and metrics)
    control: str = "policy"
    label: str | None = None  # TraCI connection label (several simulations in one process)
    sumo_args: tuple[str, ...] = ()
