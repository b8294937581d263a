"""An online W&B Report of a comparison, when the user is logged in (``WANDB_API_KEY`` set and
``WANDB_MODE=online``). Needs the optional package ``wandb-workspaces``; without it, or offline, or on
any error, nothing happens (the local report.html has the same numbers). Saving cannot be exercised by
the tests (no network, no W&B account); `build_report` (the Report object, not saved) can.
"""

from __future__ import annotations

import os
import sys

from evaluation.tracking import DEFAULT_PROJECT, call_with_timeout, logged_in


def build_report(results: dict, entity: str | None = None, project: str | None = None):
    """The wandb-workspaces Report of a comparison (not saved): a results table, learning curves of
    the comparison's runs (selected by their ``compare-<id>`` tag, grouped by method = job type, mean
    and min–max across seeds) and the formalisation note."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr as wexpr

    comp = results["comparison"]
    project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
    entity = entity or os.environ.get("WANDB_ENTITY")
    tag = f"compare-{results.get('id')}"
    rs_kwargs = {"entity": entity} if entity else {}
    runset = wr.Runset(project=project, name=f"comparison {results.get('id')}", filters=[wexpr.Tags().isin([tag])],
                       groupby=["JobType"], **rs_kwargs)  # fmt: skip

    def line(y: str, x: str, title: str):
        return wr.LinePlot(title=title, x=x, y=[y], groupby_aggfunc="mean", groupby_rangefunc="minmax")

    panels = [
        line("train/mean_travel_time", "env_steps", "training: mean travel time vs decisions"),
        line("train/mean_travel_time", "wall_s", "training: mean travel time vs wall-clock"),
        line("eval/mean_travel_time", "episode", "greedy evaluation: mean travel time"),
        line("train/arrival_rate", "env_steps", "training: arrival rate"),
        line("sps", "env_steps", "decisions per second"),
    ]
    rows = []
    for m, d in results["methods"].items():
        s = d["final"]["mean_travel_time"]
        cell = f"{s['mean']:.1f} ± {s['std']:.1f}" if s else "-"
        rows.append(f"| {m} | {cell} | {d['runs_ok']}/{d['runs']} |")
    table = "| method | final mean travel time s (mean ± std over seeds) | runs ok |\n|---|---|---|\n" + "\n".join(rows)
    kwargs = {"project": project, "title": f"Comparison on {comp['scenario']} ({results.get('id')})"[:128],
              "description": f"{', '.join(comp['methods'])}; {comp['seeds']} seeds; {comp['episodes']} episodes"}  # fmt: skip
    if entity:
        kwargs["entity"] = entity
    report = wr.Report(**kwargs)
    report.blocks = [
        wr.MarkdownBlock(text=table),
        wr.PanelGrid(runsets=[runset], panels=panels),
        wr.MarkdownBlock(
            text="The concrete SED bound, RELED loss and metrics are this project's formalisation "
            "(the paper, arXiv 2511.19368, is public only as an abstract)."
        ),
    ]
    return report


def online_report(results: dict, timeout: float = 120.0) -> str | None:
    """Create and save the report; returns its URL, or None when skipped or failed (one warning line)."""
    if not logged_in():
        return None
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        return None

    def save() -> str:
        report = build_report(results)
        report.save()
        return report.url

    try:
        return call_with_timeout(save, timeout, "report")
    except Exception as exc:  # noqa: BLE001 - the local report stands on its own
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"warning: the online W&B report was not created ({type(exc).__name__}: {first})", file=sys.stderr)
        return None
