"""Typed configuration trees: dataclasses of settings, nested one level per section, read from TOML or
JSON files and ``--set section.key=value`` overrides, written back as JSON.

Why here: every layer's commands take the same ``--config`` / ``--set`` (the scenario builder, the env,
the learners, the LLM pipeline), and this is the lowest layer, so all of them can use one reader. The
tree itself (which sections exist) is assembled by the top layer (`evaluation.config`) and registered
with `set_experiment_class`; a layer run on its own falls back to the part of the tree it knows.

Each default is written once, in its dataclass, next to its comment; nothing here holds a default.
Values are checked against the annotations: a wrong key or type is a `SettingsError` naming the key and
the allowed ones, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.flags import flag_of


class SettingsError(UserError):
    """A configuration file, section, key or value that cannot be used."""


# ------------------------------------------------------------------------------------------- types
def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls) -> list[dataclasses.Field]:
    """The settings of a dataclass: its init fields (``field(init=False)`` is derived state)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def _optional(tp) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) != len(typing.get_args(tp))
    return tp, False


def _describe(tp) -> str:
    inner, none = _optional(tp)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(inner)
    if name is None:
        origin = typing.get_origin(inner)
        name = "a list of strings" if origin in (tuple, list) else getattr(inner, "__name__", str(inner))
    return name + (" or null" if none else "")


def coerce(tp, value, key: str):
    """`value` as type `tp` (ints are numbers; nothing else is converted), or a SettingsError."""
    inner, none = _optional(tp)
    if value is None:
        if none:
            return None
        raise SettingsError(f"{key} must be {_describe(tp)}, got null")
    ok = False
    if inner is bool:
        ok = isinstance(value, bool)
    elif inner is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif inner is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif inner is str:
        ok = isinstance(value, str)
    elif typing.get_origin(inner) in (tuple, list):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif inner is Any:
        ok = True
    if not ok:
        raise SettingsError(f"{key} must be {_describe(tp)}, got {value!r}")
    return value


# ------------------------------------------------------------------------------------- tree <-> dict
def from_dict(cls, data: Mapping, where: str = ""):
    """A `cls` instance from a (possibly partial) mapping: missing keys keep their defaults."""
    return update(cls(), data, where)


def update(obj, data: Mapping, where: str = ""):
    """A copy of the tree `obj` with the values of `data` (any subset of its sections and keys)."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{where or 'the configuration'} must be a table of settings, got {data!r}")
    hints = field_types(type(obj))
    names = [f.name for f in _fields(type(obj))]
    changes = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            kind = "section" if not where else "key"
            raise SettingsError(f"unknown {kind} {path!r}; known: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            changes[key] = update(getattr(obj, key), value, path)
        else:
            changes[key] = coerce(tp, value, path)
    return dataclasses.replace(obj, **changes)


def to_dict(obj) -> dict:
    """The tree as plain JSON data (tuples as lists), sections in declaration order."""
    out = {}
    for f in _fields(type(obj)):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def flatten(d: Mapping, prefix: str = "") -> dict:
    """``{"env": {"reward_scale": 60}}`` -> ``{"env.reward_scale": 60}`` (the W&B run config's form)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def diff(old: Mapping, new: Mapping) -> str:
    """``a.b: 1 -> 2; …`` for the keys whose values differ (flattened)."""
    a, b = flatten(old), flatten(new)
    return "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def paths(cls, prefix: str = "") -> dict[str, Any]:
    """Every setting's dotted path -> its type."""
    out = {}
    hints = field_types(cls)
    for f in _fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(paths(hints[f.name], key))
        else:
            out[key] = hints[f.name]
    return out


def default_of(cls, path: str):
    """The default of one setting (for --help texts: the tree's value, not a second copy)."""
    obj = cls()
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# -------------------------------------------------------------------------------------- overrides
def load_file(path: str | Path) -> dict:
    """A configuration file's settings: TOML (``.toml``) or JSON (``.json``, e.g. a run's config.json,
    whose ``config`` member is the tree)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SettingsError(f"--config {p} does not exist" if not p.exists() else f"--config {p} is not a file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--config {p} cannot be read: {exc}") from None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--config {p} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]  # a run's config.json
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"--config {p} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"--config {p} must hold tables of settings")
    return data


def parse_set(item: str, cls) -> tuple[str, Any]:
    """``section.key=value`` (or a bare ``key=value`` where the key names one setting of the tree) ->
    (dotted path, value). Values are read as JSON where they parse (numbers, true, null, [..]),
    otherwise taken as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SettingsError(f"--set expects section.key=value, got {item!r}")
    key = locate(cls, key, f"--set {key}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if value is not None and not isinstance(value, (bool, int, float, str, list)):
        value = raw
    return key, value


def locate(cls, key: str, what: str = "") -> str:
    """The dotted path of a setting: `key` itself, or the one setting whose name `key` is."""
    import difflib

    what = what or key
    known = paths(cls)
    if key in known:
        return key
    ends = [p for p in known if p.rsplit(".", 1)[-1] == key]
    if len(ends) == 1:
        return ends[0]
    if len(ends) > 1:
        raise SettingsError(f"{what}: ambiguous, say which: {', '.join(ends)}")
    section, _, leaf = key.rpartition(".")
    keys = sorted(p.rsplit(".", 1)[-1] for p in known if p.rpartition(".")[0] == section)
    if section and keys:
        raise SettingsError(f"{what}: unknown key {leaf!r} in {section}; known: {', '.join(keys)}")
    close = difflib.get_close_matches(key, list(known) + [p.rsplit(".", 1)[-1] for p in known], n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    sections = sorted({p.split(".", 1)[0] for p in known})
    raise SettingsError(f"{what}: unknown setting (sections: {', '.join(sections)}){hint}")


def nest(flat: Mapping[str, Any]) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def resolve(cls, config_file: str | Path | None = None, sets: list[str] | tuple[str, ...] = (),
            shortcuts: Mapping[str, Any] | None = None, base=None):  # fmt: skip
    """The resolved tree: `base` (default: the defaults) < the --config file < the command's shortcut
    flags (dotted path -> value; None = not given) < --set overrides. Raises SettingsError."""
    tree = base if base is not None else cls()
    if config_file:
        tree = update(tree, load_file(config_file))
    given = {k: v for k, v in (shortcuts or {}).items() if v is not None}
    if given:
        tree = update(tree, nest(given))
    if sets:
        tree = update(tree, nest(dict(parse_set(s, cls) for s in sets)))
    # a value out of its range is named as the user gave it: by its flag, else by its path
    named = {path: flag_of(path) for path in given if flag_of(path)}
    problems = limit_problems(tree, named)
    if problems:
        raise SettingsError("; ".join(problems[:3]))
    return tree


# ------------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Limits:
    """The range of one setting, written next to its field (``field(metadata=limits(gt=0))``) and read
    by the one checker, `limit_problems`."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    note: str = ""  # why, after the range ("SUMO's seeds are 32-bit")

    def problem(self, value) -> str | None:
        """What `value` must be instead ("a positive number", "in [0, 1]", "local or ray"), or None."""
        if self.choices is not None:
            if value in self.choices:
                return None
            return " or ".join(self.choices) if len(self.choices) == 2 else "one of " + ", ".join(self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # a wrong type is the type check's to report
        ok = (math.isfinite(value) and (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
              and (self.le is None or value <= self.le))  # fmt: skip
        if ok:
            return None
        note = f" ({self.note})" if self.note else ""
        if self.le is not None and self.ge is not None and float(self.le).is_integer():
            return f"in {_num(self.ge)}..{_num(self.le)}{note}"
        if self.le is not None:
            low = self.ge if self.gt is None else self.gt
            return f"in {'[' if self.gt is None else '('}{_num(low)}, {_num(self.le)}]{note}"
        if self.gt == 0:
            return f"a positive number{note}"
        return f"> {_num(self.gt)}{note}" if self.gt is not None else f">= {_num(self.ge)}{note}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def limits(**kw) -> dict:
    """A field's metadata holding its range: ``lr: float = field(default=1e-3, metadata=limits(gt=0))``."""
    return {"limits": Limits(**{k: tuple(v) if k == "choices" else v for k, v in kw.items()})}


def limit_problems(obj, named: Mapping[str, str] | None = None, prefix: str = "") -> list[str]:
    """Every setting of a tree (or one section) outside its range, one phrase each, the setting named by
    `named[path]` (the flag the user typed) or else by its dotted path."""
    out = []
    for f in dataclasses.fields(obj):
        path, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += limit_problems(value, named, path + ".")
            continue
        lim = f.metadata.get("limits")
        why = lim.problem(value) if lim is not None and value is not None else None
        if why:
            shown = repr(value) if isinstance(value, str) else value
            out.append(f"{(named or {}).get(path, path)} must be {why}, got {shown}")
    return out


# ------------------------------------------------------------------------------- the whole tree
_experiment_class = None


def set_experiment_class(cls) -> None:
    """Register the whole experiment tree (the top layer does, at start-up)."""
    global _experiment_class
    _experiment_class = cls


def experiment_class(fallback):
    """The registered whole tree, or `fallback` (a layer's own part of it) when none is registered."""
    return _experiment_class or fallback


def help_for(cls, path: str, text: str) -> str:
    """A command-line flag's help with the tree's default (the flag itself defaults to "not given")."""
    return f"{text} (default {json.dumps(default_of(cls, path), default=str)}; --set {path}=…)"


CONFIG_HELP = "TOML (or a run's config.json) with any subset of the configuration tree's sections."
SET_HELP = "Override one setting: section.key=value, e.g. env.reward_scale=30 or algorithm.ppo.lr=3e-4 (repeatable)."
