"""The method registry behind ``cosim train --method``. Light to import (factories import lazily), so
the CLI can list the names without loading torch.

Add a method with ``register_method("name", factory, "one-line help")``; ``factory(cfg) -> Method``
receives the run's `agents.runner.TrainConfig` (``cfg.ppo`` holds PPO overrides, ``cfg.options``
method-specific settings such as a demonstrations folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from agents.base import Method, TrainError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., Method]
    help: str
    learns: bool


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, factory: Callable[..., Method], help: str, learns: bool = True) -> None:
    METHODS[name] = MethodSpec(name, factory, help, learns)


def method_names() -> list[str]:
    return list(METHODS)


def check_method(name: str) -> MethodSpec:
    spec = METHODS.get(name)
    if spec is None:
        raise TrainError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return spec


def make_method(cfg) -> Method:
    return check_method(cfg.method).factory(cfg)


def ppo_config(cfg):
    """The PPOConfig of a run: defaults overridden by ``cfg.ppo`` (validated by the runner)."""
    from agents.ppo import PPOConfig

    return PPOConfig.from_dict(cfg.ppo)


def _ippo(cfg):
    from agents.marl import PPOLearner

    return PPOLearner(ppo_config(cfg), critic="local", name="ippo")


def _mappo(cfg):
    from agents.marl import PPOLearner

    return PPOLearner(ppo_config(cfg), critic="central", name="mappo")


def _random(cfg):
    from agents.baselines import RandomMethod

    return RandomMethod(cfg.seed, cfg.eval_seed)


def _shortest(cfg):
    from agents.baselines import ShortestMethod

    return ShortestMethod()


def _rerouting(cfg):
    from agents.baselines import SumoReroutingMethod

    return SumoReroutingMethod()


def _replay(cfg):
    from agents.baselines import ReplayMethod, load_plans

    if not cfg.plans:
        raise TrainError("method 'replay' needs --plans FILE (JSON: agent id -> list of edge ids)")
    return ReplayMethod(load_plans(cfg.plans))


register_method("ippo", _ippo, "independent PPO: decentralised critic on the agent's own observation")
register_method("mappo", _mappo, "MAPPO: centralised critic on the global state + own observation")
register_method("random", _random, "a random valid action at every decision", learns=False)
register_method("shortest", _shortest, "the free-flow shortest continuation at every decision", learns=False)
register_method("sumo-rerouting", _rerouting, "SUMO's travel-time rerouting device steers the agents", learns=False)
register_method("replay", _replay, "replay fixed route plans from --plans FILE", learns=False)
