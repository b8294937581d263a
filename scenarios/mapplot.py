"""The city map PNG of a built scenario: the SUMO net's edge shapes, drawn with matplotlib.

Drawn from the net that the simulation uses (not from OSM), so what the map shows is exactly what the
agents drive on: roads by lane count, signalised junctions as dots, a few agent trips' origins and
destinations. One LineCollection on an Agg canvas: well under a second even for a large city.

Given the background's trip ends per edge (`scenarios.osmdemand.trip_ends`), the roads are coloured by
how many trips start or end on them, so the map shows where the demand comes from and goes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TRIP_END_CMAP = "plasma_r"  # light yellow for few trip ends, dark purple for many: reads on white


def draw(net, png: Path, title: str, attribution: str, trips: list[dict] | None = None,
         trip_ends: Mapping[str, int] | None = None) -> None:  # fmt: skip
    """trip_ends: edge id -> trips starting or ending there; colours the roads (grey where none)."""
    # a bare Figure with the Agg canvas: no pyplot, so no global backend switch in the caller's process
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    edges = [e for e in net.getEdges() if not e.isSpecial()]
    segments = [[(x, y) for x, y, *_ in e.getShape()] for e in edges]  # drop z where the net has it
    widths = [0.4 + 0.35 * min(e.getLaneNumber(), 4) for e in edges]
    fig = Figure(figsize=(7, 7), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    counts = [trip_ends.get(e.getID(), 0) for e in edges] if trip_ends else []
    if any(counts):
        ax.add_collection(LineCollection(segments, linewidths=widths, colors="#c8c8c8", capstyle="round"))
        used = [i for i, c in enumerate(counts) if c > 0]
        shaded = LineCollection([segments[i] for i in used], linewidths=[widths[i] + 0.6 for i in used],
                                cmap=TRIP_END_CMAP, norm=Normalize(0, max(counts)), capstyle="round", zorder=1)  # fmt: skip
        shaded.set_array([counts[i] for i in used])
        ax.add_collection(shaded)
        bar = fig.colorbar(shaded, ax=ax, shrink=0.5, pad=0.02)
        bar.set_label("background trips starting or ending on the road", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    else:
        ax.add_collection(LineCollection(segments, linewidths=widths, colors="#555555", capstyle="round"))
    tls_nodes = [n for n in net.getNodes() if n.getType().startswith("traffic_light")]
    if tls_nodes:
        xs, ys = zip(*(n.getCoord()[:2] for n in tls_nodes))
        ax.scatter(xs, ys, s=14, c="#d62728", zorder=3, label=f"signalised junctions ({len(tls_nodes)})")
    if trips:
        ends = (("from", 0, "#2ca02c", "agent origins"), ("to", -1, "#1f77b4", "agent destinations"))
        for key, end, colour, label in ends:
            pts = [net.getEdge(t[key]).getShape()[end] for t in trips if net.hasEdge(t[key])]
            if pts:
                xs, ys = zip(*((p[0], p[1]) for p in pts))
                ax.scatter(xs, ys, s=8, c=colour, alpha=0.7, zorder=2, label=label)
    # limits from the drawn roads: the net's convBoundary also spans the OSM ways netconvert dropped
    xs = [x for seg in segments for x, _ in seg]
    ys = [y for seg in segments for _, y in seg]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 0.03 * max(x1 - x0, y1 - y0, 1.0)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(y0 - pad, y1 + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize=11, pad=14)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    ax.text(1.0, 1.0, attribution, transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#444444")
    fig.savefig(png, bbox_inches="tight")
