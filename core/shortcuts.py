"""Typer options from the shortcut table (`core/flags.py`): a command names the rows it offers and
`shortcut_options` makes its options from them — the flags, the type, the help (the field's own comment,
unless the row says better) with the tree's default. The command gets the values the user gave as
``shortcuts = {path: value}``, which `core.settings.resolve` lays over the defaults and `--config` (and
under `--set`).

Typer and the standard library only (this is the base layer).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from core.errors import UserError
from core.flags import SHORTCUTS
from core.settings import default_of, field_types


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
    """The comment written after each field of a dataclass section, by field name (on the field's line, or
    on its last line where the formatter wrapped it)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            for line in (lines[node.lineno - 1], lines[node.end_lineno - 1]):
                m = re.search(r"#\s*(.+)$", line)
                if m:
                    out[node.target.id] = m.group(1).strip()
                    break
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
