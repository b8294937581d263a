"""Small file helpers every layer shares: an atomic write, a forgiving JSON read, JSON-safe values.

In the lowest layer so that runs, comparisons, demonstrations and scenario builds all write their files
the same way: a reader never sees half a file, and NaN (which JSON lacks) becomes null everywhere.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from core.procs import pid_alive


def atomic_write(path: str | Path, data: str | bytes, durable: bool = False) -> None:
    """Write through a temporary sibling and rename it over `path` (atomic on one file system).
    `durable` also fsyncs before the rename (checkpoints: the run resumes from whatever is there)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary siblings that atomic_write left in folder when its process was killed
    between writing and renaming (``.NAME.PID.tmp`` whose PID is gone)."""
    removed = []
    for tmp in Path(folder).glob(".*.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def read_json(path: str | Path, default: Any = None) -> Any:
    """The file's JSON, or `default` when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return default


def clean(v: Any) -> Any:
    """A JSON-safe scalar: NaN and infinities -> None, numpy scalars -> Python ones."""
    item = getattr(v, "item", None)
    if item is not None and getattr(v, "shape", None) == ():
        v = item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def clean_dict(d: dict) -> dict:
    return {k: clean(v) for k, v in d.items()}
