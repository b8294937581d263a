"""The comparison report: one self-contained HTML file (inline PNG images, inline CSS, no scripts, no
fonts or anything else fetched from the network), readable offline in any browser.

Contents: the results table (mean ± std over seeds, min–max), a bar chart of the final travel time,
learning curves against agent decisions and against wall-clock (mean across seeds, band = min–max
across seeds), greedy evaluations against episodes, the city map with example routes (free-flow
shortest path, the LLM expert's plan when there are demonstrations, and each method's greedy route),
the SED rounds (bound and travel time per round) when the comparison used demonstrations, the per-run
table with failures, and what is the paper's and what is this project's formalisation.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from cosim.demos import DemosError, read_plans, read_rounds
from evaluation.results import FINAL_METRICS, HIGHER_IS_BETTER, evaluation_kind, read_rows

LABELS = {
    "mean_travel_time": "mean travel time (s)",
    "all_vehicles_mean_travel_time": "all vehicles' mean travel time (s)",
    "arrival_rate": "arrival rate",
    "return": "return",
    "teleports": "teleports",
}
DIGITS = {"mean_travel_time": 1, "all_vehicles_mean_travel_time": 1, "arrival_rate": 2, "return": 2, "teleports": 1}

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d2329;margin:0;background:#f6f7f9;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;margin:.2em 0 .1em}h2{font-size:1.3em;margin-top:1.8em;border-bottom:2px solid #e3e6ea;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
.sub{color:#56606b;margin:0 0 1em}.note{color:#56606b;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em;width:100%}
th,td{padding:6px 9px;border-bottom:1px solid #e3e6ea;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600}th:first-child,td:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
td.best{font-weight:700;color:#0b6e3a}.range{display:block;color:#7a848e;font-size:.82em}
.failed{color:#b3261e;font-weight:600}.ok{color:#0b6e3a}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{color:#56606b;font-size:.88em;margin-top:.4em}
.banner{background:#fdecea;border:1px solid #f5c2bd;padding:8px 12px;border-radius:4px;margin:1em 0}
.box{background:#f4f7fb;border:1px solid #dbe4ef;padding:10px 14px;border-radius:4px}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px;font-size:.9em}
.err{font-family:monospace;font-size:.82em;color:#b3261e;text-align:left;max-width:420px;word-break:break-word}
"""


# ------------------------------------------------------------------------------------------- helpers
def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt_stat(s: dict | None, digits: int = 1) -> str:
    if not s:
        return "-"
    if s["n"] <= 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _cell(s: dict | None, digits: int, best: bool = False, extra: str = "") -> str:
    if not s:  # not measured, or not applicable (the return of a method that makes no decisions)
        return "<td>—</td>"
    rng = f"<span class='range'>{s['min']:.{digits}f} – {s['max']:.{digits}f} (n={s['n']})</span>" if s["n"] > 1 else ""
    cls = " class='best'" if best else ""
    return f"<td{cls}>{esc(fmt_stat(s, digits))}{esc(extra)}{rng}</td>"


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def make(**kw):
        fig = Figure(**kw)
        FigureCanvasAgg(fig)
        return fig

    return make


def png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(uri: str, alt: str, caption: str) -> str:
    return f"<figure><img src='{uri}' alt='{esc(alt)}'><figcaption>{caption}</figcaption></figure>"


def _colors(methods: list[str]) -> dict[str, str]:
    import matplotlib

    cycle = list(matplotlib.colormaps["tab10"].colors)
    from matplotlib.colors import to_hex

    return {m: to_hex(cycle[i % len(cycle)]) for i, m in enumerate(methods)}


def rolling(y: np.ndarray, k: int) -> np.ndarray:
    from agents.plot import rolling  # the learning-curve plots smooth the same way

    return rolling(y, k)


def _series(rows: list[dict], x: str, metric: str, phase: str = "train") -> tuple[np.ndarray, np.ndarray]:
    sel = [r for r in rows if r.get("phase") == phase and r.get(x) is not None]
    xs = np.array([float(r[x]) for r in sel], dtype=float)
    ys = np.array([np.nan if r.get(metric) is None else float(r[metric]) for r in sel], dtype=float)
    return xs, ys


def aggregate_curves(per_seed: list[tuple[np.ndarray, np.ndarray]], points: int = 120):
    """Interpolate each seed's curve onto a common x grid (the range all seeds cover, or their union
    when they do not overlap); returns (grid, mean, min, max) or None."""
    curves = [(x, y) for x, y in per_seed if len(x) >= 2 and np.all(np.diff(x) > 0) and np.isfinite(y).any()]
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if hi <= lo:
        lo, hi = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
    grid = np.linspace(lo, hi, points)
    ys = np.array([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return grid, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


# ------------------------------------------------------------------------------------------- plots
def learning_curves(results: dict, rows: dict[str, list[dict]], colors: dict[str, str]) -> str | None:
    methods = list(results["comparison"]["methods"])
    ok = [r for r in results["runs"] if r["status"] == "ok"]
    if not ok:
        return None
    episodes = int(results["comparison"]["episodes"])
    window = max(1, min(10, episodes // 5))
    fig = _figure()(figsize=(12, 8.6), dpi=100)
    axes = fig.subplots(2, 2)
    panels = [
        (
            axes[0, 0],
            "env_steps",
            "mean_travel_time",
            "agent decisions (env steps)",
            "training: mean travel time vs decisions",
        ),
        (
            axes[0, 1],
            "wall_s",
            "mean_travel_time",
            "wall-clock s (training)",
            "training: mean travel time vs wall-clock",
        ),
        (axes[1, 1], "env_steps", "arrival_rate", "agent decisions (env steps)", "training: arrival rate vs decisions"),
    ]
    all_mtt: list[float] = []
    for ax, x, metric, xlabel, title in panels:
        flat: list[tuple[str, float, float, float]] = []
        for m in methods:
            runs = [r for r in ok if r["method"] == m]
            per_seed = []
            for r in runs:
                xs, ys = _series(rows.get(r["name"], []), x, metric)
                if len(xs):
                    per_seed.append((xs, rolling(ys, window)))
            agg = aggregate_curves(per_seed)
            if agg is not None and results["methods"][m]["learns"]:
                grid, mean, lo, hi = agg
                ax.plot(grid, mean, color=colors[m], lw=2, label=m)
                ax.fill_between(grid, lo, hi, color=colors[m], alpha=0.18, lw=0)
                if metric == "mean_travel_time":
                    all_mtt.extend(mean[np.isfinite(mean)].tolist())
            else:  # non-learning (or no usable x): its mean over all training episodes, as a level
                vals = [v for _, ys in per_seed for v in ys if np.isfinite(v)]
                raw = [r.get(metric) for run in runs for r in rows.get(run["name"], [])
                       if r.get("phase") == "train" and isinstance(r.get(metric), (int, float))]  # fmt: skip
                vals = raw or vals
                if vals:
                    seed_means = [np.nanmean([r.get(metric) for r in rows.get(run["name"], []) if r.get("phase") == "train"
                                              and isinstance(r.get(metric), (int, float))] or [np.nan]) for run in runs]  # fmt: skip
                    flat.append((m, float(np.mean(vals)), float(np.nanmin(seed_means)), float(np.nanmax(seed_means))))
        for m, mean, lo, hi in flat:
            ax.axhline(mean, color=colors[m], ls="--", lw=1.6, label=f"{m} (no learning: mean)")
            if hi > lo:
                ax.axhspan(lo, hi, color=colors[m], alpha=0.08, lw=0)
            if metric == "mean_travel_time":
                all_mtt.append(mean)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    # greedy evaluations vs episodes
    ax = axes[1, 0]
    for m in methods:
        runs = [r for r in ok if r["method"] == m]
        by_ep: dict[int, list[float]] = {}
        for r in runs:
            for row in rows.get(r["name"], []):
                if row.get("phase") == "eval" and isinstance(row.get("mean_travel_time"), (int, float)):
                    by_ep.setdefault(int(row["episode"]), []).append(float(row["mean_travel_time"]))
        if by_ep:
            eps = sorted(by_ep)
            mean = np.array([np.mean(by_ep[e]) for e in eps])
            sd = np.array([np.std(by_ep[e], ddof=1) if len(by_ep[e]) > 1 else 0.0 for e in eps])
            ax.errorbar(eps, mean, yerr=sd, color=colors[m], marker="o", ms=4, lw=1.6, capsize=3, label=m)
            all_mtt.extend(mean.tolist())
    ax.set_xlabel("training episode")
    ax.set_ylabel(LABELS["mean_travel_time"])
    ax.set_title(f"{evaluation_kind(results['comparison'])} evaluation (fixed seed): mean travel time", fontsize=11)
    ax.grid(alpha=0.3)
    finite = [v for v in all_mtt if v and math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 4:
        for a in (axes[0, 0], axes[0, 1], axes[1, 0]):
            a.set_yscale("log")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[1, 0].get_legend_handles_labels()
    for h, lab in zip(h2, l2):
        if lab not in labels and f"{lab} (no learning: mean)" not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return png_data_uri(fig)


def final_bars(results: dict, colors: dict[str, str]) -> str | None:
    methods = [m for m in results["comparison"]["methods"] if results["methods"][m]["final"]["mean_travel_time"]]
    if not methods:
        return None
    fig = _figure()(figsize=(max(5, 1.2 * len(methods) + 2), 3.6), dpi=100)
    ax = fig.subplots()
    for i, m in enumerate(methods):
        s = results["methods"][m]["final"]["mean_travel_time"]
        ax.bar(i, s["mean"], yerr=s["std"], color=colors[m], alpha=0.85, capsize=4)
        pts = [r["final"].get("mean_travel_time") for r in results["runs"] if r["method"] == m and r["status"] == "ok"]
        pts = [p for p in pts if p is not None]
        ax.scatter([i] * len(pts), pts, color="black", s=12, zorder=3)
    ref = results.get("reference") or {}
    if ref.get("target"):
        ax.axhline(
            ref["target"], color="#444", ls=":", lw=1.2, label=f"sample-efficiency target ({ref['target']:.1f} s)"
        )
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xticks(range(len(methods)), methods, rotation=20 if len(methods) > 4 else 0)
    ax.set_ylabel(LABELS["mean_travel_time"])
    ax.set_title(
        f"final {evaluation_kind(results['comparison'])} evaluation: mean ± std over seeds (dots: seeds)", fontsize=10
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return png_data_uri(fig)


def _route_sources(results: dict, scenario) -> tuple[dict[str, dict[str, list[str]]], dict]:
    """label -> {agent: edges}: free-flow shortest, the LLM expert (demos), each method's greedy route."""
    g = scenario.graph
    sources: dict[str, dict[str, list[str]]] = {}
    trips = {}
    for m in results["comparison"]["methods"]:
        for r in results["runs"]:
            if r["method"] != m or r["status"] != "ok":
                continue
            doc = None
            try:
                doc = json.loads((Path(r["dir"]) / "routes.json").read_text())
            except (OSError, ValueError):
                continue
            if doc and doc.get("routes"):
                sources[m] = doc["routes"]
                break
    agents = sorted({a for routes in sources.values() for a in routes})
    n = results["comparison"].get("agents")
    try:
        trips = {t.id: t for t in scenario.trips(n)}
    except Exception:  # noqa: BLE001
        trips = {}
    shortest = {}
    for a in agents or list(trips)[:20]:
        t = trips.get(a)
        if t is not None and t.origin in g.index and t.destination in g.index:
            shortest[a] = [g.edges[i] for i in g.path(g.index[t.origin], g.index[t.destination])]
    demos = results.get("demos") or {}
    expert = {}
    if demos.get("dir"):
        try:
            expert = {a: p.edges for a, p in read_plans(demos["dir"]).items()}
        except DemosError:  # the map is still useful without the expert's routes
            expert = {}
    out = {"free-flow shortest": shortest}
    if expert:
        out["LLM expert (SED plan)"] = expert
    out.update(sources)
    return out, trips


def route_map(results: dict, colors: dict[str, str], max_agents: int = 3) -> tuple[str | None, str]:
    """The city's road network with a few agents' routes; returns (data URI, caption)."""
    from scenarios.scenario import Scenario

    try:
        sc = Scenario.load(results["scenario_folder"])
        import sumolib

        net = sumolib.net.readNet(str(sc.net_file))
    except Exception as exc:  # noqa: BLE001 - the report is still useful without a map
        return None, f"(no map: {type(exc).__name__}: {esc(str(exc)[:120])})"
    from matplotlib.collections import LineCollection

    sources, trips = _route_sources(results, sc)
    shapes = {e.getID(): [(p[0], p[1]) for p in e.getShape()] for e in net.getEdges() if not e.isSpecial()}
    # agents whose routes differ most between the sources (then: longer free-flow trips first)
    candidates = [a for a in sources["free-flow shortest"] if all(a in s for s in sources.values())]
    if not candidates:
        candidates = list(sources["free-flow shortest"])

    def score(a):
        # prefer agents that arrived in every source (a route that stops short: still driving at the horizon),
        # then routes that differ most, then longer trips
        t = trips.get(a)
        complete = t is not None and all(s[a][-1] == t.destination for s in sources.values() if a in s and s[a])
        distinct = {tuple(s[a]) for s in sources.values() if a in s}
        return (complete, len(distinct), len(sources["free-flow shortest"].get(a, [])))

    chosen = sorted(candidates, key=score, reverse=True)[:max_agents]
    panels = max(1, len(chosen))
    fig = _figure()(figsize=(4.6 * panels, 5.0), dpi=100)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    segs = list(shapes.values())
    xs = [x for s in segs for x, _ in s]
    ys = [y for s in segs for _, y in s]
    palette = {"free-flow shortest": "#222222", "LLM expert (SED plan)": "#e377c2", **colors}
    handles = {}
    for ax, a in zip(axes, chosen or [None]):
        ax.add_collection(LineCollection(segs, colors="#c9ced4", linewidths=0.7))
        if a is None:
            ax.set_xlim(min(xs), max(xs))
            ax.set_ylim(min(ys), max(ys))
        else:
            labels = [lab for lab in sources if a in sources[lab]]
            width = 2.0 + 1.2 * len(labels)  # methods: narrower one after another, on the wide free-flow band
            pts = []
            for lab in labels:
                # one polyline through the edges' shapes (junction interiors are not edges: join the ends)
                line = [p for e in sources[lab][a] if e in shapes for p in shapes[e]]
                if len(line) < 2:
                    continue
                pts.extend(line)
                lx, ly = zip(*line)
                ff = lab == "free-flow shortest"
                (h,) = ax.plot(lx, ly, color=palette.get(lab, "#888"), lw=width + 5 if ff else width,
                               alpha=0.28 if ff else 0.85, solid_capstyle="round", solid_joinstyle="round",
                               zorder=2 if ff else 3)  # fmt: skip
                handles.setdefault(lab, h)
                if not ff:
                    width = max(1.5, width - 1.2)
            t = trips.get(a)
            if t is not None and t.origin in shapes and t.destination in shapes:
                o, d = shapes[t.origin][0], shapes[t.destination][-1]
                ax.scatter(*o, s=60, c="#2ca02c", zorder=5, edgecolors="white")
                ax.scatter(*d, s=60, c="#d62728", marker="s", zorder=5, edgecolors="white")
            if pts:
                px, py = zip(*pts)
                span = max(max(px) - min(px), max(py) - min(py), 150.0)
                cx, cy = (max(px) + min(px)) / 2, (max(py) + min(py)) / 2
                half = 0.65 * span
                ax.set_xlim(cx - half, cx + half)
                ax.set_ylim(cy - half, cy + half)
            ax.set_title(a if str(a).startswith("agent") else f"agent {a}", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(5, len(handles)),
            fontsize=9,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    caption = (
        f"{esc(sc.name)}: the simulated road network (grey) and the routes of {len(chosen)} agent(s) (preferring "
        "agents that arrived and whose routes differ between methods) in the greedy evaluation episode of each "
        "method's first seed (fixed evaluation seed); wide grey band: the free-flow shortest path; coinciding routes "
        "overlap, later methods drawn narrower on top"
        + ("; pink: the LLM expert's kept SED plan" if "LLM expert (SED plan)" in sources else "")
        + ". Green dot: origin, red square: destination; a route that stops short of the destination had not "
        "arrived by the horizon. Routes are reconstructed from the edges the environment "
        "saw, joined by free-flow paths (which the vehicle follows between decisions). Map data © OpenStreetMap "
        "contributors, ODbL."
    )
    return png_data_uri(fig), caption


def sed_section(results: dict) -> str:
    demos = results.get("demos")
    if not demos:
        return ""
    rounds = []
    if demos.get("dir"):
        try:
            rounds = read_rounds(demos["dir"])
        except DemosError:  # the section still gives the summary's numbers
            pass
    parts = ["<h2 id='sed'>LLM expert demonstrations (SED rounds)</h2>"]
    parts.append(
        "<p>The demonstrations were produced once for this comparison and handed to the methods that use them. "
        f"LLM: <code>{esc(demos.get('llm'))}</code>; {esc(demos.get('agents'))} agents in {esc(demos.get('subsets'))} "
        f"interaction subsets; {esc(demos.get('rounds'))} round(s); accepted round: "
        f"{esc(demos.get('accepted_round') or 'none (the best round was kept)')}; kept round: {esc(demos.get('best_round'))}; "
        f"mean travel time when executing the kept plans: {esc(_f(demos.get('demo_mean_travel_time'), 1))} s"
        + (
            f" (random candidate choice: {esc(_f(demos.get('random_choice_mean_travel_time'), 1))} s)"
            if demos.get("random_choice_mean_travel_time") is not None
            else ""
        )
        + f"; {esc(demos.get('llm_calls'))} LLM calls, {esc(demos.get('invalid_answers'))} invalid answers, "
        f"{esc(demos.get('repaired'))} repaired.</p>"
    )
    if rounds:
        fig = _figure()(figsize=(7.5, 3.4), dpi=100)
        ax = fig.subplots()
        r_idx = [r["round"] for r in rounds]
        mx = [max(r["bound"].values()) if r.get("bound") else np.nan for r in rounds]
        mn = [float(np.mean(list(r["bound"].values()))) if r.get("bound") else np.nan for r in rounds]
        ax.plot(r_idx, mx, "o-", color="#d62728", label="max_i B_i")
        ax.plot(r_idx, mn, "s--", color="#ff9896", label="mean_i B_i")
        if demos.get("threshold") is not None:
            ax.axhline(demos["threshold"], color="#555", ls=":", lw=1.2, label=f"threshold {demos['threshold']}")
        ax.set_xlabel("SED round")
        ax.set_ylabel("bound B_i (min)")
        ax.set_xticks(r_idx)
        ax2 = ax.twinx()
        ax2.plot(r_idx, [r.get("mean_travel_time") for r in rounds], "^-", color="#1f77b4", label="mean travel time")
        ax2.set_ylabel("mean travel time (s)", color="#1f77b4")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        parts.append(_img(png_data_uri(fig), "SED rounds", "Per SED round: the largest and the mean per-agent bound "
                          "B_i = V_i + c·D_i (minutes; this project's formalisation) and the agents' mean travel time "
                          "over the round's rollouts."))  # fmt: skip
        parts.append("<table><tr><th>round</th><th>max B_i</th><th>mean B_i</th><th>mean travel time s</th>"
                     "<th>valid subsets</th><th>invalid answers</th><th>repaired</th><th>accepted</th>"
                     "<th>LLM calls</th><th>LLM s</th></tr>")  # fmt: skip
        for r, a, b in zip(rounds, mx, mn):
            parts.append(
                f"<tr><td>{esc(r['round'])}</td><td>{_f(a, 3)}</td><td>{_f(b, 3)}</td><td>{_f(r.get('mean_travel_time'), 1)}</td>"
                f"<td>{esc(r.get('valid_subsets'))}</td><td>{esc(r.get('invalid_answers'))}</td><td>{esc(r.get('repaired'))}</td>"
                f"<td>{'yes' if r.get('accepted') else 'no'}</td><td>{esc(r.get('llm_calls'))}</td><td>{_f(r.get('llm_seconds'), 1)}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)


def _f(v, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-"


# ------------------------------------------------------------------------------------------- tables
def results_table(results: dict) -> str:
    methods = list(results["comparison"]["methods"])
    per = results["methods"]
    best: dict[str, str | None] = {}
    for k in FINAL_METRICS:
        vals = {m: per[m]["final"][k]["mean"] for m in methods if per[m]["final"].get(k)}
        if len(vals) > 1 and len(set(vals.values())) > 1:
            best[k] = (max if HIGHER_IS_BETTER[k] else min)(vals, key=vals.get)
    head = "".join(f"<th>{esc(LABELS[k])}</th>" for k in FINAL_METRICS)
    rows = [f"<table id='results'><tr><th>method</th><th>runs ok</th>{head}<th>episodes to target</th>"
            "<th>decisions to target</th><th>training wall s</th><th>decisions / s</th></tr>"]  # fmt: skip
    for m in methods:
        d = per[m]
        ok = f"{d['runs_ok']}/{d['runs']}"
        cls = "failed" if d["runs_failed"] else "ok"
        cells = "".join(_cell(d["final"].get(k), DIGITS[k], best.get(k) == m) for k in FINAL_METRICS)
        se = d["sample_efficiency"]
        reached = f" ({se['reached']}/{se['of']} seeds)" if se["of"] else ""
        se_ep = _cell(se["episodes"], 1, extra=reached) if se["episodes"] else f"<td>not reached{esc(reached)}</td>"
        se_st = _cell(se["env_steps"], 0) if se["env_steps"] else "<td>-</td>"
        tag = "" if d["learns"] else " <span class='note'>(no learning)</span>"
        rows.append(f"<tr><td>{esc(m)}{tag}</td><td class='{cls}'>{ok}</td>{cells}{se_ep}{se_st}"
                    f"{_cell(d['wall_s'], 1)}{_cell(d['sps'], 0)}</tr>")  # fmt: skip
    rows.append("</table>")
    return "\n".join(rows)


def first_beats_table(results: dict) -> str:
    """When each learned method first beat each non-learning baseline (empty when either kind is missing)."""
    per = results["methods"]
    learned = [m for m in results["comparison"]["methods"] if per[m].get("first_beats")]
    if not learned:
        return ""
    baselines = list(per[learned[0]]["first_beats"])
    head = "".join(f"<th>{esc(b)} ({_f(per[learned[0]]['first_beats'][b]['level'], 1)} s)</th>" for b in baselines)
    rows = [f"<table id='first-beats'><tr><th>method</th>{head}</tr>"]
    for m in learned:
        cells = []
        for b in baselines:
            fb = per[m]["first_beats"][b]
            seeds = f" ({fb['reached']}/{fb['of']} seeds)"
            cells.append(_cell(fb["episodes"], 1, extra=seeds) if fb["episodes"] else f"<td>never{esc(seeds)}</td>")
        rows.append(f"<tr><td>{esc(m)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def runs_table(results: dict) -> str:
    out = ["<table id='runs'><tr><th>run</th><th>status</th><th>final travel time s</th><th>arrival rate</th>"
           "<th>episodes</th><th>decisions</th><th>training wall s</th><th>reached target at episode</th>"
           "<th>W&amp;B run folder</th><th>error</th></tr>"]  # fmt: skip
    base = Path(results.get("out", "."))
    for r in results["runs"]:
        st = "<span class='ok'>ok</span>" if r["status"] == "ok" else "<span class='failed'>failed</span>"
        fin = r.get("final") or {}
        se = r.get("sample_efficiency")
        wb = r.get("wandb")
        if wb:
            try:
                wb = str(Path(wb).relative_to(base))
            except ValueError:
                pass
        elif r.get("wandb_warning"):
            wb = "off: " + r["wandb_warning"]
        out.append(
            f"<tr><td>{esc(r['name'])}</td><td>{st}</td><td>{_f(fin.get('mean_travel_time'), 1)}</td>"
            f"<td>{_f(fin.get('arrival_rate'), 2)}</td><td>{esc(r.get('episodes'))}</td><td>{esc(r.get('env_steps'))}</td>"
            f"<td>{_f(r.get('wall_s'), 1)}</td><td>{esc(se['episode']) if se else '-'}</td>"
            f"<td class='note'>{esc(wb or '-')}</td><td class='err'>{esc(r.get('error') or '')}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


FORMALISATION = """
<h2 id='method'>What is the paper's and what is this project's</h2>
<div class='box'>
<p>The method compared here is RELED, from <i>LLM-Driven Stationarity-Aware Expert Demonstrations for
Multi-Agent Reinforcement Learning in Mobile Systems</i> (arXiv 2511.19368). Only the paper's abstract is
available: it names the two modules — Stationarity-Aware Expert Demonstrations (SED) and Hybrid Expert-Agent
Policy Optimisation (HPO) — but gives no formulas.</p>
<p><b>Everything concrete in this suite is this project's own formalisation, not the paper's text:</b> the
decision-point routing MDP on real OpenStreetMap cities in SUMO (an agent chooses the next edge at forks), the
per-agent SED bound <code>B_i = V_i + c·D_i</code> (reward volatility over background-traffic seeds plus
intra-subset policy divergence) used to accept or refine LLM plans, the RELED loss
<code>L_i = L_PPO,i + w_i·L_BC,i</code> with <code>w_i = w0·η^k·φ(DTW_i)</code>, the baselines' settings, and
every metric in this report (including the sample-efficiency definition above). Numbers here are measurements
of this implementation, not reproductions of the paper's results.</p>
</div>
"""


# ------------------------------------------------------------------------------------------- report
def write_report(out_dir: str | Path, results: dict) -> Path:
    """Write ``out_dir/report.html`` from results.json's content (and the runs' files); returns its path."""
    out_dir = Path(out_dir)
    comp = results["comparison"]
    methods = list(comp["methods"])
    ev = evaluation_kind(comp)
    ev_what = (
        "the policy's most likely action" if ev == "greedy" else "actions drawn from the policy, seeded by the episode"
    )
    colors = _colors(methods)
    rows = {r["name"]: read_rows(r["dir"]) for r in results["runs"]}
    failed = [r for r in results["runs"] if r["status"] != "ok"]
    ref = results.get("reference") or {}
    ts = time.strftime("%Y-%m-%d %H:%M")
    agents = comp.get("agents") or "the city's default number of"
    body = [
        f"<h1>Comparison on {esc(comp['scenario'])}</h1>",
        f"<p class='sub'>{esc(', '.join(methods))} · {esc(comp['seeds'])} seed(s) each · {esc(comp['episodes'])} training "
        f"episodes per run · {esc(agents)} controlled agents · {ev} evaluation every {esc(comp['eval_every'])} "
        f"episode(s) on SUMO seed {esc(comp['eval_seed'])} · comparison <code>{esc(results.get('id'))}</code> · "
        f"written {esc(ts)}</p>",
    ]
    if failed:
        body.append(
            f"<div class='banner'><b>{len(failed)} of {len(results['runs'])} runs failed</b>: "
            + ", ".join(f"<span class='failed'>{esc(r['name'])}</span>" for r in failed)
            + ". They are left out of the statistics; their errors are in the run table below.</div>"
        )
    body.append("<h2 id='results-h'>Results</h2>")
    body.append(results_table(results))
    target = (
        f"The sample-efficiency target is {_f(ref.get('target'), 1)} s: 10 % above {_f(ref.get('value'), 1)} s, the best "
        f"final mean travel time among the reference method(s) {esc(', '.join(ref.get('methods') or []))} "
        f"(best: {esc(ref.get('method'))})."
        if ref.get("target") is not None
        else "No reference method finished, so there is no sample-efficiency target."
    )
    body.append(
        "<p class='note'>Each cell: mean ± sample standard deviation over the seeds that finished, below it the "
        f"min – max. Final metrics are each run's last {ev} evaluation ({ev_what}, fixed "
        f"evaluation seed); mean travel time counts agents still driving at the horizon with their time so far. {target} "
        f"<i>Episodes / decisions to target</i>: training episodes / agent decisions completed at a run's first {ev} "
        "evaluation at or below the target (resolution: the evaluation interval), over the seeds that reached it. "
        "Best value per column in green.</p>"
    )
    beats = first_beats_table(results)
    if beats:
        body.append("<h3 id='first-beats-h'>When each learned method first beats each baseline</h3>")
        body.append(beats)
        body.append(
            f"<p class='note'>Training episodes completed at a run's first {ev} evaluation whose mean travel time is "
            "strictly below the baseline's final mean (in the column head; across its seeds); mean ± std over the "
            "seeds that got there (resolution: the evaluation interval). <i>never</i>: no evaluation of any seed did.</p>"
        )
    bars = final_bars(results, colors)
    if bars:
        body.append(_img(bars, "final travel time per method", f"Final {ev}-evaluation mean travel time per method."))
    body.append("<h2 id='curves'>Learning curves</h2>")
    curves = learning_curves(results, rows, colors)
    if curves:
        body.append(_img(curves, "learning curves",
                         f"Training episodes (stochastic policy; rolling mean over {max(1, min(10, int(comp['episodes']) // 5))} "
                         f"episode(s)) against agent decisions and against training wall-clock, and {ev} evaluations against "
                         "training episodes. Lines: mean across seeds; shaded bands: min – max across seeds; error bars: ± "
                         "std. Methods that do not learn appear as dashed levels (mean over their training episodes)."))  # fmt: skip
    else:
        body.append("<p>No run finished: no curves.</p>")
    body.append("<h2 id='map'>City map and example routes</h2>")
    uri, caption = route_map(results, colors)
    body.append(_img(uri, "city map with routes", caption) if uri else f"<p class='note'>{caption}</p>")
    body.append(sed_section(results))
    body.append("<h2 id='runs-h'>Runs</h2>")
    body.append(runs_table(results))
    body.append(
        "<p class='note'>Every run has its own folder under <code>runs/</code> (config.json, metrics.jsonl, "
        "checkpoint.pt, run.json) and one W&amp;B run (offline unless WANDB_MODE=online), grouped by scenario and "
        "config hash, job type = method.</p>"
    )
    body.append(FORMALISATION)
    body.append("<h2 id='repro'>Reproduce</h2>")
    cmd = (
        f"cosim compare --methods {','.join(methods)} --config {Path(results.get('out') or '.') / 'config.json'}"
        + (f" --demos {comp['demos']}" if comp.get("demos") and not str(comp["demos"]).startswith("generated") else "")
        + " --out NEW_FOLDER"
    )
    body.append(f"<p><code>{esc(cmd)}</code></p><p class='note'>Scenario build: <code>{esc(comp.get('scenario_build'))}</code>; "
                f"executor: {esc(results.get('executor'))} with {esc(results.get('workers'))} worker(s); total wall-clock "
                f"{_f(results.get('wall_s'), 0)} s. Full numbers: <code>results.json</code>.</p>")  # fmt: skip
    return _write_page(out_dir, f"Comparison on {comp['scenario']}", body)


def _write_page(out_dir: Path, title: str, body: list[str]) -> Path:
    """`out_dir/report.html`: one self-contained page (styles inline, images as data URIs), written
    next to it and renamed into place."""
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} — RELED co-simulation</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>"
    )
    path = out_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(doc, encoding="utf-8")
    tmp.replace(path)
    return path


GENERALIZE_POLICIES = (
    ("shortest", "free-flow shortest"),
    ("sumo-rerouting", "SUMO rerouting"),
    ("navigation", "navigation app"),
    ("zero_shot", "zero-shot (trained on the training cities)"),
    ("fine_tuned", "zero-shot policy, fine-tuned there"),
    ("in_city", "in-city reference (trained there)"),
)


def write_generalization_report(out_dir: str | Path, res: dict) -> Path:
    """`cosim generalize`'s report.html: per held-out city, each policy's travel time over the training
    seeds and the generalisation gap (zero-shot ÷ in-city)."""
    out_dir = Path(out_dir)

    def cell(s: dict | None) -> str:
        if not s:
            return "<td>–</td>"
        ci = f" (95 % ± {_f(s.get('ci95'), 1)})" if s.get("ci95") is not None else ""
        return (
            f"<td>{_f(s['mean'], 1)} ± {_f(s['std'], 1)} s{ci}<br><small>{s['n']} {esc(s.get('over', ''))}</small></td>"
        )

    head = "".join(f"<th>{esc(label)}</th>" for _, label in GENERALIZE_POLICIES)
    rows = []
    for city, c in res["cities"].items():
        pol = c["policies"]
        gap = c.get("gap")
        gap_cell = f"<td><b>{_f(gap['mean'], 3)}</b> ± {_f(gap['std'], 3)}</td>" if gap else "<td>–</td>"
        rows.append(f"<tr><th>{esc(city)}</th>" + "".join(cell(pol.get(k)) for k, _ in GENERALIZE_POLICIES)
                    + gap_cell + "</tr>")  # fmt: skip
    body = [
        f"<h1>Does {esc(res['method'])} travel? Trained on {esc(', '.join(res['train']))}</h1>",
        f"<p class='sub'>{esc(res['seeds'])} training seed(s) · {esc(res['episodes'])} training episodes per run · "
        f"held out: {esc(', '.join(res['held_out']))} · {esc(res['eval_episodes'])} test episodes per policy from "
        f"SUMO seed {esc(res['test_seed'])} · written {esc(time.strftime('%Y-%m-%d %H:%M'))}</p>",
        "<h2 id='generalization'>Held-out cities</h2>",
        f"<table id='generalization-table'><thead><tr><th>city</th>{head}<th>generalisation gap</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>",
        "<p class='note'>Agents' mean travel time: per run the mean over the test episodes, then mean ± sample "
        "standard deviation over the training seeds (baselines, which have no seeds: over the test episodes) and the "
        "95 % t-interval. "
        "Generalisation gap: zero-shot ÷ in-city travel time per seed (1 = as good as training there; "
        "the target is ≤ 1.03). Full numbers, all-vehicles means and arrival rates: <code>results.json</code>.</p>",
    ]
    if res.get("failed"):  # left out of the table; a rerun tries them again
        items = "".join(f"<li><code>{esc(k)}</code>: {esc(v)}</li>" for k, v in res["failed"].items())
        body.append(f"<h2 id='failed'>Failed runs (left out above)</h2><ul id='failed-runs'>{items}</ul>")
    return _write_page(out_dir, f"Generalisation of {res['method']}", body)


def rebuild(d: Path) -> dict:
    """A comparison's results recomputed from its runs' metrics with this code (a newer code may record
    more, e.g. the all-vehicles mean), keeping what the comparison itself recorded."""
    from core.jsonio import atomic_write
    from evaluation.results import read_rows, summarise

    old = json.loads((d / "results.json").read_text())
    runs = [{k: e.get(k) for k in ("name", "method", "seed", "status", "error", "dir", "wandb", "wandb_warning",
                                   "process_s")} for e in old["runs"]]  # fmt: skip
    rows = {e["name"]: read_rows(e["dir"]) if e.get("dir") and Path(e["dir"]).is_dir() else [] for e in runs}
    ref = old.get("reference", {})
    new = summarise(old["comparison"], runs, rows, reference=ref.get("methods"), tolerance=ref.get("tolerance", 0.1))
    res = {**old, **new}
    atomic_write(d / "results.json", json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> None:
    """Rewrite a comparison's report: ``python -m evaluation.report DIR`` from its results.json,
    ``--rebuild`` first recomputes results.json from the runs' metrics with this code."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    rebuild_first = "--rebuild" in args
    args = [a for a in args if a != "--rebuild"]
    if len(args) != 1:
        print("usage: python -m evaluation.report [--rebuild] COMPARISON_DIR", file=sys.stderr)
        sys.exit(2)
    d = Path(args[0])
    res = rebuild(d) if rebuild_first else json.loads((d / "results.json").read_text())
    print(write_report(d, res))


if __name__ == "__main__":
    main()
