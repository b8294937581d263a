"""Training throughput and time split of finished runs, read from their metrics.jsonl.

    python -m agents.bench RUN_DIR [RUN_DIR ...]

Per run (training episodes only, updates included): agent decisions per second of wall time, and the
share of wall time spent in SUMO (every call into the simulation), the env's own Python, torch
inference, torch updates, and the rest (runner + learner Python). Also the final-evaluation figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agents.runner import read_metrics

PARTS = (
    ("sumo", "t_sumo_s"),
    ("env python", "t_env_python_s"),
    ("torch inference", "t_torch_infer_s"),
    ("torch update", "t_torch_update_s"),
    ("other python", "t_python_s"),
)


def summarise(run_dir: str | Path, skip_first: int = 0) -> dict:
    """Throughput and time split over the training episodes after the first `skip_first`."""
    rows = read_metrics(run_dir)
    train = [r for r in rows if r.get("phase") == "train" and not r.get("sumo_fault")][skip_first:]
    evals = [r for r in rows if r.get("phase") == "eval"]
    wall = sum(r["episode_wall_s"] for r in train)
    out = {
        "run": str(run_dir),
        "episodes": len(train),
        "decisions": sum(r["decisions"] for r in train),
        "wall_s": wall,
        "decisions_per_s": sum(r["decisions"] for r in train) / wall if wall else float("nan"),
        "s_per_episode": wall / len(train) if train else float("nan"),
        "share": {
            name: (sum(r.get(key) or 0.0 for r in train) / wall if wall else float("nan")) for name, key in PARTS
        },
    }
    if evals:
        out["final_eval"] = {k: evals[-1].get(k) for k in ("episode", "mean_travel_time", "arrival_rate", "return")}
    return out


def format_summary(s: dict) -> str:
    share = "  ".join(f"{k} {v:.0%}" for k, v in s["share"].items())
    line = (
        f"{s['run']}: {s['episodes']} train episodes, {s['decisions']} decisions, {s['wall_s']:.0f} s -> "
        f"{s['decisions_per_s']:.0f} decisions/s ({s['s_per_episode']:.2f} s/episode); {share}"
    )
    if "final_eval" in s:
        e = s["final_eval"]
        line += f"; eval@{e['episode']}: travel {e['mean_travel_time']:.1f} s, arrived {e['arrival_rate']:.2f}"
    return line


if __name__ == "__main__":
    for d in sys.argv[1:]:
        print(format_summary(summarise(d)))


# ------------------------------------------------------------------------------------ throughput
def throughput(scenario: str, agents: int, workers: list[int], *, method: str = "ippo", iterations: int = 4,
               seed: int = 0, horizon: float | None = None, base=None) -> list[dict]:  # fmt: skip
    """`cosim bench throughput`: the same training (method, scenario, agents, seed; `base` the rest of the
    tree, from --config and --set) with each worker count, `iterations` x workers episodes each, no
    evaluation; the first iteration is a warm-up and is not measured. decisions_per_s counts every
    decision over the training wall time, PPO updates included (worker start-up and warm-up excluded,
    together reported as startup_s); speedup is over one worker (today's in-process runner); the shares
    split the learner's wall time into SUMO, the env's Python, inference, update, transfer (weights out,
    samples back, waiting for the slowest worker) and the rest (runner Python); with `run.policy_lag` 1 the
    update runs beside the workers' episodes, so its share is outside that sum. Peak memory (MiB): the
    learner process's over the run (with one worker it runs the env too) and each worker's. worker_busy
    (several workers): the share of the workers' time spent in episodes, the rest idle (waiting for the
    update, for the slower worker, for transfers)."""
    import dataclasses
    import tempfile
    import time

    from agents.config import TrainConfig
    from agents.episode import peak_rss_mb, reset_peak_rss
    from agents.runner import train

    base = base or TrainConfig()
    rows = []
    first = None
    for w in workers:
        with tempfile.TemporaryDirectory(prefix="cosim-throughput-") as tmp:
            cfg = dataclasses.replace(
                base,
                scenario=dataclasses.replace(base.scenario, name=scenario),
                env=dataclasses.replace(base.env, n_agents=agents, horizon=horizon if horizon else base.env.horizon),
                algorithm=dataclasses.replace(base.algorithm, method=method),
                run=dataclasses.replace(
                    base.run,
                    seed=seed,
                    episodes=w * iterations,
                    eval_every=0,
                    rollout_workers=w,
                    policy_lag=base.run.policy_lag if w > 1 else 0,
                ),  # in-process: no lag
            )
            reset_peak_rss()
            t0 = time.perf_counter()
            res = train(cfg, Path(tmp) / "run", progress=False)
            total = time.perf_counter() - t0
            learner_mb = peak_rss_mb()
            metrics = read_metrics(Path(tmp) / "run")
        row = _split(metrics, w)
        per_worker: dict[int, float] = {}
        for r in metrics:
            if r.get("phase") == "train" and "peak_rss_mb" in r:
                k = int(r.get("worker", 0))
                per_worker[k] = max(per_worker.get(k, 0.0), float(r["peak_rss_mb"]))
        row.update(scenario=scenario, method=method, agents=agents, workers=w, episodes=res["episodes"],
                   policy_lag=cfg.run.policy_lag,
                   startup_s=round(total - row["wall_s"], 3), learner_peak_mb=learner_mb,
                   worker_peak_mb=[per_worker[k] for k in sorted(per_worker)] if w > 1 else [])  # fmt: skip
        first = first or row["decisions_per_s"]
        row["speedup"] = round(row["decisions_per_s"] / first, 3)
        row["efficiency"] = round(row["speedup"] / w, 3)
        rows.append(row)
    return rows


def _split(metrics: list[dict], workers: int) -> dict:
    """The time split after the first iteration (a warm-up: SUMO starts, caches fill, on every worker)."""
    train = [r for r in metrics if r.get("phase") == "train"][workers:]
    updates = [r for r in metrics if r.get("phase") == "update"][1:]
    decisions = sum(int(r.get("decisions") or 0) for r in train)
    busy = None
    if workers == 1:  # in-process: episodes back to back, each with its update
        wall = sum(r["episode_wall_s"] for r in train)
        parts = {
            "sumo": sum(r.get("t_sumo_s") or 0.0 for r in train),
            "env_python": sum(r.get("t_env_python_s") or 0.0 for r in train),
            "inference": sum(r.get("t_torch_infer_s") or 0.0 for r in train),
            "update": sum(r.get("t_torch_update_s") or 0.0 for r in train),
            "transfer": 0.0,
        }
    else:  # per iteration: the workers' episodes side by side, then one update in the learner
        wall = sum(u["t_rollout_s"] + u["t_update_s"] for u in updates)
        per_worker = 1.0 / workers  # the workers' own time split, averaged over them
        parts = {
            "sumo": per_worker * sum(r.get("t_sumo_s") or 0.0 for r in train),
            "env_python": per_worker * sum(r.get("t_env_python_s") or 0.0 for r in train),
            "inference": per_worker * sum(r.get("t_torch_infer_s") or 0.0 for r in train),
            "update": sum(u["t_update_s"] for u in updates),
        }
        busy = per_worker * sum(r.get("episode_wall_s") or 0.0 for r in train)
        parts["transfer"] = max(0.0, sum(u["t_rollout_s"] for u in updates) - busy)  # pickling, pipes, waiting
    share = {k: round(v / wall, 4) if wall else float("nan") for k, v in parts.items()}
    overlapped = any(u.get("policy_lag") for u in updates)  # the update ran beside the workers' episodes
    share["other"] = round(1.0 - sum(v for k, v in share.items() if not (overlapped and k == "update")), 4)
    # the share of the workers' time spent running episodes: what a faster or slower host leaves alone
    # (its decisions/s move with it), so what tells the runner's idle time apart from the machine's speed
    worker_busy = round(busy / wall, 4) if busy is not None and wall else None
    return {"decisions": decisions, "wall_s": round(wall, 3), "worker_busy": worker_busy,
            "decisions_per_s": round(decisions / wall, 1) if wall else float("nan"), "share": share}  # fmt: skip
