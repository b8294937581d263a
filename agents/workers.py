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
again on the new one; a worker that cannot start within `start_timeout` is a one-line error. The
process pool itself is the base layer's (`core/procs.py`); this module holds what a worker runs.
"""

from __future__ import annotations

import io
import os
import pickle
import time

from agents.base import TrainError
from core.procs import EPISODE_TIMEOUT_S, RESTARTS_PER_JOB, START_TIMEOUT_S, Job, free_cores


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
        from agents.cities import CityEnvs
        from agents.episode import make_env
        from scenarios import Scenario

        cfg, paths, method = pickle.loads(blob)
        paths = paths if isinstance(paths, list) else [paths]
        self.index, self.seed = index, cfg.run.seed
        self.time_limit = cfg.run.time_limit

        def make(sc):
            env = make_env(sc, cfg, method.env_settings)
            env.kernel.count_sumo_time()
            return env

        # several cities: the env of each episode's city, made when first needed
        scenarios = [Scenario.load(p) for p in paths]
        self.cities = CityEnvs(scenarios, make, first=make(scenarios[0]))
        method.collect_only = True  # end_episode keeps the samples for the learner instead of updating
        self.method = method

    def run(self, job: Job, weights: bytes | None) -> tuple[dict, dict | None]:
        import torch

        from agents.episode import run_episode

        t0 = time.perf_counter()
        if weights is not None:
            self.method.policy.load_state_dict(torch.load(io.BytesIO(weights)))
        torch.manual_seed(job.seed)  # the episode's action sampling depends on it alone
        t_load = time.perf_counter() - t0
        from agents.cities import city_of

        city = city_of(self.seed, job.episode, len(self.cities)) if job.train else 0
        env = self.cities.get(city)
        self.method.switch_env(env)
        row = run_episode(env, self.method, job.seed, train=job.train,
                          time_limit=self.time_limit if job.train else None)  # fmt: skip
        if len(self.cities) > 1:
            row["city"] = self.cities.name(city)
        payload = self.method.take_payload() if job.train and self.method.learns else None
        row["t_transfer_s"] = t_load
        row["worker"] = self.index
        return row, payload

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.cities.close()


# ------------------------------------------------------------------------------------------ Ray
RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str) -> None:
    """An existing cluster's address (host:port of its GCS) must answer within seconds: Ray itself would
    retry for minutes before giving up."""
    import socket

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
        from core.raytools import become_subreaper, require_ray

        ray = require_ray()
        self.ray, self.n, self.replaced = ray, n, 0
        self.started = False
        self._refs: dict = {}  # result ref -> (worker, job, weights ref, tries, sent at) of each job out
        self._wref = None  # (weights, their object ref): put once, shared by an iteration's jobs
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            if address:
                check_ray_address(address)
                ray.init(address=address, **kwargs)
            else:
                become_subreaper()
                ray.init(num_cpus=max(n, free_cores()), **kwargs)
            self.started = True
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if n > cpus:
                raise TrainError(
                    f"--workers {n}: the Ray cluster has {cpus} CPUs, so it can place at most {cpus} workers"
                )
            path = [str(x) for x in scenario_path] if isinstance(scenario_path, list) else str(scenario_path)
            self.blob = pickle.dumps((cfg, path, method))
            self.actor_cls = ray.remote(num_cpus=1, max_restarts=0)(Rollouts)
            self.actors = [self.actor_cls.remote(self.blob, i) for i in range(n)]
            ray.get([a.pid.remote() for a in self.actors], timeout=START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def run(self, jobs: list[Job], weights: bytes | None) -> list[tuple[dict, dict | None]]:
        for i, job in enumerate(jobs):
            self.submit(i, job, weights)
        results: list = [None] * len(jobs)
        while self.pending:
            for i, _job, result in self.collect(timeout=EPISODE_TIMEOUT_S):
                results[i] = result
        return results

    @property
    def pending(self) -> int:
        return len(self._refs)

    def submit(self, i: int, job: Job, weights: bytes | None) -> None:
        """As `core.procs.WorkerPool.submit`; the weights go into Ray's object store once per iteration."""
        if self._wref is None or self._wref[0] is not weights:
            self._wref = (weights, self.ray.put(weights))
        self._refs[self.actors[i].run.remote(job, self._wref[1])] = (i, job, self._wref[1], 0, time.perf_counter())

    def collect(self, timeout: float = 5.0) -> list[tuple[int, Job, tuple[dict, dict | None]]]:
        """As `core.procs.WorkerPool.collect`: a dead actor is replaced and its job run again."""
        ray = self.ray
        if not self._refs:
            return []
        done, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        oldest = min(sent for *_, sent in self._refs.values())
        if not done and time.perf_counter() - oldest >= EPISODE_TIMEOUT_S:
            raise TimeoutError(f"no Ray worker answered within {EPISODE_TIMEOUT_S:.0f} s")
        out = []
        for ref in done:
            i, job, wref, tries, _ = self._refs.pop(ref)
            try:
                out.append((i, job, ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - the actor died (RayActorError and kin)
                if tries + 1 > RESTARTS_PER_JOB:
                    out.append((i, job, ({"sumo_fault": True, "fault": f"Ray worker {i} failed: {type(exc).__name__}",
                                          "decisions": 0, "worker": i, "worker_restarted": True}, None)))  # fmt: skip
                    continue
                self.actors[i] = self.actor_cls.remote(self.blob, i)
                self.replaced += 1
                self._refs[self.actors[i].run.remote(job, wref)] = (i, job, wref, tries + 1, time.perf_counter())
        return out

    def close(self) -> None:
        ray = self.ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started:
            from core.raytools import ray_processes, reap_children

            pids = ray_processes()
            ray.shutdown()
            reap_children(pids)
