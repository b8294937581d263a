"""Running SUMO's programs (netconvert, sumo, duarouter) and Python tools (randomTrips.py) for the builder.

We always run the binaries of the eclipse-sumo wheel this package depends on, with SUMO_HOME and
PROJ_LIB pointing into it, so the net, the routes and libsumo at run time all come from one SUMO
release (the cache key records its version). Their output is captured into the build log; when one
fails, its error lines are condensed into the one-line message the user sees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

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


def binary(name: str) -> str:
    path = sumo_home() / "bin" / name
    return str(path) if path.exists() else name


def tool(relpath: str) -> str:
    return str(sumo_home() / "tools" / relpath)


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


def run(args: list[str], what: str, cwd: Path, log: Path) -> str:
    """Run one program in cwd, append its output to log; ScenarioError with the condensed error if it fails."""
    proc = subprocess.run(
        args, cwd=cwd, env=env(), capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL
    )
    out = proc.stdout + proc.stderr
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(args)}\n{out}\n[exit {proc.returncode}]\n\n")
    if proc.returncode != 0:
        if proc.returncode == -signal.SIGINT:  # Ctrl-C reached the child first: it is the user's interrupt
            raise KeyboardInterrupt
        if proc.returncode < 0:
            raise ScenarioError(f"{what} was killed by signal {-proc.returncode}")
        raise ScenarioError(f"{what} failed: {condense(out)}")
    return out


def python_tool(relpath: str, args: list[str], what: str, cwd: Path, log: Path) -> str:
    return run([sys.executable, tool(relpath), *args], what, cwd, log)
