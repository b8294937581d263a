"""Demonstrations on demand for the methods that learn from an expert (RELED, LEED, ablations).

agents/ may not import llm/ (imports go evaluation -> agents, llm -> cosim -> scenarios), so the
CLI registers this provider with agents.methods: when `cosim train --method reled` runs without
`--demos DIR`, the SED pipeline runs here once, with the local LLM, and its folder is cached under
$COSIM_HOME/demos/ by scenario, agent count, seed and SED settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def demos_root() -> Path:
    return Path(os.environ.get("COSIM_HOME", Path.home() / ".cache" / "cosim")) / "demos"


def sed_config(agents: int | None, seed: int, llm: str | None = None):
    from llm.cli import default_cache
    from llm.sed import SEDConfig

    return SEDConfig(
        llm=llm or os.environ.get("COSIM_LLM", "local"),
        agents=agents,
        rounds=int(os.environ.get("COSIM_SED_ROUNDS", 2)),
        rollouts=2,
        seed=seed,
        cache_path=default_cache(),
    )


def provide_demos(scenario: str, agents: int | None, seed: int, first_round: bool = False) -> Path:
    """A demonstrations folder for (scenario, agents, seed): built with SED on first use, then reused.
    With first_round, its round-1 (unvalidated) demonstrations."""
    from llm.sed import SED, write_outputs
    from scenarios import ensure_built

    sc = ensure_built(scenario)
    cfg = sed_config(agents, seed)
    key = json.dumps({"scenario": str(sc.path), "sed": asdict(cfg) | {"cache_path": None}}, sort_keys=True)
    folder = demos_root() / f"{sc.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (folder / "summary.json").is_file():
        print(f"[cosim] generating SED demonstrations for {sc.name} into {folder} (once)", file=sys.stderr)
        sed = SED(sc, cfg)
        try:
            write_outputs(sed, sed.run(progress=lambda msg: print(f"[cosim] SED {msg}", file=sys.stderr)), folder)
        finally:
            sed.close()
    return folder / "first_round" if first_round else folder
