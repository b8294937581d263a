"""The one resolver for every path under ``$COSIM_HOME`` (scenario cache, demonstrations, LLM cache).

``COSIM_HOME`` unset or empty means ``~/.cache/cosim``; ``~`` is expanded and a relative value is taken
from the current folder once, here (and written back as an absolute path, so that child processes
started in other folders agree), so that no part of the suite ends up writing into a folder literally
named ``~`` or into the current folder by accident. A value that names a file, or a folder that cannot
be created or written, is a user error with one line, raised before any work starts.

Standard library only: this is on the scenario cache-hit path.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import UserError

DEFAULT_HOME = Path("~") / ".cache" / "cosim"
HINT = "set COSIM_HOME to a folder you can write"


class HomeError(UserError):
    """COSIM_HOME (or a folder under it) cannot be used."""


def cosim_home() -> Path:
    """The absolute COSIM_HOME folder (not created, not checked)."""
    raw = os.environ.get("COSIM_HOME", "").strip()
    path = Path(os.path.expanduser(raw or DEFAULT_HOME))  # pathlib's raises RuntimeError where this keeps "~"
    if str(path).startswith("~"):  # "~someone/x" for a user this system does not know
        raise HomeError(f"COSIM_HOME={raw!r}: cannot expand {path.parts[0]!r}; {HINT}")
    if raw and not path.is_absolute():
        path = path.absolute()
        os.environ["COSIM_HOME"] = str(path)
    return path


def home_dir(*parts: str, create: bool = True, writable: bool = True) -> Path:
    """``$COSIM_HOME/<parts…>``; with ``create``, created and checked to be a folder (and, with
    ``writable``, one this process may write: reading a shared read-only cache needs no more)."""
    home = cosim_home()
    path = home.joinpath(*parts)
    if not create:
        return path
    for p in (path, *path.parents):  # the nearest part that exists must be a folder
        if p.exists():
            if not p.is_dir():
                raise HomeError(f"COSIM_HOME={home}: {p} is a file, not a folder; {HINT}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HomeError(f"COSIM_HOME={home}: cannot create {path} ({exc.strerror or exc}); {HINT}") from None
    if writable and not os.access(path, os.W_OK | os.X_OK):
        raise HomeError(f"COSIM_HOME={home}: {path} is not writable; {HINT}")
    return path
