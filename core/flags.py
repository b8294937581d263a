"""The command line's shortcuts into the configuration tree, written once: every flag that sets one
setting (`--episodes` → `run.episodes`) is one row of `SHORTCUTS`. `core.shortcuts` makes typer options
from the rows, `core.settings` names a setting by the flag the user typed, `TrainConfig.of` takes the
same names from Python.

Standard library only (this is the base layer); the rows are names, not imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError


def positive_or_auto(flag: str) -> Callable[[str | None], int | None]:
    """`N | auto` for a count of processes: auto is 0 in the tree (one per free core)."""

    def parse(text: str | None) -> int | None:
        if text is None:
            return None
        if text.strip().lower() == "auto":
            return 0
        try:
            n = int(text)
        except ValueError:
            n = -1
        if n < 1:
            raise UserError(f"{flag} must be a positive number of processes or auto, got {text!r}")
        return n

    return parse


def as_text(value) -> str | None:
    return None if value is None else str(value)


def resolved_path(value) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def resolved_paths(value) -> str | None:
    """A path, or several comma-separated (one per city), each made absolute."""
    if value is None:
        return None
    return ",".join(str(Path(v.strip()).expanduser().resolve()) for v in str(value).split(",") if v.strip())


@dataclass(frozen=True)
class Shortcut:
    name: str  # the command's parameter and TrainConfig.of's keyword
    path: str  # the setting it sets
    flags: tuple[str, ...]  # "--episodes", "-e"
    type: Any  # what typer parses
    help: str = ""  # "" : the field's own comment
    parse: Callable[[Any], Any] | None = None  # the parsed flag -> the setting's value


SHORTCUTS: dict[str, Shortcut] = {
    s.name: s
    for s in [
        Shortcut("scenario", "scenario.name", ("--scenario", "-s"), str,
                 "City: a shipped name, a recipe, an OSM or net file, or a built folder."),
        Shortcut("method", "algorithm.method", ("--method", "-m"), str,
                 "A registered method: ippo, mappo, reled, leed, …, or a baseline (shortest, sumo-rerouting, …)."),
        Shortcut("plans", "algorithm.plans", ("--plans",), Path, "replay: JSON file agent id -> list of edge ids.",
                 parse=as_text),
        Shortcut("demos", "algorithm.demos", ("--demos",), Path,
                 "Expert demonstrations folder (`cosim demos --out DIR`) for the methods that use them, one per "
                 "city comma-separated on several; default: made by the SED pipeline.", parse=resolved_paths),
        Shortcut("episodes", "run.episodes", ("--episodes", "-e"), int),
        Shortcut("seed", "run.seed", ("--seed",), int),
        Shortcut("seeds", "run.seeds", ("--seeds",), int),
        Shortcut("eval_every", "run.eval_every", ("--eval-every",), int),
        Shortcut("eval_seed", "run.eval_seed", ("--eval-seed",), int),
        Shortcut("time_limit", "run.time_limit", ("--time-limit",), float,
                 "Cut training episodes after this many simulated s, bootstrapping the values (null: the horizon)."),
        Shortcut("workers", "run.workers", ("--workers", "-w"), int),
        Shortcut("rollout_workers", "run.rollout_workers", ("--workers", "-w"), str,
                 "Rollout worker processes, each with its own SUMO (auto: one per free core).",
                 parse=positive_or_auto("--workers")),
        Shortcut("executor", "run.executor", ("--executor",), str, "local (processes) or ray."),
        Shortcut("ray_address", "run.ray_address", ("--ray-address",), str, "Join this Ray cluster (host:port)."),
        Shortcut("out", "run.out", ("--out", "-o"), Path, parse=as_text),
        Shortcut("agents", "env.n_agents", ("--agents", "-n"), int, "Controlled agents (null: the city's)."),
        Shortcut("horizon", "env.horizon", ("--horizon",), float, "Episode horizon in s (null: the city's)."),
        Shortcut("backend", "env.backend", ("--backend",), str, "libsumo or traci."),
        Shortcut("llm", "sed.llm", ("--llm",), str),
        Shortcut("expert", "algorithm.expert", ("--expert",), str,
                 "Who demonstrates: llm (SED), navigation (live-fastest routes) or dua (the user equilibrium)."),
        Shortcut("rounds", "sed.rounds", ("--rounds",), int),
        Shortcut("rollouts", "sed.rollouts", ("--rollouts",), int),
        Shortcut("threshold", "sed.threshold", ("--threshold",), float),
        Shortcut("c", "sed.c", ("--c",), float),
        Shortcut("k", "sed.k", ("--k",), int),
        Shortcut("subset_size", "sed.subset_size", ("--subset-size",), int),
        Shortcut("request_timeout", "sed.request_timeout", ("--request-timeout",), float),
        Shortcut("max_concurrency", "sed.max_concurrency", ("--max-concurrency",), int),
        Shortcut("cache", "sed.cache_file", ("--cache",), str),
    ]
}  # fmt: skip


def flag_of(path: str) -> str | None:
    """The flag that sets `path` (for messages), or None when only --set and --config do."""
    for s in SHORTCUTS.values():
        if s.path == path:
            return s.flags[0]
    return None
