"""Ray plumbing shared by `cosim compare --executor ray` and the Ray rollout workers of one run.

Ray's workers are the raylet's children and outlive it: orphaned, they go to PID 1, which in a container
often never collects them (defunct `ray::IDLE` entries). Whoever starts a local cluster therefore makes
itself a child subreaper first and, after `ray.shutdown()`, collects Ray's processes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.errors import UserError


def require_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(
            "--executor ray needs Ray, which is not installed: pip install 'reled-cosim[ray]' "
            "(or pip install ray), or use --executor local"
        ) from None
    return ray


def become_subreaper() -> None:
    """Linux: orphaned descendants (Ray's workers outlive the raylet that started them) are handed to
    this process instead of to PID 1, which in a container often never collects them: they would stay
    as defunct `ray::IDLE` entries. `reap_children` then collects them."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # not Linux: nothing to do
        pass


def reap_children(pids: set[int], wait_s: float = 30.0) -> None:
    """Collect the exit status of Ray's processes `pids` (taken just before ray.shutdown(), which stops
    the local cluster but does not wait for all of it) as they end, for at most `wait_s`. Children that
    are not Ray's and still run (wandb's service, say) are left alone."""
    deadline = time.monotonic() + wait_s
    me = os.getpid()
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass  # collect whatever has ended
        except ChildProcessError:
            return  # no children left
        if time.monotonic() > deadline or not any(_running_or_ours(p, me) for p in pids):
            return
        time.sleep(0.1)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        return state, int(ppid)
    except (OSError, ValueError, IndexError):
        return None


def _running_or_ours(pid: int, me: int) -> bool:
    """Still running, or ended as a child of this process (so still ours to collect)."""
    st = _proc_stat(pid)
    return st is not None and (st[0] != "Z" or st[1] == me)


def ray_processes() -> set[int]:
    """The pids of this process's descendants that are Ray's (their command line names ray): the
    raylet's workers are its children, not ours, until it exits and they are handed to us."""
    parent, ray = {}, set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            parent[pid] = _proc_stat(pid)[1]
            if b"ray" in (stat.parent / "cmdline").read_bytes():
                ray.add(pid)
        except (OSError, ValueError, TypeError):
            continue
    me, ours = os.getpid(), set()
    for start in ray:
        pid, seen = start, 0
        while pid in parent and seen < 64:  # up the tree to us (or to PID 1)
            pid, seen = parent[pid], seen + 1
            if pid == me:
                ours.add(start)
                break
    return ours
