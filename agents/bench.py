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
