"""The method registry behind ``cosim train --method``. Light to import (factories import lazily), so
the CLI can list the names without loading torch.

Add a method with ``register_method("name", factory, "one-line help")``; ``factory(cfg) -> Method``
receives the run's `agents.runner.TrainConfig` (``cfg.ppo`` holds PPO overrides, ``cfg.options``
method-specific settings such as a demonstrations folder). ``options=("w0", ...)`` names the
method-specific settings ``cosim train --set key=value`` routes into ``cfg.options``;
``needs_demos=True`` marks methods that learn from (or replay) expert demonstrations.

Demonstrations: ``cfg.options["demos"]`` (``cosim train --demos DIR``) wins; otherwise the function set
with ``set_demo_provider(fn)`` makes them, ``fn(scenario: str, agents: int | None, seed: int,
first_round: bool) -> Path`` (the cosim CLI registers one that runs the SED pipeline; agents/ itself
never imports llm/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agents.base import Method, TrainError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., Method]
    help: str
    learns: bool
    options: tuple[str, ...] = ()  # method-specific settings (`--set key=value` -> cfg.options)
    needs_demos: bool = False  # learns from / replays expert demonstrations


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    factory: Callable[..., Method],
    help: str,
    learns: bool = True,
    options: tuple[str, ...] = (),
    needs_demos: bool = False,
) -> None:
    METHODS[name] = MethodSpec(name, factory, help, learns, tuple(options), needs_demos)


# ------------------------------------------------------------------------------ demonstrations
DemoProvider = Callable[[str, "int | None", int, bool], Path]
_demo_provider: DemoProvider | None = None


def set_demo_provider(fn: DemoProvider | None) -> DemoProvider | None:
    """Register ``fn(scenario, agents, seed, first_round) -> demos folder`` (None: unregister); returns
    the previous one. ``first_round=True`` asks for the one-shot (round-1, unvalidated) demonstrations."""
    global _demo_provider
    old, _demo_provider = _demo_provider, fn
    return old


def get_demo_provider() -> DemoProvider | None:
    return _demo_provider


def resolve_demos(cfg, first_round: bool = False) -> Path:
    """The demonstrations folder of a run: ``cfg.options["demos"]`` (its ``first_round/`` for the
    one-shot variants), else the registered provider's, else a TrainError."""
    given = cfg.options.get("demos")
    if given:
        folder = Path(given)
        if first_round:
            if not (folder / "first_round").is_dir():
                raise TrainError(
                    f"method {cfg.method!r} learns from one-shot (first-round) demonstrations, but {folder} "
                    "has no first_round/ folder (written by `cosim demos`)"
                )
            folder = folder / "first_round"
        return folder
    if _demo_provider is None:
        raise TrainError(
            f"method {cfg.method!r} needs expert demonstrations: --demos DIR is required, or run through "
            "the cosim CLI, which generates them with the SED pipeline (or make a folder with `cosim demos --out DIR`)"
        )
    # the provider may run SED (SUMO, an LLM): keep the run's seeded random streams untouched by it, so
    # a run that generated its demonstrations equals one that found them cached
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        return Path(_demo_provider(cfg.scenario, cfg.agents, cfg.seed, first_round))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


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


def _reled_family(name: str, adaptive: bool, first_round: bool):
    def factory(cfg):
        from agents.reled import RELEDConfig, RELEDLearner

        from agents.ppo import PPOConfig

        rcfg = RELEDConfig.from_options(cfg.options, adaptive=adaptive)  # bad settings fail before demos are made
        # shared networks with agent indication by default: the expert's choices are per agent (an LLM plan
        # per trip), which a shared policy without the agent's identity cannot imitate; --set agent_id=false
        ppo = PPOConfig.from_dict({"agent_id": True, **cfg.ppo})
        return RELEDLearner(ppo, resolve_demos(cfg, first_round), rcfg, name=name)

    return factory


def _expert_replay(cfg):
    from agents.baselines import ReplayMethod
    from agents.reled import load_expert_plans

    m = ReplayMethod(load_expert_plans(resolve_demos(cfg)))
    m.name = "expert-replay"
    return m


register_method("ippo", _ippo, "independent PPO: decentralised critic on the agent's own observation")
register_method("mappo", _mappo, "MAPPO: centralised critic on the global state + own observation")
register_method("random", _random, "a random valid action at every decision", learns=False)
register_method("shortest", _shortest, "the free-flow shortest continuation at every decision", learns=False)
register_method("sumo-rerouting", _rerouting, "SUMO's travel-time rerouting device steers the agents", learns=False)
register_method("replay", _replay, "replay fixed route plans from --plans FILE", learns=False)

_RELED_OPTIONS = ("w0", "eta", "d0", "phi", "bc_batch", "pretrain")  # = agents.reled.RELEDConfig.OPTIONS
register_method("reled", _reled_family("reled", True, False),
                "RELED: PPO + expert loss, w_i = w0*eta^k*phi(DTW_i), SED demos (--demos DIR)",
                options=_RELED_OPTIONS, needs_demos=True)  # fmt: skip
register_method("leed", _reled_family("leed", False, True),
                "LEED: PPO + fixed-weight expert loss (w0), one-shot first-round demos",
                options=_RELED_OPTIONS, needs_demos=True)  # fmt: skip
register_method("reled-nosed", _reled_family("reled-nosed", True, True),
                "RELED ablation: RELED weights, first-round (unvalidated, no SED) demos",
                options=_RELED_OPTIONS, needs_demos=True)  # fmt: skip
register_method("reled-fixedw", _reled_family("reled-fixedw", False, False),
                "RELED ablation: SED demos, fixed weight w0 (no DTW, no decay)",
                options=_RELED_OPTIONS, needs_demos=True)  # fmt: skip
register_method("expert-replay", _expert_replay, "replay the SED expert plans (plans.json of --demos DIR)",
                learns=False, needs_demos=True)  # fmt: skip
