"""Weights & Biases tracking for every training run: one W&B run per (method, seed).

What a run records:

* **config**: the run's configuration tree, flattened (``algorithm.ppo.lr``, ``env.reward_scale``, …), plus whatever the
  caller adds (the comparison it belongs to); secrets scrubbed (below).
* **per-episode metrics** (through the runner's ``on_row`` hook): every numeric field of a metrics row
  under ``train/…`` or ``eval/…`` (mean travel time, arrival rate, return, teleports, losses, …), with
  ``episode``, ``env_steps`` and ``wall_s`` as x-axes (``train/*`` and ``eval/*`` are plotted against
  ``env_steps`` by default); a run on several cities logs each row's figures under
  ``train/<city>/…`` / ``eval/<city>/…`` as well; ``train/sps`` = decisions per second of the episode and ``sps`` = cumulative
  decisions / cumulative wall-clock; the wall-clock split ``t_sumo_s``, ``t_env_python_s``,
  ``t_torch_infer_s``, ``t_torch_update_s``, ``t_python_s``.
* **LLM tables** when the run is given an SED demonstrations folder: ``llm/sed_rounds`` (bound and
  travel time per round), ``llm/sed_bounds`` (per round and agent: B_i, V_i, D_i, travel time),
  ``llm/plans`` (the kept plan per agent); the SED summary under ``sed/…`` in the run summary.
* **summary**: status, episodes, env steps, wall time, SUMO faults, the final greedy evaluation
  (``final/…``) and the whole-run wall-clock split (``time/…`` seconds and shares).

Naming: ``group = f"{scenario}-{hash}"`` where the hash covers the run's whole config except the seed
(so a group is one method's seeds, which W&B averages), ``job_type = method``; ``name =
f"{method}-s{seed}"``. Comparisons add a ``compare-<id>`` tag that selects all of their runs.

Mode: ``WANDB_MODE`` is honoured; unset means **offline** (files under ``<run dir>/wandb/``, nothing
sent). Training never fails or hangs because of W&B: ``wandb.init`` runs under a time limit
(``COSIM_WANDB_INIT_TIMEOUT``, default 30 s), every W&B call is wrapped, and any failure turns tracking
off for that run with one warning.

Secrets: environment variables whose name contains KEY, TOKEN, SECRET, PASSWORD or CREDENTIAL are never
sent: config keys with such names are dropped, and their values are masked wherever they would appear
in a config, a metric row or a table. W&B's console capture, code and git saving are off.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import is_dataclass
from pathlib import Path

from core.secrets import MASK, SECRET_NAME, redact, secret_values  # noqa: F401 - re-exported

DEFAULT_PROJECT = "reled-cosim"
_STEP_KEYS = ("episode", "env_steps", "wall_s")
_TIME_KEYS = ("t_sumo_s", "t_env_python_s", "t_torch_infer_s", "t_torch_update_s", "t_python_s")


# ------------------------------------------------------------------------------------------ secrets
# one redactor for the whole suite (scenarios/secrets.py); `scrub` is its name here
scrub = redact


# ------------------------------------------------------------------------------------------- config
def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict:
    """{"ppo": {"lr": 1e-3}} -> {"ppo.lr": 1e-3}; lists stay values."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _as_dict(cfg) -> dict:
    """The run's tree as JSON data (`to_dict` of the configuration tree)."""
    from core.settings import to_dict

    return json.loads(json.dumps(to_dict(cfg) if is_dataclass(cfg) else dict(cfg), default=str))


def config_hash(cfg, drop: tuple[str, ...] = ("run.seed",)) -> str:
    """8 hex digits over the run's identity (the tree minus what may change on resume) minus `drop`."""
    d = flatten(cfg.identity() if hasattr(cfg, "identity") else _as_dict(cfg))
    d = {k: v for k, v in d.items() if k not in drop}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:8]


def group_name(cfg) -> str:
    """W&B group of a run: ``<scenario>-<hash of the config without the seed>``."""
    return f"{Path(str(cfg.scenario.name)).name}-{config_hash(cfg)}"


def wandb_mode() -> str:
    """WANDB_MODE, defaulting to offline (``dryrun`` is offline; ``run`` is online)."""
    mode = (os.environ.get("WANDB_MODE") or "offline").strip().lower()
    return {"dryrun": "offline", "run": "online"}.get(mode, mode)


def logged_in() -> bool:
    return wandb_mode() == "online" and bool(os.environ.get("WANDB_API_KEY"))


def call_with_timeout(fn: Callable, timeout: float, what: str):
    """Run fn() in a daemon thread; raise TimeoutError if it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"wandb-{what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{what} took longer than {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _number(v) -> float | int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return None


class Tracker:
    """One W&B run for one (method, seed) training run; every method is a no-op once disabled."""

    def __init__(
        self,
        cfg,
        run_dir: str | Path,
        *,
        project: str | None = None,
        name: str | None = None,
        tags: tuple[str, ...] | list[str] = (),
        extra_config: dict | None = None,
        demos: str | Path | None = None,
        init_timeout: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.name = name or f"{cfg.algorithm.method}-s{cfg.run.seed}"
        self.tags = list(tags)
        self.extra_config = extra_config or {}
        self.demos = Path(demos) if demos else None
        self.init_timeout = float(init_timeout or os.environ.get("COSIM_WANDB_INIT_TIMEOUT") or 30)
        self.mode = wandb_mode()
        self.run = None
        self.warning: str | None = None
        self._secrets = secret_values()
        self._time_totals = dict.fromkeys(_TIME_KEYS, 0.0)
        self._wall = 0.0
        self.rows_logged = 0

    # -------------------------------------------------------------------------------- helpers
    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_path(self) -> str | None:
        """The run's local folder (offline-run-* or run-*), if tracking is on."""
        try:
            return str(Path(self.run.dir).parent) if self.run is not None else None
        except Exception:  # noqa: BLE001
            return None

    def _disable(self, what: str, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        msg = scrub(
            f"W&B {what} failed ({type(exc).__name__}: {first}); training goes on without tracking", self._secrets
        )
        self.warning = msg
        print(f"warning: {msg}", file=sys.stderr)
        run, self.run = self.run, None
        if run is not None:
            try:
                call_with_timeout(lambda: run.finish(exit_code=1), 15, "finish")
            except BaseException:  # noqa: BLE001
                pass

    def config(self) -> dict:
        d = flatten(_as_dict(self.cfg))
        d.update(flatten(self.extra_config))
        d["group_hash"] = config_hash(self.cfg)
        return scrub(d, self._secrets)

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> bool:
        if self.mode == "disabled":
            return False
        try:
            import wandb
        except Exception as exc:  # noqa: BLE001 - a broken install is the same as none
            self._disable("import", exc)
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # our package `agents` shares its name with an LLM SDK: stop wandb from advertising Weave for it
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        try:
            settings = wandb.Settings(
                init_timeout=self.init_timeout,
                console="off",
                save_code=False,
                disable_git=True,
                silent=True,
                x_disable_stats=True,
            )

            def init():
                return wandb.init(
                    project=self.project,
                    dir=str(self.run_dir),
                    name=self.name,
                    group=group_name(self.cfg),
                    job_type=str(self.cfg.algorithm.method),
                    tags=self.tags,
                    config=self.config(),
                    mode=self.mode,
                    settings=settings,
                    reinit="create_new",
                )

            self.run = call_with_timeout(init, self.init_timeout + 5, "init")
            for x in ("train", "eval"):
                self.run.define_metric(f"{x}/*", step_metric="env_steps")
            if self.demos is not None:
                self.log_demos(self.demos)
        except BaseException as exc:  # noqa: BLE001 - tracking must never stop training
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._disable("init", exc)
            return False
        return True

    def log_row(self, row: dict) -> None:
        """The runner's on_row hook: one metrics row (phase train or eval)."""
        if self.run is None:
            return
        phase = row.get("phase", "train")
        data: dict = {}
        for k, v in row.items():
            n = _number(v)
            if n is None or k == "phase":
                continue
            if k in _STEP_KEYS:
                data[k] = n
            else:
                data[f"{phase}/{k}"] = n
                if isinstance(row.get("city"), str):  # a run on several cities: a curve per city too
                    data[f"{phase}/{row['city']}/{k}"] = n
        if phase == "train":
            wall = row.get("episode_wall_s") or 0.0
            if wall:
                data["train/sps"] = (row.get("decisions") or 0) / wall
            for k in _TIME_KEYS:
                self._time_totals[k] += float(row.get(k) or 0.0)
        if row.get("wall_s"):
            self._wall = float(row["wall_s"])
            data["sps"] = (row.get("env_steps") or 0) / row["wall_s"]
        try:
            self.run.log(data)
            self.rows_logged += 1
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._disable("log", exc)

    def log_demos(self, demos: str | Path) -> None:
        """LLM tables from an SED demonstrations folder (rounds, bounds per agent, plans)."""
        if self.run is None:
            return
        import wandb

        from cosim import demos as demofiles

        def lenient(read, empty):  # the tables are extras: a run is not lost for a broken file
            try:
                return read(demos)
            except demofiles.DemosError:
                return empty

        tables: dict = {}
        summary = lenient(demofiles.read_summary, {})
        rounds = lenient(demofiles.read_rounds, [])
        plans = lenient(demofiles.read_plans, {})
        if rounds:
            tables["llm/sed_rounds"] = wandb.Table(
                columns=[
                    "round",
                    "max_bound",
                    "mean_bound",
                    "mean_travel_time",
                    "accepted",
                    "invalid_answers",
                    "repaired",
                    "llm_calls",
                    "llm_seconds",
                ],  # fmt: skip
                data=[
                    [
                        r.get("round"),
                        _max(r.get("bound")),
                        _mean(r.get("bound")),
                        r.get("mean_travel_time"),
                        bool(r.get("accepted")),
                        r.get("invalid_answers"),
                        r.get("repaired"),
                        r.get("llm_calls"),
                        r.get("llm_seconds"),
                    ]  # fmt: skip
                    for r in rounds
                ],
            )
            bounds = []
            for r in rounds:
                for agent, b in (r.get("bound") or {}).items():
                    bounds.append([r.get("round"), agent, b, (r.get("volatility") or {}).get(agent),
                                   (r.get("divergence") or {}).get(agent), (r.get("travel_time") or {}).get(agent)])  # fmt: skip
            tables["llm/sed_bounds"] = wandb.Table(
                columns=["round", "agent", "bound", "volatility", "divergence", "travel_time"], data=bounds
            )
        if plans:
            rows = []
            for agent, p in plans.items():
                rows.append([agent, p.candidate, len(p.edges), " ".join(p.edges)[:2000]])
            tables["llm/plans"] = wandb.Table(
                columns=["agent", "candidate", "edges", "route"], data=scrub(rows, self._secrets)
            )
        try:
            if tables:
                self.run.log(tables)
            for k in ("llm", "agents", "rounds", "accepted_round", "best_round", "demo_mean_travel_time",
                      "random_choice_mean_travel_time", "llm_calls", "llm_seconds", "invalid_answers", "repaired"):  # fmt: skip
                if k in summary:
                    self.run.summary[f"sed/{k}"] = scrub(summary[k], self._secrets)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._disable("table logging", exc)

    def log_table(self, key: str, columns: list[str], rows: list[list], summary: dict | None = None) -> None:
        """A table (and summary values) for a study's own W&B run (`cosim generalize`)."""
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})
            for k, v in (summary or {}).items():
                self.run.summary[k] = v
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._disable("table logging", exc)

    def finish(self, result: dict | None = None, status: str = "ok", error: str | None = None) -> None:
        if self.run is None:
            return
        s: dict = {"status": status}
        if error:
            s["error"] = scrub(error[:500], self._secrets)
        if result:
            for k in ("episodes", "env_steps", "wall_s", "sumo_faults"):
                if k in result:
                    s[k] = result[k]
            for k, v in (result.get("last_eval") or {}).items():
                n = _number(v)
                if n is not None and k not in ("phase",):
                    s[f"final/{k}"] = n
            evals = result.get("last_evals") or {}
            for city, row in evals.items() if len(evals) > 1 else ():  # several cities: each one's too
                for k, v in row.items():
                    n = _number(v)
                    if n is not None and k not in ("phase",):
                        s[f"final/{city}/{k}"] = n
        total = sum(self._time_totals.values())
        for k, v in self._time_totals.items():
            s[f"time/{k}"] = v
            if total > 0:
                s[f"time/share_{k[2:-2]}"] = v / total
        if self._wall and result and result.get("env_steps"):
            s["sps"] = result["env_steps"] / self._wall
        run = self.run
        try:
            for k, v in s.items():
                run.summary[k] = v
            call_with_timeout(lambda: run.finish(exit_code=0 if status == "ok" else 1), 60, "finish")
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.warning = f"W&B finish failed ({type(exc).__name__}: {str(exc)[:200]})"
            print(f"warning: {scrub(self.warning, self._secrets)}", file=sys.stderr)
        self.run = None


def _max(d) -> float | None:
    return max(d.values()) if isinstance(d, dict) and d else None


def _mean(d) -> float | None:
    return sum(d.values()) / len(d) if isinstance(d, dict) and d else None


# ------------------------------------------------------------------------------------------- train
def tracked_train(
    cfg,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    demos: str | Path | None = None,
    tags: tuple[str, ...] | list[str] = (),
    extra_config: dict | None = None,
    project: str | None = None,
    on_row: Callable[[dict], None] | None = None,
    **train_kwargs,
) -> dict:
    """`agents.runner.train` with a W&B run around it. Returns train's summary plus ``wandb`` (the
    local run folder or None) and ``wandb_warning`` (why tracking was off, if it was)."""
    from agents.runner import CHECKPOINT, METRICS, load_checkpoint, train

    out = Path(out)
    tracker = Tracker(cfg, out, project=project, tags=tags, extra_config=extra_config, demos=demos)
    tracker.start()
    wandb_dir = tracker.run_path
    if resume and tracker.active and (out / CHECKPOINT).exists():
        # a resumed run keeps the rows up to its checkpoint: log them again into this W&B run
        try:
            keep = int(load_checkpoint(out / CHECKPOINT)["rows"])
            lines = (out / METRICS).read_text(errors="replace").splitlines()[:keep]
            for line in lines:
                tracker.log_row(json.loads(line))
        except Exception:  # noqa: BLE001 - train() reports a bad checkpoint itself
            pass

    def hook(row: dict) -> None:
        tracker.log_row(row)
        if on_row is not None:
            on_row(row)

    try:
        res = train(cfg, out, resume=resume, progress=progress, on_row=hook, **train_kwargs)
    except BaseException as exc:
        tracker.finish(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    tracker.finish(res)
    return {**res, "wandb": wandb_dir, "wandb_warning": tracker.warning}
