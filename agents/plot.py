"""Learning curves from metrics.jsonl -> PNG (matplotlib, Agg; no display needed).

    python -m agents.plot OUT.png RUN_DIR [RUN_DIR ...] [--baseline RUN_DIR ...] [--metric mean_travel_time] [--x episode]

Learners: training episodes as a faint line with a rolling mean, greedy evaluations as markers.
Baselines (non-learning runs): their mean over all training episodes as a dashed horizontal line, and
their evaluation value (same fixed seed as the learners' evaluations) as a dotted one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agents.runner import read_metrics


def _label(run_dir: Path) -> str:
    try:
        cfg = json.loads((run_dir / "config.json").read_text())["config"]
        return f"{cfg['algorithm']['method']} (seed {cfg['run']['seed']})"
    except (OSError, KeyError, ValueError):
        return run_dir.name


def rolling(y: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(y, np.nan, dtype=float)
    for i in range(len(y)):
        w = y[max(0, i - k + 1) : i + 1]
        w = w[np.isfinite(w)]
        out[i] = w.mean() if len(w) else np.nan
    return out


def plot_runs(
    out_png: str | Path,
    runs: list[str | Path],
    baselines: list[str | Path] = (),
    metric: str = "mean_travel_time",
    x: str = "episode",
    title: str | None = None,
    window: int = 5,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(map(Path, runs)):
        c = colors[i % len(colors)]
        rows = read_metrics(d)
        tr = [r for r in rows if r.get("phase") == "train"]
        ev = [r for r in rows if r.get("phase") == "eval"]
        if tr:
            xs = np.array([r[x] for r in tr], dtype=float)
            ys = np.array([np.nan if r.get(metric) is None else r[metric] for r in tr], dtype=float)
            ax.plot(xs, ys, color=c, alpha=0.25, lw=1)
            ax.plot(xs, rolling(ys, window), color=c, lw=1.8, label=f"{_label(d)} train ({window}-ep. mean)")
        if ev:
            ax.plot(
                [r[x] for r in ev],
                [r.get(metric) for r in ev],
                "o--",
                color=c,
                ms=4,
                lw=1,
                label=f"{_label(d)} greedy eval",
            )
    for j, d in enumerate(map(Path, baselines)):
        c = colors[(len(runs) + j) % len(colors)]
        rows = read_metrics(d)
        tr = [r[metric] for r in rows if r.get("phase") == "train" and r.get(metric) is not None]
        ev = [r[metric] for r in rows if r.get("phase") == "eval" and r.get(metric) is not None]
        if tr:
            ax.axhline(float(np.mean(tr)), color=c, ls="--", lw=1.2, label=f"{_label(d)} train mean")
        if ev:
            ax.axhline(ev[-1], color=c, ls=":", lw=1.2, label=f"{_label(d)} eval")
    ax.set_xlabel({"episode": "training episode", "env_steps": "agent decisions", "wall_s": "wall-clock s"}.get(x, x))
    ax.set_ylabel(metric.replace("_", " ") + (" (s)" if metric.endswith("time") else ""))
    if metric.endswith("travel_time"):
        ax.set_yscale("log")
    ax.set_title(title or f"{metric.replace('_', ' ')} vs {x}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_png")
    p.add_argument("runs", nargs="+")
    p.add_argument("--baseline", action="append", default=[])
    p.add_argument("--metric", default="mean_travel_time")
    p.add_argument("--x", default="episode")
    p.add_argument("--title")
    a = p.parse_args(argv)
    print(plot_runs(a.out_png, a.runs, a.baseline, a.metric, a.x, a.title))


if __name__ == "__main__":
    main()
