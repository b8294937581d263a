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
    # what agents know: "live" (default) sees every candidate's live and free-flow time to the destination,
    # delay ratio, traffic on it and other agents' intent; "candidate" is the observation before 2026-12
    # (free-flow times, the candidate edge's traffic; also under its old name "default")
    observation: str = "live"
    # the route after a chosen edge: "live" = fastest under live times (a navigation app), "free_flow" =
    # free-flow shortest (the env before 2026-12). Candidates (and so action 0) are ordered the same way
    continuation: str = field(default="live", metadata=limits(choices=("live", "free_flow")))
    # routes count the time to cross each junction and SUMO's 1.5 s minor-link penalty, as SUMO's own
    # routers do (free-flow routes are then duarouter's); false: edge times only (the env before 2026-12-07)
    junction_times: bool = True
    # live times: every edge's mean speed is sampled every traffic_update_s simulated seconds and
    # averaged over the last traffic_window_s (how SUMO's rerouting device smooths its edge weights)
    traffic_update_s: float = field(default=30.0, metadata=limits(gt=0))
    traffic_window_s: float = field(default=90.0, metadata=limits(gt=0))
    # the intent feature counts other agents whose current routes enter a candidate within this many s
    intent_horizon_s: float = field(default=300.0, metadata=limits(gt=0))
    reward: str = "travel_time"
    reward_scale: float = field(default=60.0, metadata=limits(gt=0))
    # reward "team": the seconds paid are (1 - team_weight) x the agent's own + team_weight x its share of
    # every vehicle's time in the network (cosim.features.TeamReward)
    team_weight: float = field(default=1.0, metadata=limits(ge=0, le=1))
    teleport_penalty: float = field(default=5.0, metadata=limits(ge=0))
    timeout_penalty: float = field(default=10.0, metadata=limits(ge=0))
    # "policy": agents choose at decision points; "sumo-rerouting": no decisions, SUMO's own
    # travel-time rerouting device steers the agents (a baseline through the same env and metrics)
    control: str = "policy"
    # sumo-rerouting's device: the agents (trips) are routed at insertion and then every rerouting_period s
    # (0: never again) on edge times that SUMO averages over rerouting_adaptation_steps samples taken every
    # rerouting_adaptation_interval s. SUMO's own defaults: 0, 180, 1. The period is set on the agents
    # only; the adaptation settings are SUMO-wide: they would also steer background trips routed at
    # insertion, so they may leave SUMO's defaults only where the background's routes are fixed
    # The defaults are SUMO's: the strongest setting of `cosim bench rerouting` on helsinki (docs/results.md)
    rerouting_period: float = field(default=0.0, metadata=limits(ge=0))
    rerouting_adaptation_steps: int = field(default=180, metadata=limits(gt=0))
    rerouting_adaptation_interval: float = field(default=1.0, metadata=limits(gt=0))
    label: str | None = None  # TraCI connection label (several simulations in one process)
    sumo_args: tuple[str, ...] = ()
