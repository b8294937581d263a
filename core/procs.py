"""Processes: the cores this process may use, the processes below it, and a pool of spawned worker
processes that run jobs and survive a worker dying.

The pool is what one training run's rollout workers and SED's plan rollouts run on: N spawned processes
(a fork would copy torch's and SUMO's state), each holding a `worker_cls` built once from a pickled blob;
per job only the job and its "weights" go out and a (row, payload) comes back. A worker that dies or
stays silent past `episode_timeout` is replaced and its job run again; one that cannot start within
`start_timeout` is one PoolError line. Workers ignore Ctrl-C (the parent handles it and stops them) and
die with their parent (Linux PR_SET_PDEATHSIG).

Standard library only (this is the base layer).
"""

from __future__ import annotations

import os
import pickle
import time
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import UserError

START_TIMEOUT_S = 180.0  # spawning Python, importing torch and SUMO, building the env
EPISODE_TIMEOUT_S = 3600.0  # one episode on one worker; a worker silent for longer is replaced
RESTARTS_PER_JOB = 2  # a job whose worker died this often is given up (its episode counts as a fault)


class PoolError(UserError):
    """A worker process could not start or keeps dying."""


@dataclass(frozen=True)
class Job:
    episode: int  # training episode number (1-based); 0 for an evaluation
    seed: int  # SUMO seed, and the seed of the episode's action sampling
    train: bool


def free_cores() -> int:
    """Cores this process may use (its affinity mask: containers and `taskset` included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants(pid: int) -> list[int]:
    """Every live process below pid (children first), read from /proc: randomTrips.py starts duarouter,
    and a time limit must stop both."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _worker_main(conn, blob: bytes, index: int, worker_cls: type) -> None:
    """A worker process: build what it holds (`worker_cls(blob, index)`), then run jobs until told to stop."""
    _die_with_parent()
    try:
        worker = worker_cls(blob, index)
    except Exception as exc:  # noqa: BLE001 - reported to the learner as one line
        conn.send(("failed", f"{type(exc).__name__}: {str(exc)[:300]}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            row, payload = worker.run(msg[1], msg[2])
            conn.send(("done", row, payload))
    except (EOFError, OSError, KeyboardInterrupt):  # the learner is gone
        pass
    finally:
        worker.close()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the learner dies (a SIGKILLed run must not leave workers
    simulating for nobody). Elsewhere the closed pipe ends the worker after its episode."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def children_ignore_ctrl_c():
    """Processes started inside this block ignore SIGINT for their whole life: Ctrl-C in a terminal goes
    to the whole process group, and a worker that gets it while Python starts or imports torch prints a
    KeyboardInterrupt traceback of its own. The learner alone handles Ctrl-C (one `error: interrupted`
    line) and stops its workers; they also die with it (PR_SET_PDEATHSIG). An ignored disposition
    survives exec, a handled one does not. Meanwhile SIGINT is blocked here, not lost: a Ctrl-C during
    the start is delivered when the block ends."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# ------------------------------------------------------------------------------------------ learner side
class _Slot:
    def __init__(self, ctx, blob: bytes, index: int, worker_cls: type) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, blob, index, worker_cls), daemon=True,
                                name=f"cosim-worker-{index}")  # fmt: skip
        with children_ignore_ctrl_c():
            self.proc.start()
        child.close()
        self.job: Job | None = None
        self.sent_at = 0.0
        self.restarts = 0

    def wait_ready(self, timeout: float) -> None:
        if not self.conn.poll(timeout):
            self.kill()
            raise PoolError(f"rollout worker {self.index} did not start within {timeout:.0f} s")
        try:
            msg = self.conn.recv()
        except EOFError:
            raise PoolError(
                f"rollout worker {self.index} exited while starting (exit code {self.proc.exitcode})"
            ) from None
        if msg[0] != "ready":
            raise PoolError(f"rollout worker {self.index} could not start: {msg[1]}")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class WorkerPool:
    """N worker processes; `run(jobs, weights)` runs the jobs on them and returns the results in job
    order: (row, payload) per job. `submit` and `collect` do the same one job at a time, for a learner
    that hands out the next job while others still run. `worker_cls` is what each process holds (built from the pickled
    (cfg, scenario path, method) and its index, answering `run(job, weights)` and `close()`): a training
    run's `agents.workers.Rollouts`, or SED's plan executor (`llm.rollouts.PlanRollouts`, whose
    "weights" are a plan set)."""

    def __init__(self, cfg, scenario_path, method, n: int, *, start_timeout: float = START_TIMEOUT_S,
                 episode_timeout: float = EPISODE_TIMEOUT_S, worker_cls: type) -> None:  # fmt: skip
        self.n = n
        self.start_timeout, self.episode_timeout = start_timeout, episode_timeout
        import multiprocessing  # here, not at the top: the scenario cache imports this module on its hit path

        self.ctx = multiprocessing.get_context("spawn")
        self.worker_cls = worker_cls
        path = [str(x) for x in scenario_path] if isinstance(scenario_path, list) else str(scenario_path)
        self.blob = pickle.dumps((cfg, path, method))
        self.slots = [_Slot(self.ctx, self.blob, i, worker_cls) for i in range(n)]
        self.replaced = 0
        self._pending: dict = {}  # connection -> (worker, job, weights) of each job handed out
        try:
            for s in self.slots:
                s.wait_ready(start_timeout)
        except BaseException:
            self.close()
            raise

    def _replace(self, slot: _Slot) -> _Slot:
        slot.kill()
        new = _Slot(self.ctx, self.blob, slot.index, self.worker_cls)
        new.restarts = slot.restarts + 1
        new.wait_ready(self.start_timeout)
        self.slots[slot.index] = new
        self.replaced += 1
        return new

    def run(self, jobs: list[Job], weights: bytes | None) -> list[tuple[dict, dict | None]]:
        """Run the jobs on workers 0..len(jobs)-1, one each, and wait for all: the results in job order."""
        if len(jobs) > self.n:
            raise ValueError(f"{len(jobs)} jobs for {self.n} workers")
        for i, job in enumerate(jobs):
            self.submit(i, job, weights)
        results: list = [None] * len(jobs)
        while self.pending:
            for i, _job, result in self.collect():
                results[i] = result
        return results

    @property
    def pending(self) -> int:
        """Jobs handed out whose results have not been collected."""
        return len(self._pending)

    def submit(self, i: int, job: Job, weights: bytes | None) -> None:
        """Hand `job` to worker i (which must be idle) and return at once; `collect` gets its result."""
        if any(k == i for k, _, _ in self._pending.values()):
            raise ValueError(f"worker {i} is busy")
        slot = self._send(self.slots[i], job, weights)
        self._pending[slot.conn] = (i, job, weights)

    def collect(self, timeout: float = 5.0) -> list[tuple[int, Job, tuple[dict, dict | None]]]:
        """The jobs finished by now, as (worker, job, (row, payload)), waiting up to `timeout` s for the
        first; a worker that died or stayed silent past `episode_timeout` is replaced and its job run again
        (or given up as a faulted episode after RESTARTS_PER_JOB tries, which is then among the results)."""
        from multiprocessing.connection import wait

        done = []
        ready = wait(list(self._pending), timeout=timeout) if self._pending else []
        now = time.perf_counter()
        for conn in ready:
            i, job, weights = self._pending.pop(conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None and msg[0] == "done":
                self.slots[i].restarts = 0
                done.append((i, job, (msg[1], msg[2])))
                continue
            self._retry(i, job, weights, done, "its process died")
        for conn, (i, job, weights) in list(self._pending.items()):  # silent for too long: replace it
            slot = self.slots[i]
            if now - slot.sent_at > self.episode_timeout or not slot.proc.is_alive():
                if conn.poll():
                    continue  # its answer arrived meanwhile: read it in the next round
                self._pending.pop(conn)
                why = "it gave no answer in time" if slot.proc.is_alive() else "its process died"
                self._retry(i, job, weights, done, why)
        return done

    def _send(self, slot: _Slot, job: Job, weights: bytes | None) -> _Slot:
        """Hand a job to a worker; one that died while idle is replaced first. Returns the slot used."""
        for _ in range(RESTARTS_PER_JOB + 1):
            slot.job, slot.sent_at = job, time.perf_counter()
            try:
                slot.conn.send(("run", job, weights))
                return slot
            except (BrokenPipeError, ConnectionResetError, OSError):
                slot = self._replace(slot)
        raise PoolError(f"rollout worker {slot.index} keeps dying before it can take an episode")

    def _retry(self, i: int, job: Job, weights, done: list, why: str) -> None:
        """The worker of job i is gone: replace it and run the job again, or give the episode up."""
        slot = self.slots[i]
        if slot.restarts >= RESTARTS_PER_JOB:
            done.append((i, job, ({"sumo_fault": True, "fault": f"rollout worker {i} failed: {why}", "decisions": 0,
                                   "worker": i, "worker_restarted": True}, None)))  # fmt: skip
            return
        slot = self._send(self._replace(slot), job, weights)
        self._pending[slot.conn] = (i, job, weights)

    def close(self) -> None:
        for s in self.slots:
            try:
                s.conn.send(("stop",))
            except (OSError, ValueError):
                pass
        deadline = time.perf_counter() + 10
        for s in self.slots:
            s.proc.join(max(0.0, deadline - time.perf_counter()))
            s.kill()
