"""The numbers of a comparison: final metrics with spread across seeds, sample efficiency, wall time.

Definitions (also written into ``results.json`` under ``definitions``):

* **Final metrics** of a run: its last greedy evaluation (the row with ``phase == "eval"`` written after
  the last training episode; the greedy policy on the fixed evaluation seed). Per method: ``mean``,
  ``std`` (sample standard deviation, ddof = 1; 0 for one seed), ``min``, ``max`` and ``n`` over the
  seeds whose run finished.
* **Sample efficiency** (mean agent travel time): the target is ``T = (1 + 10 %) × R`` where ``R`` is
  the best (lowest) across-seed mean of the final mean travel time among the *reference methods*. A
  run's sample efficiency is the number of training episodes — and of agent decisions (``env_steps``)
  and training wall-clock seconds — completed at its first greedy evaluation whose mean travel time is
  ``<= T``. Evaluations happen before the first episode and every ``eval_every`` episodes, so that is the
  resolution. A run that never gets there has ``null``; per method, the statistics cover the seeds that
  reached T and ``reached`` says how many of how many.
* **Reference methods**: by default the learned baselines of the comparison (methods that learn and are
  not RELED variants, i.e. whose name does not start with ``reled``); if there are none, every method
  that is not a RELED variant; if none, all methods. ``--reference a,b`` sets them explicitly.
* **First beats** (learned methods against each method that does not learn): the training episode of a
  run's first greedy evaluation whose mean travel time is strictly below the baseline's across-seed mean
  final mean travel time; per method, the statistics over the seeds that got there and how many did.
* **Wall time**: a run's training wall-clock (all episodes and evaluations, as the runner counts it);
  ``process_s`` adds process start, scenario loading and W&B.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# the agents' mean travel time beside every vehicle's: the background drivers must not pay for the agents' gain
FINAL_METRICS = ("mean_travel_time", "all_vehicles_mean_travel_time", "arrival_rate", "return", "teleports")
HIGHER_IS_BETTER = {"mean_travel_time": False, "all_vehicles_mean_travel_time": False, "arrival_rate": True,
                    "return": True, "teleports": False}  # fmt: skip
TOLERANCE = 0.10
RESULTS_FORMAT = 1

DEFINITIONS = {
    "final": "last greedy evaluation of each run (fixed evaluation seed); per method mean, sample std (ddof=1), "
    "min, max over the seeds that finished",
    "sample_efficiency": "training episodes / agent decisions (env_steps) / training seconds completed at a run's "
    "first greedy evaluation with mean travel time <= (1 + tolerance) x reference value; reference value = best "
    "across-seed mean final mean travel time among the reference methods; null = never reached",
    "reference_methods": "learned baselines (learn, name not starting with 'reled') unless --reference is given; "
    "else non-RELED methods; else all",
    "first_beats": "per learned method and non-learning baseline: training episodes completed at a run's first "
    "greedy evaluation with mean travel time strictly below the baseline's across-seed mean final mean travel "
    "time; null = never",
    "wall_s": "training wall-clock per run (episodes + evaluations); process_s includes start-up and W&B",
}


def evaluation_kind(comparison: dict) -> str:
    """How the runs' evaluations chose actions, as the tables and the report say it: "greedy" (the
    policy's most likely action) or "sampled" (`algorithm.ppo.eval_actions = sample`)."""
    ppo = (((comparison or {}).get("config") or {}).get("algorithm") or {}).get("ppo") or {}
    return "sampled" if ppo.get("eval_actions") == "sample" else "greedy"


def _final(last: dict) -> dict:
    """A run's final metrics; the return does not apply to a run that made no decisions (SUMO's device
    steers its agents), so it is left out rather than counted as a perfect 0."""
    out = {m: _num(last.get(m)) for m in FINAL_METRICS}
    if last.get("decisions") == 0:
        out["return"] = None
    return out


def is_proposed(method: str) -> bool:
    """RELED and its ablations: the methods a comparison measures against the baselines."""
    return method.startswith("reled")


def learns(method: str) -> bool:
    from agents.methods import METHODS

    spec = METHODS.get(method)
    return bool(spec.learns) if spec is not None else True


def _num(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def stats(values) -> dict | None:
    vals = [float(v) for v in values if _num(v) is not None]
    if not vals:
        return None
    a = np.asarray(vals)
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "n": len(a),
    }


def final_row(rows: list[dict]) -> dict:
    """The run's last greedy evaluation (or, if it has none, its last training episode)."""
    for phase in ("eval", "train"):
        for r in reversed(rows):
            if r.get("phase") == phase:
                return r
    return {}


def reference_methods(methods: list[str], override: list[str] | None = None) -> list[str]:
    if override:
        return [m for m in override if m in methods]
    learned = [m for m in methods if learns(m) and not is_proposed(m)]
    if learned:
        return learned
    others = [m for m in methods if not is_proposed(m)]
    return others or list(methods)


def first_within(rows: list[dict], target: float, metric: str = "mean_travel_time") -> dict | None:
    """The first evaluation row with `metric` within the target (<= for lower-is-better metrics)."""
    better_high = HIGHER_IS_BETTER.get(metric, False)
    for r in rows:
        if r.get("phase") != "eval":
            continue
        v = _num(r.get(metric))
        if v is None:
            continue
        if (v >= target) if better_high else (v <= target):
            return {"episode": r.get("episode"), "env_steps": r.get("env_steps"), "wall_s": r.get("wall_s"), "value": v}
    return None


def summarise(
    comparison: dict,
    runs: list[dict],
    rows_by_run: dict[str, list[dict]],
    reference: list[str] | None = None,
    tolerance: float = TOLERANCE,
    metric: str = "mean_travel_time",
) -> dict:
    """results.json: per-run entries (status ok/failed, final metrics, sample efficiency) and per-method
    statistics. `runs`: dicts with name, method, seed, status, error, dir, wall_s, process_s, ...;
    `rows_by_run`: each run's metrics rows."""
    methods = list(comparison["methods"])
    run_entries = []
    for run in runs:
        rows = rows_by_run.get(run["name"], [])
        last = final_row(rows)
        train_rows = [r for r in rows if r.get("phase") == "train"]
        entry = {k: run.get(k) for k in ("name", "method", "seed", "status", "error", "dir", "wandb", "wandb_warning")}
        entry.update(
            episodes=train_rows[-1]["episode"] if train_rows else 0,
            env_steps=train_rows[-1]["env_steps"] if train_rows else 0,
            wall_s=last.get("wall_s") if rows else None,
            process_s=run.get("process_s"),
            final=_final(last) if last else {},
            final_phase=last.get("phase"),
            final_episode=last.get("episode"),
        )
        sps = [r.get("decisions_per_s") for r in train_rows]
        entry["sps"] = (
            float(np.mean([s for s in sps if _num(s) is not None])) if any(_num(s) is not None for s in sps) else None
        )
        run_entries.append(entry)

    ok = [e for e in run_entries if e["status"] == "ok"]
    per_method_final = {m: [e["final"].get(metric) for e in ok if e["method"] == m] for m in methods}
    refs = reference_methods(methods, reference)
    ref_means = {m: stats(per_method_final[m]) for m in refs}
    ref_means = {m: s["mean"] for m, s in ref_means.items() if s is not None}
    ref_block: dict = {
        "methods": refs,
        "metric": metric,
        "tolerance": tolerance,
        "method": None,
        "value": None,
        "target": None,
    }
    if ref_means:
        pick = (max if HIGHER_IS_BETTER.get(metric) else min)(ref_means, key=ref_means.get)
        value = ref_means[pick]
        target = value * (1 - tolerance) if HIGHER_IS_BETTER.get(metric) else value * (1 + tolerance)
        ref_block.update(method=pick, value=value, target=target)
    for e in run_entries:
        e["sample_efficiency"] = None
        if e["status"] == "ok" and ref_block["target"] is not None:
            e["sample_efficiency"] = first_within(rows_by_run.get(e["name"], []), ref_block["target"], metric)

    # when each learned run first evaluates below each baseline's final level (strictly: a clone ties)
    levels = {m: stats(per_method_final[m]) for m in methods if not learns(m)}
    levels = {m: st["mean"] for m, st in levels.items() if st is not None}
    for e in run_entries:
        e["first_beats"] = {}
        if e["status"] == "ok" and learns(e["method"]):
            rows = rows_by_run.get(e["name"], [])
            for b, level in levels.items():
                hit = first_within(rows, float(np.nextafter(level, -np.inf)), metric)
                e["first_beats"][b] = hit["episode"] if hit else None

    per_method = {}
    for m in methods:
        mine = [e for e in run_entries if e["method"] == m]
        good = [e for e in mine if e["status"] == "ok"]
        reached = [e["sample_efficiency"] for e in good if e["sample_efficiency"]]
        per_method[m] = {
            "learns": learns(m),
            "runs": len(mine),
            "runs_ok": len(good),
            "runs_failed": len(mine) - len(good),
            "final": {k: stats([e["final"].get(k) for e in good]) for k in FINAL_METRICS},
            "sample_efficiency": {
                "episodes": stats([r["episode"] for r in reached]),
                "env_steps": stats([r["env_steps"] for r in reached]),
                "wall_s": stats([r["wall_s"] for r in reached]),
                "reached": len(reached),
                "of": len(good),
            },
            "first_beats": {
                b: {
                    "episodes": stats([e["first_beats"][b] for e in good if e["first_beats"].get(b) is not None]),
                    "reached": sum(e["first_beats"].get(b) is not None for e in good),
                    "of": len(good),
                    "level": level,
                }
                for b, level in levels.items()
            }
            if learns(m)
            else {},
            "wall_s": stats([e["wall_s"] for e in good]),
            "process_s": stats([e["process_s"] for e in good]),
            "env_steps": stats([e["env_steps"] for e in good]),
            "sps": stats([e["sps"] for e in good]),
        }
    return {
        "format": RESULTS_FORMAT,
        "comparison": comparison,
        "metrics": list(FINAL_METRICS),
        "higher_is_better": HIGHER_IS_BETTER,
        "definitions": DEFINITIONS,
        "reference": ref_block,
        "methods": per_method,
        "runs": run_entries,
    }


def read_rows(run_dir: str | Path) -> list[dict]:
    from agents.runner import read_metrics

    return read_metrics(run_dir)
