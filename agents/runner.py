"""The training runner behind ``cosim train``: episodes, evaluations, metrics, checkpoints, resume.

Files in the run directory:

* ``config.json``     the run's configuration (+ resolved method settings and versions)
* ``metrics.jsonl``   one JSON object per episode (``"phase": "train"``) and per evaluation
                      (``"phase": "eval"``: greedy policy on the fixed evaluation seed)
* ``checkpoint.pt``   written atomically after every episode: method state (model, optimiser), the
                      RNG states (torch, numpy, python), counters and the number of metric rows

Reproducibility: torch runs single-threaded with deterministic algorithms; training episode e uses the
SUMO seed ``episode_seed(seed, e)`` and evaluations the fixed ``eval_seed``; SUMO is deterministic given
its seed. A run stopped at any point and resumed with ``--resume`` therefore produces the same metrics
and parameters as an uninterrupted one (rows written after the last checkpoint are discarded and
recomputed).

A SUMO fault loses one episode: the env truncates it, the learner drops its data, the row says
``"sumo_fault": true`` and training goes on.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from agents.base import Method, TrainError
from agents.cities import city_of
from agents.config import TrainConfig
from agents.episode import make_env, peak_rss_mb, run_episode
from agents.methods import make_method
from core.jsonio import atomic_write, clean, remove_stale_temps
from core.settings import diff

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT_FORMAT = 2  # 2: the configuration tree (sections) instead of flat settings
LOCK = ".lock"

# the kernel calls that talk to SUMO: their time is the "sumo" share of an episode


_clean = clean


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def _identity_of(tree: dict, resumable=TrainConfig.RESUMABLE_CHANGES) -> dict:
    """A recorded tree minus the settings that may change on resume (as TrainConfig.identity())."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    for path in resumable:
        section, key = path.split(".")
        if isinstance(d.get(section), dict):
            d[section].pop(key, None)
    return d


def episode_seed(seed: int, episode: int) -> int:
    """The SUMO seed of training episode `episode` (1-based) of a run with seed `seed`."""
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1)[0] % (2**31 - 1))


def validate(cfg: TrainConfig) -> None:
    """The whole tree, before any work: the method's name, then every range and name (one line each)."""
    from agents.methods import check_method

    spec = check_method(cfg.algorithm.method)
    cities = cfg.scenario.cities()
    if len(cities) > 1 and not spec.learns:
        raise TrainError(f"training on several cities (--scenario {','.join(cities)}) is for learning methods; "
                         f"{spec.name} learns nothing: evaluate it on each city instead")  # fmt: skip
    cfg.check()
    if len(cities) > 1:  # an unknown one is named before any city is built
        from scenarios.build import resolve

        for c in cities:
            resolve(c)


# ------------------------------------------------------------------------------------------ files
def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, data, durable=True)


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise TrainError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}); "
            "delete it to start over or choose another --out"
        ) from None
    need = {"format", "config", "episode", "env_steps", "rows", "method", "rng"}
    if not isinstance(ck, dict) or not need <= set(ck) or ck.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(
            f"checkpoint {path} is corrupt or from an incompatible version; delete it to start over "
            "or choose another --out"
        )
    return ck


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TrainError(f"{path} is corrupt ({type(exc).__name__}); choose another --out") from None


def _config_diff(old: dict, new: dict) -> str:
    return diff(old, new)


def _read_rows(path: Path, keep: int) -> list[str]:
    """The first `keep` lines of metrics.jsonl: the rows the checkpoint covers (later ones were written
    after it and will be recomputed). Each must be intact: a damaged or missing row among them would
    silently drop those episodes from the run's record, so it is a one-line error naming the line."""
    if keep == 0:
        return []
    fix = "repair it, or start over with another --out"
    try:
        lines = path.read_text(errors="replace").splitlines(keepends=True)
    except OSError as exc:
        raise TrainError(f"{path} cannot be read ({exc.strerror or exc}); the checkpoint covers {keep} rows of it: "
                         f"{fix}") from None  # fmt: skip
    for n, line in enumerate(lines[:keep], start=1):
        try:
            ok = line.endswith("\n") and isinstance(json.loads(line), dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise TrainError(f"{path} line {n} is damaged ({line.strip()[:40]!r}); the checkpoint covers lines 1-{keep}: "
                             f"{fix}")  # fmt: skip
    if len(lines) < keep:
        raise TrainError(f"{path} has {len(lines)} lines but the checkpoint covers {keep}: it was cut short; {fix}")
    return lines[:keep]


# ------------------------------------------------------------------------------------------ train
def _determinism() -> tuple[int, bool]:
    """Single-threaded, deterministic torch (bitwise-reproducible updates); returns the old settings."""
    import torch

    old = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return old


class _LineProgress:
    """Where stderr is no terminal (a log file, a batch job), the progress bar's content as one plain line
    per update: episode, elapsed time, ETA and the status line. Same calls as rich's Progress."""

    def __init__(self, stream) -> None:
        self.stream, self.t0, self.tasks = stream, time.monotonic(), {}

    def start(self) -> None:
        self.t0 = time.monotonic()

    def stop(self) -> None:
        pass

    def add_task(self, description: str, total: int, completed: int = 0, status: str = "") -> int:
        self.tasks[0] = {"description": description, "total": total, "first": completed}
        return 0

    def update(self, task: int, completed: int, status: str = "") -> None:
        t = self.tasks[task]
        elapsed = time.monotonic() - self.t0
        done = completed - t["first"]
        eta = elapsed / done * (t["total"] - completed) if done > 0 else float("nan")

        def hms(x: float) -> str:
            return "?" if x != x else f"{int(x) // 3600}:{int(x) % 3600 // 60:02d}:{int(x) % 60:02d}"

        print(f"{t['description']}: episode {completed}/{t['total']}  elapsed {hms(elapsed)}  ETA {hms(eta)}  "
              f"{status}", file=self.stream, flush=True)  # fmt: skip


def _progress(enabled: bool):
    if not enabled:
        return None
    import sys

    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        return _LineProgress(sys.stderr)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )


def _versions() -> dict:
    import torch

    out = {"torch": torch.__version__, "numpy": np.__version__}
    try:
        from scenarios import sumotools

        out["sumo"] = sumotools.version()
    except Exception:  # noqa: BLE001 - informational only
        pass
    return out


# What a run folder holds before its config.json exists: the lock, and what `cosim compare` puts there
# around a run (W&B's folder, its run record, the example routes). With anything else and no
# config.json, a folder is someone else's: `cosim train` refuses it rather than overwrite their files.
RUN_FOLDER_EXTRAS = frozenset({LOCK, ".started", "run.json", "routes.json", "wandb"})


def is_earlier_run(names: set[str]) -> bool:
    """Whether a folder holding these names is an earlier `cosim train` output (scenarios/outputs.py)."""
    names = {n for n in names if not (n.startswith(".") and n.endswith(".tmp"))}  # atomic writes cut short
    return CONFIG in names or names <= RUN_FOLDER_EXTRAS


@contextmanager
def run_lock(out: Path):
    """Hold the run folder for one writer: a second `cosim train` (or a compare run) into the same
    folder fails at once instead of interleaving with this one and silently losing a run.

    The lock is an flock on ``out/.lock`` (released by the OS if the process dies, so a killed run never
    leaves a stale lock). A folder this call created is removed again if the run fails before it wrote
    its config.json: bad input never leaves a half-written run behind."""
    from core.outputs import check_output

    check_output(out, "cosim train", is_earlier_run, error=TrainError)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fh = open(out / LOCK, "a+")
    except OSError as exc:
        raise TrainError(f"--out {out} cannot be written: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise TrainError(
                f"--out {out} is in use by another run (process {holder}); wait for it or choose another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        remove_stale_temps(out)  # a checkpoint half-written by a killed run
        try:
            yield
        finally:
            if not (out / CONFIG).exists():  # nothing of a run was written: leave nothing behind
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    (out / LOCK).unlink(missing_ok=True)
    finally:
        fh.close()


def prepare_out(out: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """Check the run directory; returns the checkpoint to resume from (None: start fresh)."""
    from core.outputs import check_output

    check_output(out, "cosim train", is_earlier_run, error=TrainError)
    ck_path, cfg_path = out / CHECKPOINT, out / CONFIG
    has_run = ck_path.exists() or cfg_path.exists()
    if not has_run:
        return None
    new = cfg.identity()
    ck = load_checkpoint(ck_path) if ck_path.exists() else None
    old = ck["config"] if ck is not None else _read_config(cfg_path)
    if old is not None:
        old = _identity_of(old, type(cfg).RESUMABLE_CHANGES)
    if old is not None and old != new:
        raise TrainError(
            f"--out {out} holds another run with a different config ({_config_diff(old, new)}); choose another --out"
        )
    if not resume:
        raise TrainError(f"--out {out} already holds this run; pass --resume to continue it or choose another --out")
    return ck


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    env_factory: Callable | None = None,
    on_row: Callable[[dict], None] | None = None,
    method: Method | None = None,
    init: str | Path | None = None,
) -> dict:
    """Train (or run a baseline) per `cfg` into `out`. Returns a summary (last eval row, counters).

    env_factory(scenario, cfg, env_settings) -> env replaces `make_env` (tests inject faults this way);
    on_row(row) sees every metrics row as it is written (W&B logging); `method` overrides the registry;
    `init`, another run's folder or checkpoint: a new run starts from its policy's weights (fine-tuning a
    policy on another city): the actor must fit, the critic is taken where it fits, the optimizer and
    everything else start fresh (`Method.load_weights`).
    """
    validate(cfg)
    if cfg.run.executor == "ray":  # no Ray or an unreachable cluster: one line before any folder exists
        from agents.workers import check_ray_address
        from core.raytools import require_ray

        require_ray()
        address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            check_ray_address(address)
    out = Path(out)
    with run_lock(out):
        ck = prepare_out(out, cfg, resume)
        start = None
        if init is not None and ck is None:
            p = Path(init)
            start = load_checkpoint(p / CHECKPOINT if p.is_dir() else p)["method"]
        return _train_locked(cfg, out, ck, progress, env_factory, on_row, method, start)


def _train_locked(cfg, out, ck, progress, env_factory, on_row, method, start=None) -> dict:
    torch_settings = _determinism()
    import torch

    try:
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed % 2**32)
        torch.manual_seed(cfg.run.seed)
        from agents.cities import CityEnvs
        from scenarios import ensure_built

        scenarios = [ensure_built(c, **cfg.scenario.overrides()) for c in cfg.scenario.cities()]
        method = method or make_method(cfg)

        def make(sc):
            e = (env_factory or make_env)(sc, cfg, method.env_settings)
            if hasattr(e, "kernel"):
                e.kernel.count_sumo_time()  # the time split of every row
            return e

        cities = CityEnvs(scenarios, make, first=make(scenarios[0]))
        try:
            return _start(cfg, out, cities, method, ck, progress, on_row, start)
        finally:
            cities.close()
    finally:
        torch.set_num_threads(torch_settings[0])
        torch.use_deterministic_algorithms(torch_settings[1])


def _start(cfg, out, cities, method, ck, progress, on_row, start=None) -> dict:
    if len(cities) > 1:
        envs = [cities.get(i) for i in range(len(cities))]  # made now; SUMO starts at each one's first reset
        cities.get(0)
        method.setup_cities(envs)
    else:
        method.setup(cities.get(0))
    if start is not None:  # another run's weights (a fine-tune): what fits this run's city
        try:
            method.load_weights(start)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainError(
                f"the initial weights do not fit this run ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
    out.mkdir(parents=True, exist_ok=True)
    state = {"episode": 0, "env_steps": 0, "wall_s": 0.0, "sumo_faults": 0, "rows": 0}
    if ck is not None:
        try:
            method.load_state_dict(ck["method"])
            _set_rng_state(ck["rng"])
            state = {k: ck[k] for k in state}
            state["behaviour_weights"] = ck.get("behaviour_weights")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainError(
                f"checkpoint {out / CHECKPOINT} does not fit this run ({type(exc).__name__}: {str(exc)[:120]}); "
                "delete it to start over or choose another --out"
            ) from None
        rows = _read_rows(out / METRICS, state["rows"])
        _atomic_write(out / METRICS, "".join(rows).encode())
        state["rows"] = len(rows)
    else:
        doc = {"config": cfg.to_dict(), "method": _jsonable(method.describe()), "versions": _versions()}
        _atomic_write(out / CONFIG, (json.dumps(doc, indent=2) + "\n").encode())
        _atomic_write(out / METRICS, b"")
    return _loop(cfg, out, cities, method, state, progress, on_row)


def _row(phase: str, state: dict, episode: int, seed: int, wall_s: float, episode_row: dict) -> dict:
    """One metrics row, built the same way wherever an episode ran: where the run stands (phase, episode,
    decisions and wall time so far, the SUMO seed), the episode's own figures, the faults so far."""
    return {"phase": phase, "episode": episode, "env_steps": state["env_steps"], "wall_s": wall_s, "seed": seed,
            **episode_row, "sumo_faults": state["sumo_faults"]}  # fmt: skip


def _count(state: dict, row: dict) -> None:
    """What a training episode adds to the run's counters (a lost episode still used its samples)."""
    state["sumo_faults"] += bool(row.get("sumo_fault"))
    state["env_steps"] += int(row.get("decisions") or 0)


def _status(state: dict, latest: dict | None, speed: str) -> str:
    """The progress bar's status line (beside the episode count, elapsed time and ETA): the latest episode's
    simulated time, arrivals and travel time, the speed, the faults so far."""
    latest = latest or {}
    parts = []
    if isinstance(latest.get("sim_time"), (int, float)):
        parts.append(f"{latest.get('phase', '')} sim {latest['sim_time']:.0f} s".strip())
    if isinstance(latest.get("arrived"), int) and latest.get("agents"):
        parts.append(f"arrived {latest['arrived']}/{latest['agents']}")
    mtt = latest.get("mean_travel_time")
    if isinstance(mtt, (int, float)):
        parts.append(f"travel {mtt:.0f} s")
    return "  ".join([*parts, speed, f"faults {state['sumo_faults']}"])


def _loop(cfg, out, cities, method, state, progress, on_row) -> dict:
    several = len(cities) > 1

    def city_env(i: int):
        env = cities.get(i)
        method.switch_env(env)
        return env

    metrics_f = open(out / METRICS, "a")

    def write(row: dict) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        metrics_f.write(json.dumps(row) + "\n")
        metrics_f.flush()
        state["rows"] += 1
        if on_row is not None:
            on_row(row)

    def checkpoint(behaviour: bytes | None = None) -> None:
        import torch

        ck = {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.identity(),
            **{k: state[k] for k in ("episode", "env_steps", "wall_s", "sumo_faults", "rows")},
            "env_seed": {"seed": cfg.run.seed, "next_episode": state["episode"] + 1, "eval_seed": cfg.run.eval_seed},
            "method": method.state_dict(),
            "rng": _rng_state(),
        }
        if behaviour is not None:  # policy_lag: the weights the next iteration's episodes act with
            ck["behaviour_weights"] = behaviour
        buf = io.BytesIO()
        torch.save(ck, buf)
        _atomic_write(out / CHECKPOINT, buf.getvalue())

    def evaluate() -> dict:
        """One evaluation episode on each city of the run (one row each); returns the last row."""
        for i in range(len(cities)):
            t0 = time.perf_counter()
            row = run_episode(city_env(i), method, cfg.run.eval_seed, train=False)
            state["wall_s"] += time.perf_counter() - t0
            state["sumo_faults"] += bool(row.get("sumo_fault"))
            row = _row("eval", state, state["episode"], cfg.run.eval_seed, state["wall_s"], row)
            write({**row, "city": cities.name(i)} if several else row)
        return row

    bar = _progress(progress)
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task(
                f"{cfg.algorithm.method} on {cfg.scenario.name}",
                total=cfg.run.episodes,
                completed=state["episode"],
                status="",
            )
        if state["episode"] == 0 and state["rows"] == 0 and cfg.run.eval_every:
            evaluate()
            checkpoint()
        last_eval: dict = {}
        if (cfg.rollout_workers > 1 or cfg.run.executor == "ray") and state["episode"] < cfg.run.episodes:
            _loop_parallel(cfg, cities, method, state, write, evaluate, checkpoint, bar, task if bar else None)
        while state["episode"] < cfg.run.episodes:
            e = state["episode"] + 1
            t0 = time.perf_counter()
            method.schedule(e)
            city = city_of(cfg.run.seed, e, len(cities))
            row = run_episode(city_env(city), method, episode_seed(cfg.run.seed, e), train=True,
                              time_limit=cfg.run.time_limit)  # fmt: skip
            if several:
                row["city"] = cities.name(city)
            state["wall_s"] += time.perf_counter() - t0
            state["episode"] = e
            _count(state, row)
            row = _row("train", state, e, episode_seed(cfg.run.seed, e), state["wall_s"], row)
            write(row)
            if cfg.run.eval_every and (e % cfg.run.eval_every == 0 or e == cfg.run.episodes):
                last_eval = evaluate()
            checkpoint()
            if bar is not None:
                bar.update(
                    task,
                    completed=e,
                    status=_status(state, last_eval or row, f"{row.get('decisions_per_s', 0):.0f} dec/s"),
                )
    finally:
        metrics_f.close()
        if bar is not None:
            bar.stop()
    return _summary(out, state)


def _loop_parallel(cfg, cities, method, state, write, evaluate, checkpoint, bar, task) -> None:
    """Parallel rollouts: iterations of N training episodes, one per worker, and one update on all of
    them (agents/workers.py). With `run.policy_lag` L, iteration j acts with the policy after update
    j-1-L. L = 0: the workers wait for the update, the learner for the workers. L = 1: a worker starts its
    episode of iteration j+1 as soon as it is free, with the policy one update older, while the learner
    still waits for iteration j and updates on it. Which weights and seed each episode gets is fixed by
    its number alone, so a run is reproducible, and a checkpoint keeps the weights of the iteration in
    flight (resume re-runs it exactly). Rows, in episode order: one per episode (with the worker that ran
    it), one per update; evaluations run here, between updates."""
    from agents.workers import Rollouts, weights_bytes
    from core.procs import Job, WorkerPool

    warm = method.before_rollouts() if method.learns else {}
    paths = [str(sc.path) for sc in cities.scenarios]  # the worker's env drives the city of each episode
    if cfg.run.executor == "ray":
        from agents.workers import RayWorkerPool

        address = cfg.run.ray_address or os.environ.get("RAY_ADDRESS")
        pool = RayWorkerPool(cfg, paths, method, cfg.rollout_workers, address=address)
    else:
        pool = WorkerPool(cfg, paths, method, cfg.rollout_workers, worker_cls=Rollouts)
    lag = cfg.run.policy_lag
    # this call's iterations (a resumed run starts at an update): (first episode, last episode)
    iters = [(e, min(e + pool.n - 1, cfg.run.episodes)) for e in range(state["episode"] + 1, cfg.run.episodes + 1,
                                                                          pool.n)]  # fmt: skip
    weights: dict[int, bytes | None] = {}  # iteration -> the weights its episodes act with
    t_weights = 0.0

    def snapshot(j: int) -> None:
        nonlocal t_weights
        if j < len(iters) and j not in weights:
            t = time.perf_counter()
            method.schedule(iters[j][0])  # before the weights go out: the workers act with it
            weights[j] = weights_bytes(method) if method.learns else None
            t_weights += time.perf_counter() - t

    behaviour = state.pop("behaviour_weights", None)
    if lag and behaviour is not None and iters:
        weights[0] = behaviour  # resumed: the iteration that was in flight
    for j in range(lag + 1):
        snapshot(j)
    # worker i runs the i-th episode of each iteration (which worker ran an episode is part of its row)
    todo = {i: [(j, a + i) for j, (a, b) in enumerate(iters) if a + i <= b] for i in range(pool.n)}
    free, results = set(range(pool.n)), {}

    def dispatch() -> None:
        for i in sorted(free):
            if todo[i] and todo[i][0][0] in weights:
                j, e = todo[i].pop(0)
                pool.submit(i, Job(e, episode_seed(cfg.run.seed, e), True), weights[j])
                free.discard(i)

    updated = -1  # the last iteration of this call whose update is made
    t0 = time.perf_counter()
    try:
        while updated + 1 < len(iters):
            dispatch()
            j = updated + 1
            first, last = iters[j]
            if not all(e in results for e in range(first, last + 1)):
                for i, job, result in pool.collect():
                    free.add(i)
                    results[job.episode] = result
                continue
            t_rollout = time.perf_counter() - t0
            batch = [results.pop(e) for e in range(first, last + 1)]
            payloads = []
            for e, (row, payload) in zip(range(first, last + 1), batch):
                state["episode"] = e
                _count(state, row)
                last_row = _row("train", state, e, episode_seed(cfg.run.seed, e), state["wall_s"] + t_rollout, row)
                write(last_row)
                payloads.append(payload)
            if lag and j + 1 not in weights:  # the run ends here: its continuation would act with these
                method.schedule(last + 1)
                weights[j + 1] = weights_bytes(method) if method.learns else None
            t1 = time.perf_counter()
            method.schedule(first)  # the learner's policy as it acted (a snapshot may have moved it on)
            logs = method.learn(payloads) if method.learns else {}
            t_update = time.perf_counter() - t1
            logs, warm = {**warm, **logs}, {}
            updated = j
            weights.pop(j, None)
            snapshot(j + 1 + lag)  # the iteration these new weights are for
            method.schedule(first)
            state["wall_s"] += time.perf_counter() - t0
            decisions = sum(int(r.get("decisions") or 0) for r, _ in batch)
            write({"phase": "update", "episode": state["episode"], "env_steps": state["env_steps"],
                   "learner_peak_rss_mb": peak_rss_mb(), "policy_lag": lag,
                   "wall_s": state["wall_s"], "episodes": len(batch), "workers": pool.n,
                   "workers_replaced": pool.replaced, "t_rollout_s": t_rollout, "t_update_s": t_update,
                   "t_weights_s": t_weights, "decisions_per_s": decisions / max(time.perf_counter() - t0, 1e-9),
                   **logs})  # fmt: skip
            t_weights = 0.0
            due = cfg.run.eval_every and (
                any(e % cfg.run.eval_every == 0 for e in range(first, last + 1)) or last == cfg.run.episodes
            )
            dispatch()  # the workers start before the evaluation
            last_eval = evaluate() if due else {}
            checkpoint(behaviour=weights.get(j + 1) if lag else None)
            t0 = time.perf_counter()
            if bar is not None:
                bar.update(task, completed=last, status=_status(state, last_eval or last_row, f"{pool.n} workers"))
    finally:
        pool.close()


def _summary(out: Path, state: dict) -> dict:
    rows = read_metrics(out)
    return {
        "episodes": state["episode"],
        "env_steps": state["env_steps"],
        "wall_s": state["wall_s"],
        "sumo_faults": state["sumo_faults"],
        "last_eval": next((r for r in reversed(rows) if r.get("phase") == "eval"), {}),
        # on several cities the last evaluation has one row per city (last_eval is the last of them)
        "last_evals": {r["city"]: r for r in rows if r.get("phase") == "eval" and r.get("city")},
        "last_train": next((r for r in reversed(rows) if r.get("phase") == "train"), {}),
        "out": str(out),
    }


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All rows of a run's metrics.jsonl (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
