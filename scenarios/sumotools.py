"""Where SUMO is, for every layer: its home folder, its binaries, its Python tools and its version; and
running its programs (netconvert, sumo, duarouter) and tools (randomTrips.py) for the builder, each
within a time limit.

One rule for all: the eclipse-sumo wheel this package depends on comes first, a SUMO_HOME from the
environment only where that wheel is missing. So the net and routes the builder writes, the SUMO the
kernel launches (libsumo's wheel pins the same release line) and the version in the cache key are one
SUMO release. The builder's program output is captured into the build log; when one fails, its error
lines are condensed into the one-line message the user sees.

Standard library only: the scenario cache's hit path imports this module for the version.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from core.procs import descendants
from scenarios.errors import ScenarioError


@lru_cache(maxsize=1)
def sumo_home() -> Path:
    try:
        import sumo  # the eclipse-sumo wheel; importing it only sets up paths
    except ImportError:  # pragma: no cover
        home = os.environ.get("SUMO_HOME")
        if not home:
            raise ScenarioError("SUMO is not installed: pip install eclipse-sumo (or set SUMO_HOME)") from None
        return Path(home)
    return Path(sumo.SUMO_HOME)


def env() -> dict[str, str]:
    e = dict(os.environ)
    home = str(sumo_home())
    e["SUMO_HOME"] = home
    proj = os.path.join(home, "data", "proj")
    if os.path.isdir(proj):
        e["PROJ_LIB"] = e["PROJ_DATA"] = proj
    return e


def export_home() -> str:
    """Set SUMO_HOME in this process: libsumo runs SUMO in here and a TraCI child inherits our
    environment, and SUMO looks up its own data (XML schemas) there."""
    home = str(sumo_home())
    os.environ["SUMO_HOME"] = home
    return home


def binary(name: str) -> str:
    """SUMO's binary `name`, from SUMO's home, else from PATH; a one-line error if there is none."""
    path = sumo_home() / "bin" / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise ScenarioError(f"SUMO binary {name!r} not found (is eclipse-sumo installed?)")
    return found


def tool(relpath: str) -> str:
    return str(sumo_home() / "tools" / relpath)


@lru_cache(maxsize=1)
def version() -> str:
    """Read from the wheel's metadata, so the cache-hit path (the version is part of the cache key)
    neither starts SUMO nor imports sumolib."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("eclipse-sumo")
    except PackageNotFoundError:  # pragma: no cover - SUMO from elsewhere: ask the binary
        out = subprocess.run([binary("sumo"), "--version"], capture_output=True, text=True).stdout
        return out.split("\n", 1)[0].rsplit(" ", 1)[-1] or "unknown"


def condense(output: str, limit: int = 400) -> str:
    """The lines that say what went wrong, on one line: SUMO's 'Error:' lines, else the last lines."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith(("error", "traceback")) or "Error:" in ln]
    errors = [ln for ln in errors if not ln.lower().startswith("traceback")] or lines[-2:]
    seen, keep = set(), []
    for ln in errors:
        if ln not in seen:
            seen.add(ln)
            keep.append(ln)
    text = "; ".join(keep[:4]) or "no output"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Every external tool call has a time limit: a tool that hangs (duarouter stepping towards a departure
# in year 33 000, a netconvert on a planet file) must end a build with a message, not hold it forever.
# One hour covers the largest builds measured (adlershof's whole build: ~25 s); callers pass less or more.
TOOL_TIME_LIMIT_S = 3600.0


def _stop(proc: subprocess.Popen) -> None:
    """Kill a tool and everything it started, and reap it."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass


def run(args: list[str], what: str, cwd: Path, log: Path, time_limit: float | None = None) -> str:
    """Run one program in cwd, append its output to log; ScenarioError with the condensed error if it fails
    or runs past its time limit (default TOOL_TIME_LIMIT_S; the program and its children are killed)."""
    limit = TOOL_TIME_LIMIT_S if time_limit is None else float(time_limit)
    proc = subprocess.Popen(
        args, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _stop(proc)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(args)}\n[stopped after the time limit of {limit:g} s]\n\n")
        raise ScenarioError(f"{what} did not finish within its time limit of {limit:g} s and was stopped") from None
    except BaseException:  # Ctrl-C (or any error here): the tool and its children must not outlive us
        _stop(proc)
        raise
    out = stdout + stderr
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(args)}\n{out}\n[exit {proc.returncode}]\n\n")
    if proc.returncode != 0:
        if proc.returncode == -signal.SIGINT:  # Ctrl-C reached the child first: it is the user's interrupt
            raise KeyboardInterrupt
        if proc.returncode < 0:
            raise ScenarioError(f"{what} was killed by signal {-proc.returncode}")
        raise ScenarioError(f"{what} failed: {condense(out)}")
    return out


def python_tool(relpath: str, args: list[str], what: str, cwd: Path, log: Path, time_limit: float | None = None) -> str:
    return run([sys.executable, tool(relpath), *args], what, cwd, log, time_limit)
