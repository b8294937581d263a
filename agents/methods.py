"""The method registry behind ``cosim train --method``. Light to import (factories import lazily), so
the CLI can list the names without loading torch.

Add a method with ``register_method("name", factory, "one-line help")``; ``factory(cfg) -> Method``
receives the run's configuration tree (`agents.config.TrainConfig`: ``cfg.algorithm.ppo``,
``cfg.algorithm.reled``, ``cfg.algorithm.plans``, ``cfg.algorithm.demos``, …). ``needs_demos=True``
marks methods that learn from (or replay) expert demonstrations.

Demonstrations: ``cfg.algorithm.demos`` (``cosim train --demos DIR``; on several cities one folder per
city, ``--demos A,B``) wins; otherwise the function set
with ``set_demo_provider(fn)`` makes them, ``fn(cfg, first_round: bool) -> Path`` with the run's whole
tree (the cosim CLI registers one that runs the SED pipeline with the tree's ``sed`` section; agents/
itself never imports llm/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.base import Method, TrainError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    factory: Callable[..., Method]
    help: str
    learns: bool
    needs_demos: bool = False  # learns from / replays expert demonstrations: the one source of that list
    # learns with RELED's expert term (reads algorithm.reled; shared networks get the agent's identity by
    # default: an expert's choices are per agent, which a shared policy without it cannot imitate)
    expert_loss: bool = False


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    factory: Callable[..., Method],
    help: str,
    learns: bool = True,
    needs_demos: bool = False,
    expert_loss: bool = False,
) -> None:
    METHODS[name] = MethodSpec(name, factory, help, learns, needs_demos, expert_loss)


# ------------------------------------------------------------------------------ demonstrations
DemoProvider = Callable[..., Path]
_demo_provider: DemoProvider | None = None


def set_demo_provider(fn: DemoProvider | None) -> DemoProvider | None:
    """Register ``fn(cfg, first_round) -> demos folder`` (None: unregister); returns
    the previous one. ``first_round=True`` asks for the one-shot (round-1, unvalidated) demonstrations."""
    global _demo_provider
    old, _demo_provider = _demo_provider, fn
    return old


def get_demo_provider() -> DemoProvider | None:
    return _demo_provider


def resolve_demos(cfg, first_round: bool = False) -> Path:
    """The demonstrations folder of a run: ``cfg.algorithm.demos`` (its ``first_round/`` for the
    one-shot variants), else the registered provider's, else a TrainError."""
    given = cfg.algorithm.demos
    if given:
        from cosim.demos import FIRST_ROUND

        folder = Path(given)
        if first_round:
            if not (folder / FIRST_ROUND).is_dir():
                raise TrainError(
                    f"method {cfg.algorithm.method!r} learns from one-shot (first-round) demonstrations, but {folder} "
                    f"has no {FIRST_ROUND}/ folder (written by `cosim demos`)"
                )
            folder = folder / FIRST_ROUND
        return folder
    if _demo_provider is None:
        raise TrainError(
            f"method {cfg.algorithm.method!r} needs expert demonstrations: --demos DIR is required, or run through "
            "the cosim CLI, which generates them with the SED pipeline (or make a folder with `cosim demos --out DIR`)"
        )
    # the provider may run SED (SUMO, an LLM): keep the run's seeded random streams untouched by it, so
    # a run that generated its demonstrations equals one that found them cached
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        return Path(_demo_provider(cfg, first_round))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def resolve_city_demos(cfg, first_round: bool = False) -> list[Path]:
    """One demonstrations folder per city of the run, in its order of cities: ``--demos A,B`` names them,
    else the provider makes each city's (with the run's tree on that city alone)."""
    from dataclasses import replace

    cities = cfg.scenario.cities()
    if len(cities) == 1:
        return [resolve_demos(cfg, first_round)]
    given = [d.strip() for d in (cfg.algorithm.demos or "").split(",") if d.strip()]
    out = []
    for i, city in enumerate(cities):
        one = replace(cfg, scenario=replace(cfg.scenario, name=city, names=()))
        if given:
            one = replace(one, algorithm=replace(cfg.algorithm, demos=given[i]))
        out.append(resolve_demos(one, first_round))
    return out


def method_names() -> list[str]:
    return list(METHODS)


def check_method(name: str) -> MethodSpec:
    spec = METHODS.get(name)
    if spec is None:
        raise TrainError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return spec


def make_method(cfg) -> Method:
    return check_method(cfg.algorithm.method).factory(cfg)


def expert_loss_methods() -> tuple[str, ...]:
    """The methods with RELED's expert term (the registry's ``expert_loss``)."""
    return tuple(n for n, spec in METHODS.items() if spec.expert_loss)


def ppo_config(cfg):
    """The run's PPOConfig, with the method's choice of agent indication where the tree leaves it open
    (``algorithm.ppo.agent_id = null``): on one city, the expert-loss methods know their agent; on
    several, no method does (one city's agents are not another's)."""
    from dataclasses import replace

    ppo = cfg.algorithm.ppo
    default = check_method(cfg.algorithm.method).expert_loss and len(cfg.scenario.cities()) == 1
    return replace(ppo, agent_id=default if ppo.agent_id is None else ppo.agent_id)


def _ippo(cfg):
    from agents.marl import PPOLearner

    return PPOLearner(ppo_config(cfg), critic="local", name="ippo")


def _mappo(cfg):
    from agents.marl import PPOLearner

    return PPOLearner(ppo_config(cfg), critic="central", name="mappo")


def _random(cfg):
    from agents.baselines import RandomMethod

    return RandomMethod(cfg.run.seed, cfg.run.eval_seed)


def _shortest(cfg):
    from agents.baselines import ShortestMethod

    return ShortestMethod()


def _navigation(cfg):
    from agents.baselines import NavigationMethod

    return NavigationMethod()


def _rerouting(cfg):
    from agents.baselines import SumoReroutingMethod

    return SumoReroutingMethod()


def _replay(cfg):
    from agents.baselines import ReplayMethod, load_plans

    if not cfg.algorithm.plans:
        raise TrainError("method 'replay' needs --plans FILE (JSON: agent id -> list of edge ids)")
    return ReplayMethod(load_plans(cfg.algorithm.plans))


def _dua(cfg):
    from agents.baselines import DuaMethod

    return DuaMethod(cfg.algorithm.dua_iterations)


def _reled_family(name: str, adaptive: bool, first_round: bool):
    def factory(cfg):
        from agents.reled import RELEDConfig, RELEDLearner

        rcfg = RELEDConfig.from_settings(cfg.algorithm.reled, adaptive=adaptive)
        return RELEDLearner(ppo_config(cfg), resolve_city_demos(cfg, first_round), rcfg, name=name)

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
register_method("shortest", _shortest, "the free-flow shortest path, never changed", learns=False)
register_method("navigation", _navigation, "a navigation app: the live-fastest route at every decision",
                learns=False)  # fmt: skip
register_method("sumo-rerouting", _rerouting, "SUMO's travel-time rerouting device steers the agents", learns=False)
register_method("dua", _dua, "the agents' user equilibrium against the real background (duaIterate.py)",
                learns=False)  # fmt: skip
register_method("replay", _replay, "replay fixed route plans from --plans FILE", learns=False)

register_method("reled", _reled_family("reled", True, False),
                "RELED: PPO + expert loss, w_i = w0*eta^k*phi(DTW_i), SED demos (--demos DIR)",
                needs_demos=True, expert_loss=True)  # fmt: skip
register_method("leed", _reled_family("leed", False, True),
                "LEED: PPO + fixed-weight expert loss (w0), one-shot first-round demos",
                needs_demos=True, expert_loss=True)  # fmt: skip
register_method("reled-nosed", _reled_family("reled-nosed", True, True),
                "RELED ablation: RELED weights, first-round (unvalidated, no SED) demos",
                needs_demos=True, expert_loss=True)  # fmt: skip
register_method("reled-fixedw", _reled_family("reled-fixedw", False, False),
                "RELED ablation: SED demos, fixed weight w0 (no DTW, no decay)",
                needs_demos=True, expert_loss=True)  # fmt: skip
register_method("expert-replay", _expert_replay, "replay the SED expert plans (plans.json of --demos DIR)",
                learns=False, needs_demos=True)  # fmt: skip
