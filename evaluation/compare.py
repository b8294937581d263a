"""`cosim compare`: train a grid of (method, seed) runs in parallel, then results.json and report.html.

    cosim compare --scenario helsinki --methods ippo,mappo,shortest --seeds 3 --episodes 30 --out cmp/

Layout of ``--out``::

    compare.json            the comparison's identity (refuses an --out holding a different one)
    config.json             its configuration tree (`--config DIR/config.json` repeats the comparison)
    expert_plans.json       with `replay` among the methods: the LLM's kept plans as agent -> edges
    runs/<method>-s<seed>/  each run: config.json, metrics.jsonl, checkpoint.pt, run.json, routes.json,
                            wandb/offline-run-*  (one W&B run per (method, seed))
    results.json            per method: mean/spread across seeds of the final metrics, sample
                            efficiency, wall time; per run: status ok/failed and the error
    report.html             one self-contained page (inline images, no network)

Execution: a local process pool (``spawn`` context, one process per run so every run gets a fresh
libsumo, at most one run per core: ``--workers`` defaults to min(cores, runs)); or Ray
(``--executor ray``; ``RAY_ADDRESS`` selects a running cluster, otherwise a local one is started). A run
that raises is marked failed and the others go on; a worker process that dies (killed, SUMO crash)
breaks the local pool: the runs that were in flight are retried one at a time in a fresh process (each
resumes from its last checkpoint), so the culprit is identified and marked failed.

Re-running the same command on the same ``--out`` resumes: finished runs are kept, unfinished ones
continue from their checkpoints, and the results and the report are rewritten.

Demonstrations: the methods that want SED demonstrations (``MethodSpec.needs_demos``: reled, leed,
reled-nosed, reled-fixedw, expert-replay, and whatever is registered later) get one folder as
``algorithm.demos`` — the same folder for every method and seed of the comparison. It is
``--demos DIR`` (made by `cosim demos`), or else produced once before the grid by the SED pipeline
(`evaluation.demos_provider`, the one `cosim train` uses; cached under ``$COSIM_HOME/demos``) with the
tree's ``sed`` section (``--llm``: ``sed.llm``). ``replay`` replays the folder's kept plans.

Configuration: one tree (`evaluation.config.ExperimentConfig`) from the defaults, ``--config``, the
shortcut flags and ``--set section.key=value``; each run gets a copy with its method and seed, writes
it to its config.json and W&B, and the comparison's identity is that tree without method and seed.

Fault injection for tests: ``COSIM_INJECT_FAULT="ippo-s1"`` makes that run raise after its first
metrics row; ``"ippo-s1:exit"`` makes its worker process exit abruptly instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import typer

from core.errors import UserError
from core.jsonio import atomic_write, read_json
from core.procs import children_ignore_ctrl_c, free_cores
from core.raytools import become_subreaper, ray_processes, reap_children
from core.raytools import require_ray as _require_ray

COMPARE_FILE = "compare.json"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
RUN_FILE = "run.json"
ROUTES_FILE = "routes.json"
COMPARE_FORMAT = 2  # 2: the identity holds the configuration tree
INJECT_ENV = "COSIM_INJECT_FAULT"


class CompareError(UserError):
    """Bad input to `cosim compare`."""


# --------------------------------------------------------------------------------------- helpers
_atomic_write = atomic_write
_read_json = read_json


def wants_demos(method: str) -> bool:
    """Whether a method learns from (or replays) SED demonstrations: the registry's ``needs_demos``."""
    from agents.methods import check_method

    return check_method(method).needs_demos


def parse_methods(text: str) -> list[str]:
    from agents.methods import check_method, method_names

    names = []
    for m in (text or "").split(","):
        m = m.strip()
        if m and m not in names:
            names.append(m)
    if not names:
        raise CompareError(f"--methods needs at least one method; choose from: {', '.join(method_names())}")
    for m in names:
        check_method(m)  # raises a UserError naming the known methods
    return names


def check_demos(path: Path, scenario, n_agents: int) -> dict:
    """A demonstrations folder made by `cosim demos` for this city and number of agents."""
    if not path.is_dir():
        raise CompareError(f"--demos {path} is not a folder (make one with `cosim demos --out DIR`)")
    from cosim.demos import PLANS_JSON, SUMMARY_JSON, DemosError, read_summary

    try:
        summary = read_summary(path)
    except DemosError:
        summary = None
    if summary is None or not (path / PLANS_JSON).exists():
        raise CompareError(
            f"--demos {path} holds no SED demonstrations ({SUMMARY_JSON} and {PLANS_JSON} from `cosim demos`)"
        )
    if summary.get("scenario") not in (None, scenario.name):
        raise CompareError(f"--demos {path} were made for {summary.get('scenario')!r}, not {scenario.name!r}")
    if summary.get("agents") not in (None, n_agents):
        raise CompareError(
            f"--demos {path} cover {summary.get('agents')} agents but the comparison controls {n_agents} "
            f"(pass --agents {summary.get('agents')} or make demos with --agents {n_agents})"
        )
    return summary


def expert_plans(demos: Path) -> dict[str, list[str]]:
    """The kept plans of a demonstrations folder as a replay plans file's content (agent -> edges)."""
    from cosim.demos import read_plans

    return {a: p.edges for a, p in read_plans(demos).items()}


def comparison_id(identity: dict) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _diff(old: dict, new: dict) -> str:
    from core.settings import diff

    return diff(old, new)


def prepare_out(out: Path, identity: dict) -> bool:
    """Check --out; True when it holds this very comparison (resume), False when it is new/empty."""
    from core.outputs import check_output

    check_output(out, "cosim compare", lambda names: COMPARE_FILE in names, error=CompareError)
    stored = out / COMPARE_FILE
    if stored.exists():
        doc = _read_json(stored)
        old = doc.get("identity") if isinstance(doc, dict) else None
        if not isinstance(old, dict):
            raise CompareError(f"--out {out} holds an unreadable {COMPARE_FILE}; choose another --out")
        if old != identity and not (out / "runs").exists():
            return False  # the earlier attempt stopped before any run started: nothing to protect
        if old != identity:
            raise CompareError(
                f"--out {out} holds a different comparison ({_diff(old, identity)}); choose another --out "
                "or repeat that comparison's exact settings to resume it"
            )
        return True
    return False


# ------------------------------------------------------------------------------------------- runs
def inject_fault(name: str, row: dict | None = None) -> None:
    """Testing hook: COSIM_INJECT_FAULT="name[:exit],..." fails that run after its first metrics row."""
    spec = os.environ.get(INJECT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        target, _, mode = item.partition(":")
        if target == name:
            if mode == "exit":
                os._exit(70)
            raise RuntimeError(f"injected fault ({INJECT_ENV}={item})")


def _completed(run_dir: Path, episodes: int) -> dict | None:
    """The stored result of a run that already finished all its episodes (None otherwise)."""
    from agents.runner import CHECKPOINT, load_checkpoint

    prior = _read_json(run_dir / RUN_FILE)
    if not isinstance(prior, dict) or prior.get("status") != "ok" or not (run_dir / CHECKPOINT).exists():
        return None
    try:
        ck = load_checkpoint(run_dir / CHECKPOINT)
    except UserError:
        return None
    return prior if ck.get("episode", 0) >= episodes else None


def run_job(job: dict) -> dict:
    """One (method, seed) run in the current process: train with W&B tracking, record example routes,
    write run.json. Never raises: failures come back as ``status: failed`` with the error."""
    t0 = time.perf_counter()
    run_dir = Path(job["dir"])
    res = {k: job[k] for k in ("name", "method", "seed")}
    res.update(dir=str(run_dir), status="failed", error=None, wandb=None, wandb_warning=None)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ".started").write_text(job.get("token", ""))
        from agents.methods import make_method
        from core.settings import from_dict
        from evaluation.config import ExperimentConfig
        from evaluation.tracking import tracked_train

        cfg = from_dict(ExperimentConfig, job["cfg"])
        prior = _completed(run_dir, cfg.run.episodes)
        if prior is not None:
            res.update({k: prior.get(k) for k in ("wandb", "wandb_warning")}, status="ok", reused=True)
        else:
            method = make_method(cfg)
            first = {"seen": False}

            def on_row(row: dict) -> None:
                if not first["seen"]:
                    first["seen"] = True
                    inject_fault(job["name"], row)

            out = tracked_train(
                cfg, run_dir, resume=True, progress=False, demos=job.get("demos"), tags=job.get("tags", ()),
                extra_config=job.get("extra_config"), method=method, on_row=on_row,
            )  # fmt: skip
            res.update(wandb=out.get("wandb"), wandb_warning=out.get("wandb_warning"), status="ok")
            if job.get("routes"):
                try:
                    _record_routes(cfg, method, run_dir)
                except Exception as exc:  # noqa: BLE001 - the map is a nicety; the run stands
                    res["routes_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - one failed run must not stop the grid
        from evaluation.tracking import scrub

        res["error"] = scrub(f"{type(exc).__name__}: {str(exc)[:500]}")
        res["traceback"] = scrub("".join(traceback.format_exception(exc))[-3000:])
    res["process_s"] = time.perf_counter() - t0
    try:
        _atomic_write(run_dir / RUN_FILE, json.dumps(res, indent=1, default=str) + "\n")
    except OSError:
        pass
    return res


def _record_routes(cfg, method, run_dir: Path) -> None:
    """Every agent's route in one greedy episode on the evaluation seed (for the report's map)."""
    from agents.episode import make_env
    from evaluation.evaluate import greedy_episode
    from scenarios import ensure_built

    sc = ensure_built(cfg.scenario.name, **cfg.scenario.overrides())
    env = make_env(sc, cfg, method.env_settings)
    try:
        row, routes = greedy_episode(env, method, cfg.run.eval_seed, routes=True)
    finally:
        env.close()
    doc = {"seed": cfg.run.eval_seed, "mean_travel_time": row.get("mean_travel_time"), "routes": routes}
    _atomic_write(run_dir / ROUTES_FILE, json.dumps(doc) + "\n")


def _failed(job: dict, error: str) -> dict:
    res = {k: job[k] for k in ("name", "method", "seed")}
    res.update(dir=job["dir"], status="failed", error=error, wandb=None, wandb_warning=None)
    try:
        _atomic_write(Path(job["dir"]) / RUN_FILE, json.dumps(res, indent=1) + "\n")
    except OSError:
        pass
    return res


def _pool(workers: int):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
        initializer=_ignore_ctrl_c,
    )  # fmt: skip


def _ignore_ctrl_c() -> None:
    """A run's process leaves Ctrl-C to the comparison, which stops it (see run_local): a KeyboardInterrupt
    traceback from every run process is not what a user who pressed Ctrl-C should read."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(jobs: list[dict], workers: int, on_done: Callable[[dict], None]) -> None:
    """The grid on a local process pool (one process per run); survives worker processes dying. The run
    processes ignore Ctrl-C (no traceback from each); the comparison stops them and says so once."""
    try:
        _run_local(list(jobs), workers, on_done)
    except KeyboardInterrupt:  # also while a pool shuts down, or a replacement process starts
        _kill_children()
        raise


def _kill_children() -> None:
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(5)


def _run_local(todo: list[dict], workers: int, on_done: Callable[[dict], None]) -> None:
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    while todo:
        token = uuid.uuid4().hex
        for j in todo:
            j["token"] = token
        broken: list[dict] = []
        with _pool(max(1, min(workers, len(todo)))) as pool:
            try:
                with children_ignore_ctrl_c():  # the processes start here, ignoring Ctrl-C from the first
                    futures = {pool.submit(run_job, j): j for j in todo}
                for f in as_completed(futures):
                    j = futures[f]
                    try:
                        on_done(f.result())
                    except BrokenProcessPool:
                        broken.append(j)
                    except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be pickled
                        on_done(_failed(j, f"{type(exc).__name__}: {str(exc)[:300]}"))
            except KeyboardInterrupt:  # the runs ignore Ctrl-C: stop them, their folders resume next time
                _kill_children()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        # the pool broke: the runs that had started are suspects; each is retried alone in a fresh process
        started = [j for j in broken if (Path(j["dir"]) / ".started").exists()
                   and (Path(j["dir"]) / ".started").read_text() == token]  # fmt: skip
        todo = [j for j in broken if j not in started]
        for j in started:
            j["token"] = uuid.uuid4().hex
            with _pool(1) as pool:
                try:
                    on_done(pool.submit(run_job, j).result())
                except BrokenProcessPool:
                    on_done(_failed(j, "the worker process died abruptly (killed, out of memory or a crash in SUMO)"))


def require_ray():
    """Ray, or a CompareError saying how to install it."""
    try:
        return _require_ray()
    except UserError as exc:
        raise CompareError(str(exc)) from None


def run_ray(jobs: list[dict], workers: int, on_done: Callable[[dict], None]) -> None:
    """The grid as Ray tasks (one CPU and a fresh worker process each); failures are per task."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:
            become_subreaper()
            ray.init(num_cpus=workers, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(run_job)
        pending = {remote.remote(j): j for j in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                j = pending.pop(ref)
                try:
                    on_done(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - WorkerCrashedError, RayTaskError, ...
                    first = (str(exc).strip().splitlines() or [""])[0][:300]
                    on_done(_failed(j, f"Ray task failed: {type(exc).__name__}: {first}"))
    finally:
        if started:
            ray_pids = ray_processes()
            ray.shutdown()
            reap_children(ray_pids)


# ---------------------------------------------------------------------------------------- demos
def make_demos(tree: dict) -> str:
    """SED demonstrations through the same provider `cosim train` uses (cached under $COSIM_HOME/demos
    by scenario, agents, seed and SED settings); runs in a worker process (SED drives libsumo)."""
    from core.settings import from_dict
    from evaluation.config import ExperimentConfig
    from evaluation.demos_provider import provide_demos

    return str(provide_demos(from_dict(ExperimentConfig, tree)))


def _make_demos_in_subprocess(tree: dict) -> Path:
    with _pool(1) as pool:
        try:
            return Path(pool.submit(make_demos, tree).result())
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CompareError(f"producing SED demonstrations failed ({type(exc).__name__}: {str(exc)[:300]}); "
                               "pass ready ones with --demos DIR") from None  # fmt: skip


# ------------------------------------------------------------------------------------- compare
def compare(
    scenario: str | None = None,
    methods: str | list[str] = "",
    seeds: int | None = None,
    episodes: int | None = None,
    out: str | Path | None = None,
    *,
    tree=None,
    executor: str | None = None,
    agents: int | None = None,
    workers: int | None = None,
    demos: str | Path | None = None,
    horizon: float | None = None,
    eval_every: int | None = None,
    eval_seed: int | None = None,
    ppo: dict | None = None,
    llm: str | None = None,
    reference: list[str] | None = None,
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Run the comparison; returns results.json's content (also written to `out`).

    `tree` (default: the defaults) is the experiment's configuration; the other keywords are the
    command's shortcuts onto it (None: not given), `ppo` a dict of PPO settings."""
    from core.settings import locate, nest, update
    from evaluation.config import ExperimentConfig

    log = log or (lambda msg: print(msg, file=sys.stderr))
    t_start = time.perf_counter()
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    given = {"scenario.name": scenario, "run.seeds": seeds, "run.episodes": episodes, "run.executor": executor,
             "env.n_agents": agents, "run.workers": workers, "env.horizon": horizon, "run.eval_every": eval_every,
             "run.eval_seed": eval_seed, "sed.llm": llm, "run.out": str(out) if out is not None else None,
             }  # fmt: skip
    try:
        given.update({locate(ExperimentConfig, k, f"--set {k}"): v for k, v in (ppo or {}).items()})
        tree = update(
            tree if tree is not None else ExperimentConfig(), nest({k: v for k, v in given.items() if v is not None})
        )
        tree.check()
    except UserError as exc:
        raise CompareError(str(exc)) from None
    run = tree.run
    if run.eval_every <= 0:
        raise CompareError(
            f"--eval-every must be >= 1 (the final metrics are greedy evaluations), got {run.eval_every}"
        )
    if run.out is None:
        raise CompareError("--out is required: the comparison's folder")
    if run.executor == "ray":
        require_ray()
    if reference:
        unknown = [m for m in reference if m not in names]
        if unknown:
            raise CompareError(f"--reference {', '.join(unknown)} not among --methods {', '.join(names)}")
    scenario, seeds, episodes, agents, executor = (
        tree.scenario.name,
        run.seeds,
        run.episodes,
        tree.env.n_agents,
        run.executor,
    )
    llm, out = tree.sed.llm, run.out

    from scenarios import ensure_built

    sc = ensure_built(scenario)  # unknown city -> ScenarioError; built once here, not by every worker
    # the runs name the city by its shipped name when the user did, otherwise by the built folder
    scenario_ref = sc.name if str(scenario).strip() == sc.name else str(sc.path)
    n_agents = len(sc.trips(agents))
    out = Path(out).expanduser().resolve()
    need_demos = [m for m in names if wants_demos(m)]
    demos_dir: Path | None = None
    if demos is not None:
        demos_dir = Path(demos).expanduser().resolve()
        check_demos(demos_dir, sc, n_agents)
    if "replay" in names and demos_dir is None and not need_demos:
        raise CompareError("replay needs route plans: pass --demos DIR (its LLM plans are replayed), "
                           "or compare expert-replay, which uses the demonstrations of the comparison")  # fmt: skip
    from dataclasses import replace

    base = replace(tree, scenario=replace(tree.scenario, name=scenario_ref))
    shared = base.identity()
    shared["algorithm"].pop("method")
    shared["run"].pop("seed")
    identity = {
        "format": COMPARE_FORMAT,
        "scenario": sc.name,
        "scenario_build": sc.path.name,
        "episodes": episodes,
        "agents": agents,
        "horizon": tree.env.horizon,
        "eval_every": run.eval_every,
        "eval_seed": run.eval_seed,
        "methods": names,
        "seeds": seeds,
        "config": shared,
        "demos": str(demos_dir) if demos_dir else (f"generated with --llm {llm}" if need_demos else None),
        "reference": list(reference) if reference else None,
    }
    resumed = prepare_out(out, identity)
    cid = comparison_id(identity)
    out.mkdir(parents=True, exist_ok=True)
    if not resumed:
        doc = {"identity": identity, "id": cid, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "command": sys.argv[:1] and [Path(sys.argv[0]).name, *sys.argv[1:]]}  # fmt: skip
        from evaluation.tracking import scrub

        _atomic_write(out / COMPARE_FILE, json.dumps(scrub(doc), indent=1) + "\n")
        # the comparison's own tree (every run's, but for method and seed): `--config DIR/config.json` repeats it
        _atomic_write(out / CONFIG_FILE, json.dumps({"config": scrub(base.to_dict())}, indent=1) + "\n")
    else:
        log(f"resuming the comparison in {out}")

    if need_demos and demos_dir is None:
        log(f"SED demonstrations for {', '.join(need_demos)} (--llm {llm}): made once, cached under $COSIM_HOME/demos")
        demos_dir = _make_demos_in_subprocess(replace(base, run=replace(base.run, seed=0)).to_dict())
        check_demos(demos_dir, sc, n_agents)
    plans_file = None
    if demos_dir is not None and "replay" in names:
        plans_file = out / "expert_plans.json"
        _atomic_write(plans_file, json.dumps(expert_plans(demos_dir)) + "\n")

    jobs = []
    for m in names:
        for s in range(seeds):
            gets_demos = demos_dir is not None and m in need_demos
            algorithm = replace(base.algorithm, method=m, demos=str(demos_dir) if gets_demos else None,
                                plans=str(plans_file) if (m == "replay" and plans_file) else None)  # fmt: skip
            # a run's rollout workers are local processes on the node that runs it (with --executor ray too:
            # a Ray task starting actors of its own could wait forever for CPUs its siblings hold)
            cfg = replace(base, algorithm=algorithm, run=replace(base.run, seed=s, executor="local"))
            name = f"{m}-s{s}"
            jobs.append(
                {
                    "name": name, "method": m, "seed": s, "dir": str(out / "runs" / name), "cfg": cfg.to_dict(),
                    "demos": str(demos_dir) if gets_demos else None, "tags": [f"compare-{cid}", sc.name],
                    "extra_config": {"compare": {"id": cid, "methods": ",".join(names), "seeds": seeds}},
                    "routes": s == 0,
                }
            )  # fmt: skip
    # every run may drive several rollout workers (run.rollout_workers): runs x workers SUMO processes
    # at once never exceed the cores
    per_run = tree.rollout_workers
    cores = free_cores()
    n_workers = max(1, min(run.workers or cores, max(1, cores // per_run), len(jobs)))
    per = f" x {per_run} rollout workers each" if per_run > 1 else ""
    log(f"{len(jobs)} runs ({len(names)} method(s) x {seeds} seed(s), {episodes} episode(s) each) on {sc.name}, "
        f"{n_workers} {'Ray' if executor == 'ray' else 'local'} worker(s){per} -> {out}")  # fmt: skip

    results: dict[str, dict] = {}

    def on_done(res: dict) -> None:
        results[res["name"]] = res
        if res["status"] == "ok":
            last = _last_eval(Path(res["dir"]))
            mtt = last.get("mean_travel_time")
            extra = f"final travel time {mtt:.1f} s" if isinstance(mtt, (int, float)) else ""
            log(
                f"[{len(results)}/{len(jobs)}] ok      {res['name']:<22} {extra}{' (kept from before)' if res.get('reused') else ''}"
            )
        else:
            log(f"[{len(results)}/{len(jobs)}] FAILED  {res['name']:<22} {res.get('error')}")

    (run_ray if executor == "ray" else run_local)(jobs, n_workers, on_done)

    from evaluation.results import read_rows, summarise

    ordered = [results.get(j["name"]) or _failed(j, "no result came back") for j in jobs]
    rows = {r["name"]: read_rows(r["dir"]) for r in ordered}
    res = summarise(identity, ordered, rows, reference=reference)
    res["id"] = cid
    res["out"] = str(out)
    res["scenario_folder"] = str(sc.path)
    res["demos"] = _demos_block(demos_dir)
    res["executor"] = executor
    res["workers"] = n_workers
    res["wall_s"] = time.perf_counter() - t_start
    from evaluation.tracking import scrub

    res = scrub(res)
    _atomic_write(out / RESULTS_FILE, json.dumps(res, indent=1, default=str) + "\n")
    if report:
        from evaluation.report import write_report

        path = write_report(out, res)
        log(f"report: {path}")
        from evaluation.tracking import logged_in

        if logged_in():
            from evaluation.wandb_report import online_report

            url = online_report(res)
            if url:
                res["wandb_report"] = url
                _atomic_write(out / RESULTS_FILE, json.dumps(res, indent=1, default=str) + "\n")
                log(f"W&B report: {url}")
    return res


def _last_eval(run_dir: Path) -> dict:
    from evaluation.results import final_row, read_rows

    return final_row(read_rows(run_dir))


def _demos_block(demos_dir: Path | None) -> dict | None:
    if demos_dir is None:
        return None
    from cosim.demos import DemosError, read_summary

    try:
        summary = read_summary(demos_dir)
    except DemosError:  # the block is informative only: a comparison is not lost for it
        summary = {}
    keep = ("scenario", "llm", "agents", "subsets", "rounds", "accepted_round", "best_round", "bound_per_round",
            "mean_bound_per_round", "mean_travel_time_per_round", "invalid_answers", "repaired", "llm_calls",
            "llm_seconds", "demo_mean_travel_time", "random_choice_mean_travel_time")  # fmt: skip
    block = {k: summary.get(k) for k in keep if k in summary}
    block["dir"] = str(demos_dir)
    block["threshold"] = (summary.get("config") or {}).get("threshold")
    return block


# -------------------------------------------------------------------------------------------- CLI
def _print_summary(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from evaluation.report import fmt_stat
    from evaluation.results import evaluation_kind

    t = Table(title=f"{res['comparison']['scenario']}: final {evaluation_kind(res['comparison'])} evaluation, "
              "mean ± std over seeds")  # fmt: skip
    for c in ("method", "travel time s", "all vehicles s", "arrival rate", "return", "episodes to target", "runs ok"):
        t.add_column(c, justify="right" if c != "method" else "left")
    for m, d in res["methods"].items():
        se = d["sample_efficiency"]
        t.add_row(
            m, fmt_stat(d["final"]["mean_travel_time"], 1),
            fmt_stat(d["final"].get("all_vehicles_mean_travel_time"), 1), fmt_stat(d["final"]["arrival_rate"], 2),
            fmt_stat(d["final"]["return"], 2) if d["final"]["return"] else "—",
            (fmt_stat(se["episodes"], 1) + f" ({se['reached']}/{se['of']})") if se["of"] else "-",
            f"{d['runs_ok']}/{d['runs']}",
        )  # fmt: skip
    Console(stderr=True).print(t)


def register(app: typer.Typer) -> None:
    from core.settings import CONFIG_HELP, SET_HELP
    from core.shortcuts import shortcut_options
    from evaluation.config import ExperimentConfig as _E

    @app.command("compare")
    @shortcut_options("scenario", "seeds", "episodes", "agents", "horizon", "eval_every", "eval_seed", "workers",
                      "executor", "llm", "expert", "out", tree=lambda: _E,
                      helps={"out": "Comparison folder: runs, results.json, report.html.",
                             "llm": "LLM for demonstrations made on the fly (see `cosim demos`)."})  # fmt: skip
    def compare_cmd(
        shortcuts: dict,
        methods: str = typer.Option(..., "--methods", "-m", help="Comma-separated methods, e.g. ippo,mappo,shortest."),
        demos: Path | None = typer.Option(
            None, "--demos", help="SED demonstrations folder (`cosim demos`) for the methods that use them."
        ),
        config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        reference: str | None = typer.Option(
            None,
            "--reference",
            help="Methods whose best final value sets the sample-efficiency target (default: the learned baselines).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
    ) -> None:
        """Train methods x seeds in parallel; write results.json and a self-contained report.html."""
        from core.settings import resolve

        try:
            tree = resolve(_E, config, set_, shortcuts)
        except UserError as exc:
            raise CompareError(str(exc)) from None
        res = compare(
            methods=methods, tree=tree, demos=demos,
            reference=[m.strip() for m in reference.split(",") if m.strip()] if reference else None,
        )  # fmt: skip
        _print_summary(res)
        failed = [r for r in res["runs"] if r["status"] != "ok"]
        if as_json:
            print(json.dumps(res, indent=1, default=str))
        else:
            print(Path(res["out"]) / REPORT_FILE)
        if failed and len(failed) == len(res["runs"]):
            print(f"error: all {len(failed)} runs failed; see {Path(res['out']) / RESULTS_FILE}", file=sys.stderr)
            raise typer.Exit(1)
        if failed:
            print(f"warning: {len(failed)} of {len(res['runs'])} runs failed: "
                  + ", ".join(r["name"] for r in failed), file=sys.stderr)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from core.errors import standalone

    standalone(register, "Comparisons (same as `cosim compare`).", argv)


if __name__ == "__main__":
    main()
