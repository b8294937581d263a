"""The command line's shortcuts into the configuration tree, written once.

Every flag that sets one setting (`--episodes` → `run.episodes`) is one row of `SHORTCUTS`; a command
names the rows it offers and `shortcut_options` makes its typer options from them: the flags, the type,
the help (the field's own comment, unless the row says better) with the tree's default. The command gets
the values the user gave as ``shortcuts = {path: value}``, which `core.settings.resolve` lays over the
defaults and `--config` (and under `--set`). `TrainConfig.of` takes the same names from Python.

Standard library and typer only (this is the base layer); the rows are names, not imports.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.settings import default_of, field_types


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
                 "Expert demonstrations folder (`cosim demos --out DIR`) for the methods that use them; "
                 "default: made by the SED pipeline.", parse=resolved_path),
        Shortcut("episodes", "run.episodes", ("--episodes", "-e"), int),
        Shortcut("seed", "run.seed", ("--seed",), int),
        Shortcut("seeds", "run.seeds", ("--seeds",), int),
        Shortcut("eval_every", "run.eval_every", ("--eval-every",), int),
        Shortcut("eval_seed", "run.eval_seed", ("--eval-seed",), int),
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


# ------------------------------------------------------------------------------------------ help
def _section(cls, path: str):
    """The dataclass holding the setting at `path` and the field's name, or (None, None)."""
    *parents, name = path.split(".")
    for part in parents:
        if cls is None or not is_dataclass(cls):
            return None, None
        cls = field_types(cls).get(part)
    if cls is None or not is_dataclass(cls) or name not in {f.name for f in fields(cls)}:
        return None, None
    return cls, name


@functools.cache
def _comments(cls) -> dict[str, str]:
    """The comment written after each field of a dataclass section, by field name."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M):
        out.setdefault(m.group(1), m.group(2).strip())
    return out


def field_help(cls, path: str) -> str:
    """The setting's own comment, as a sentence ("" when it has none)."""
    section, name = _section(cls, path)
    text = _comments(section).get(name, "") if section is not None else ""
    return (text + ("" if text.endswith(".") else ".")) if text else ""


def describe(cls, path: str, text: str = "", base=None) -> str:
    """A flag's help: its text (default: the field's comment) and the default it leaves in place (the
    tree's, or `base`'s, e.g. `cosim demo`'s preset)."""
    text = text or field_help(cls, path) or path
    if base is not None:
        value = base
        for part in path.split("."):
            value = getattr(value, part)
    else:
        try:
            value = default_of(cls, path)
        except (UserError, AttributeError, KeyError, TypeError):
            return text
    return f"{text} (default {json.dumps(value, default=str)}; --set {path}=…)"


# ------------------------------------------------------------------------------------------ options
def shortcut_options(*names: str, tree: Callable[[], Any], base: Callable[[], Any] | None = None,
                     short: bool = True, helps: dict[str, str] | None = None) -> Callable:  # fmt: skip
    """A decorator for a typer command: it adds one option per named shortcut and calls the command with
    ``shortcuts={path: value}`` (None where the flag was not given) instead of those options. `tree()`
    is the configuration class whose defaults the help shows (`base()` an object to show instead);
    `short=False` leaves out the one-letter flags; `helps` words a shortcut for this command."""
    import typer

    rows = [SHORTCUTS[n] for n in names]

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "shortcuts"]
        cls, shown = tree(), base() if base is not None else None
        added = []
        for s in rows:
            flags = s.flags if short else tuple(f for f in s.flags if f.startswith("--"))
            text = (helps or {}).get(s.name, s.help)
            option = typer.Option(None, *flags, help=describe(cls, s.path, text, shown))
            added.append(inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                           annotation=s.type | None))  # fmt: skip
        params = added + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(fn)
        def command(**kwargs):
            given = {}
            for s in rows:
                value = kwargs.pop(s.name)
                given[s.path] = s.parse(value) if s.parse is not None else value
            return fn(shortcuts=given, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must see the new signature, not the function's
        return command

    return deco
