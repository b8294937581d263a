"""Parallel rollout workers for one training run: N processes, each with its own SUMO and a CPU copy of
the policy; the learner sends the weights, each worker runs one episode, the learner updates on all N.

Why processes: libsumo runs one simulation per process, and the Python of the env is single-threaded,
so one run used one core whatever the machine had. A worker is a spawned process (a fork would copy
torch's and SUMO's state) holding the env and a copy of the method, set up once by the learner and
pickled over; per episode only the policy's weights go out and the episode's samples come back as a
few numpy arrays (observations, masks, actions, log-probabilities, values, rewards; see
`PPOLearner.rollout_payload`), not Python objects per decision.

Determinism: a training episode's SUMO seed and the seed of its action sampling are functions of
(run seed, episode number) only, so a fixed (seed, workers) gives the same episodes wherever they run,
and the learner merges them in episode order.

Faults: a SUMO crash inside a worker ends that episode only (the env truncates it, as in one process);
a worker process that dies or stops answering within `episode_timeout` is replaced and its episode run
again on the new one; a worker that cannot start within `start_timeout` is a one-line TrainError.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait

from agents.base import TrainError

START_TIMEOUT_S = 180.0  # spawning Python, importing torch and SUMO, building the env
EPISODE_TIMEOUT_S = 3600.0  # one episode on one worker; a worker silent for longer is replaced
RESTARTS_PER_JOB = 2  # a job whose worker died this often is given up (its episode counts as a fault)


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


def weights_bytes(method) -> bytes | None:
    """The policy's parameters, serialised once per iteration for every worker."""
    import torch

    policy = getattr(method, "policy", None)
    if policy is None:
        return None
    buf = io.BytesIO()
    torch.save(policy.state_dict(), buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ worker side
class Rollouts:
    """What a worker holds: its env (its own SUMO) and its copy of the method; runs one job at a time.
    The same class runs in a spawned process (`_worker_main`) and as a Ray actor (`RayWorkerPool`)."""

    def __init__(self, blob: bytes, index: int) -> None:
        import torch

        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        from agents.runner import _KernelTimer, make_env
        from scenarios import Scenario

        cfg, scenario_path, method = pickle.loads(blob)
        self.index = index
        self.env = make_env(Scenario.load(scenario_path), cfg, method.control)
        method.collect_only = True  # end_episode keeps the samples for the learner instead of updating
        self.method = method
        self.timer = _KernelTimer(self.env.kernel)

    def run(self, job: Job, weights: bytes | None) -> tuple[dict, dict | None]:
        import torch

        from agents.runner import run_episode

        t0 = time.perf_counter()
        if weights is not None:
            self.method.policy.load_state_dict(torch.load(io.BytesIO(weights)))
        torch.manual_seed(job.seed)  # the episode's action sampling depends on it alone
        t_load = time.perf_counter() - t0
        row = run_episode(self.env, self.method, job.seed, train=job.train, sumo_timer=self.timer)
        payload = self.method.take_payload() if job.train and self.method.learns else None
        row["t_transfer_s"] = t_load
        row["worker"] = self.index
        return row, payload

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.env.close()


def _worker_main(conn, blob: bytes, index: int, worker_cls: type = Rollouts) -> None:
    """A worker process: build the env, then run episodes until told to stop."""
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
    def __init__(self, ctx, blob: bytes, index: int, worker_cls: type = Rollouts) -> None:
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
            raise TrainError(f"rollout worker {self.index} did not start within {timeout:.0f} s")
        try:
            msg = self.conn.recv()
        except EOFError:
            raise TrainError(
                f"rollout worker {self.index} exited while starting (exit code {self.proc.exitcode})"
            ) from None
        if msg[0] != "ready":
            raise TrainError(f"rollout worker {self.index} could not start: {msg[1]}")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class WorkerPool:
    """N rollout worker processes; `run(jobs, weights)` runs the jobs on them and returns the results in
    job order: (row, payload) per job. `worker_cls` is what each process holds (built from the pickled
    (cfg, scenario path, method) and its index, answering `run(job, weights)`): a training run's
    `Rollouts`, or SED's plan executor (`llm.rollouts.PlanRollouts`, whose "weights" are a plan set)."""

    def __init__(self, cfg, scenario_path, method, n: int, *, start_timeout: float = START_TIMEOUT_S,
                 episode_timeout: float = EPISODE_TIMEOUT_S, worker_cls: type = Rollouts) -> None:  # fmt: skip
        self.n = n
        self.start_timeout, self.episode_timeout = start_timeout, episode_timeout
        self.ctx = mp.get_context("spawn")
        self.worker_cls = worker_cls
        self.blob = pickle.dumps((cfg, str(scenario_path), method))
        self.slots = [_Slot(self.ctx, self.blob, i, worker_cls) for i in range(n)]
        self.replaced = 0
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
        if len(jobs) > self.n:
            raise ValueError(f"{len(jobs)} jobs for {self.n} workers")
        results: list = [None] * len(jobs)
        pending = {}
        for i, job in enumerate(jobs):
            slot = self._send(self.slots[i], job, weights)
            pending[slot.conn] = i
        while pending:
            ready = wait(list(pending), timeout=5.0)
            now = time.perf_counter()
            for conn in ready:
                i = pending.pop(conn)
                slot = self.slots[i]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg[0] == "done":
                    results[i] = (msg[1], msg[2])
                    slot.restarts = 0
                    continue
                self._retry(i, jobs[i], weights, pending, results, "its process died")
            for conn, i in list(pending.items()):  # silent for too long: replace it
                slot = self.slots[i]
                if now - slot.sent_at > self.episode_timeout or not slot.proc.is_alive():
                    if conn.poll():
                        continue  # its answer arrived meanwhile: read it in the next round
                    pending.pop(conn)
                    why = "it gave no answer in time" if slot.proc.is_alive() else "its process died"
                    self._retry(i, jobs[i], weights, pending, results, why)
        return results

    def _send(self, slot: _Slot, job: Job, weights: bytes | None) -> _Slot:
        """Hand a job to a worker; one that died while idle is replaced first. Returns the slot used."""
        for _ in range(RESTARTS_PER_JOB + 1):
            slot.job, slot.sent_at = job, time.perf_counter()
            try:
                slot.conn.send(("run", job, weights))
                return slot
            except (BrokenPipeError, ConnectionResetError, OSError):
                slot = self._replace(slot)
        raise TrainError(f"rollout worker {slot.index} keeps dying before it can take an episode")

    def _retry(self, i: int, job: Job, weights, pending: dict, results: list, why: str) -> None:
        """The worker of job i is gone: replace it and run the job again, or give the episode up."""
        slot = self.slots[i]
        if slot.restarts >= RESTARTS_PER_JOB:
            results[i] = ({"sumo_fault": True, "fault": f"rollout worker {i} failed: {why}", "decisions": 0,
                           "worker": i, "worker_restarted": True}, None)  # fmt: skip
            return
        slot = self._send(self._replace(slot), job, weights)
        pending[slot.conn] = i

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


# ------------------------------------------------------------------------------------------ Ray
RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str) -> None:
    """An existing cluster's address (host:port of its GCS) must answer within seconds: Ray itself would
    retry for minutes before giving up."""
    import socket

    from agents.base import TrainError

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except (ValueError, OSError) as exc:
        raise TrainError(f"cannot reach the Ray cluster at {address!r} ({type(exc).__name__}: {exc})") from None


class RayWorkerPool:
    """The same workers as Ray actors (one CPU each), on a cluster at `address` or a local one started
    here; a dead actor is replaced and its episode run again, as with processes."""

    def __init__(self, cfg, scenario_path, method, n: int, address: str | None = None) -> None:
        from agents.base import TrainError
        from agents.raytools import _become_subreaper, require_ray

        ray = require_ray()
        self.ray, self.n, self.replaced = ray, n, 0
        self.started = False
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            if address:
                check_ray_address(address)
                ray.init(address=address, **kwargs)
            else:
                _become_subreaper()
                ray.init(num_cpus=max(n, free_cores()), **kwargs)
            self.started = True
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if n > cpus:
                raise TrainError(
                    f"--workers {n}: the Ray cluster has {cpus} CPUs, so it can place at most {cpus} workers"
                )
            self.blob = pickle.dumps((cfg, str(scenario_path), method))
            self.actor_cls = ray.remote(num_cpus=1, max_restarts=0)(Rollouts)
            self.actors = [self.actor_cls.remote(self.blob, i) for i in range(n)]
            ray.get([a.pid.remote() for a in self.actors], timeout=START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def run(self, jobs: list[Job], weights: bytes | None) -> list[tuple[dict, dict | None]]:
        ray = self.ray
        wref = ray.put(weights)
        refs = {self.actors[i].run.remote(job, wref): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        tries = [0] * len(jobs)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=EPISODE_TIMEOUT_S)
            if not done:
                raise TimeoutError(f"no Ray worker answered within {EPISODE_TIMEOUT_S:.0f} s")
            ref = done[0]
            i = refs.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the actor died (RayActorError and kin)
                tries[i] += 1
                if tries[i] > RESTARTS_PER_JOB:
                    results[i] = ({"sumo_fault": True, "fault": f"Ray worker {i} failed: {type(exc).__name__}",
                                   "decisions": 0, "worker": i, "worker_restarted": True}, None)  # fmt: skip
                    continue
                self.actors[i] = self.actor_cls.remote(self.blob, i)
                self.replaced += 1
                refs[self.actors[i].run.remote(jobs[i], wref)] = i
        return results

    def close(self) -> None:
        ray = self.ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started:
            from agents.raytools import _ray_processes, _reap_children

            pids = _ray_processes()
            ray.shutdown()
            _reap_children(pids)
