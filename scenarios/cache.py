"""The build cache: where built scenarios live and how a finished build becomes visible.

Layout: ``$COSIM_HOME/scenarios/<name>-<hash12>/`` (COSIM_HOME defaults to ``~/.cache/cosim``).

A build writes into a hidden sibling ``.tmp-<name>-<hash12>-<pid>-<random>/`` and becomes visible only
through one ``os.rename`` onto the final name, which is atomic on one file system. So a folder with the
final name is always complete; a build killed at any point (Ctrl-C, kill -9, power loss) leaves at most
a temporary folder, which lookups never read and later builds delete once its process is gone.

This module is on the cache-hit path: standard library only, nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from core.paths import cosim_home, home_dir
from core.procs import pid_alive
from scenarios import sumotools

TMP_PREFIX = ".tmp-"
STALE_AFTER_S = 24 * 3600  # a temp folder this old is abandoned even if its pid was reused
# Bump when the builder's output changes in a way the recipe does not capture: old entries then miss.
# 3: the manifest holds every file's sha256, which a cache hit verifies.
BUILDER_VERSION = 3


def home() -> Path:
    return cosim_home()


def root() -> Path:
    return home() / "scenarios"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_hash(recipe: dict, source_digest: str | None) -> str:
    """sha256 of the canonical recipe JSON, the SUMO version, the builder version and the source's bytes."""
    key = {
        "recipe": recipe,
        "sumo_version": sumotools.version(),
        "builder": BUILDER_VERSION,
        "source_sha256": source_digest,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entry(name: str, digest: str) -> Path:
    return root() / f"{name}-{digest[:12]}"


def complete(folder: Path) -> bool:
    """A published entry with its manifest and every file it names, each with the bytes it was built with."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        return not damaged(folder, manifest)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def digests(folder: Path, names) -> dict[str, str]:
    """sha256 of each named file in folder, for the manifest."""
    return {name: file_digest(folder / name) for name in sorted(names)}


_verified: dict[tuple, bool] = {}  # (file, size, mtime, digest) already checked in this process


def damaged(folder: Path, manifest: dict) -> list[str]:
    """The files of a built folder that are missing, or whose bytes differ from the digests its manifest
    recorded (a truncated net or agents.json would otherwise fail mid-run with a parser's traceback).
    Hashing costs ~10 ms for a city of 10 000 vehicles; a file is hashed once per process while its size
    and time stamp stay the same. A manifest without digests (a folder built elsewhere by hand) is checked
    for presence only."""
    names = list(manifest["files"].values())
    recorded = manifest.get("sha256") or {}
    bad = []
    for name in dict.fromkeys([*names, *recorded]):
        path = folder / name
        try:
            st = path.stat()
        except OSError:
            bad.append(name)
            continue
        if name not in recorded or not path.is_file():
            if not path.is_file():
                bad.append(name)
            continue
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, recorded[name])
        if key not in _verified:
            _verified[key] = file_digest(path) == recorded[name]
        if not _verified[key]:
            bad.append(name)
    return bad


def new_temp(name: str, digest: str) -> Path:
    home_dir("scenarios")  # created, or one clear error if COSIM_HOME is a file or read-only
    path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-{digest[:12]}-{os.getpid()}-", dir=root()))
    path.chmod(0o755)  # mkdtemp makes it private; a published scenario is ordinary readable data
    return path


def publish(tmp: Path, final: Path) -> Path:
    """Atomically move a finished temp folder into place. If another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "manifest.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def clean_stale() -> list[Path]:
    """Delete temp folders of builds whose process is gone (or that are older than a day)."""
    removed = []
    if not root().is_dir():
        return removed
    for p in root().glob(TMP_PREFIX + "*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            pid = -1
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:
            continue
        if pid == os.getpid():
            continue
        if pid <= 0 or not pid_alive(pid) or age > STALE_AFTER_S:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def entries() -> list[tuple[Path, dict]]:
    """Complete cache entries (folder, manifest), newest first. Temp folders are never listed."""
    out = []
    if not root().is_dir():
        return out
    for p in root().iterdir():
        if p.name.startswith(TMP_PREFIX) or not p.is_dir():
            continue
        try:
            manifest = json.loads((p / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        out.append((p, manifest))
    out.sort(key=lambda pm: pm[1].get("built_at", ""), reverse=True)
    return out
