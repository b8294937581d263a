"""Demonstrations on demand for the methods that learn from an expert (RELED, LEED, ablations).

agents/ may not import llm/ (imports go evaluation -> agents, llm -> cosim -> scenarios), so the
CLI registers this provider with agents.methods: when `cosim train --method reled` runs without
`--demos DIR`, the SED pipeline runs here once, with the local LLM, and its folder is cached under
$COSIM_HOME/demos/ by scenario, agent count, seed and SED settings.

Only expert demonstrations enter that cache: a result whose plans are mostly free-flow fallbacks (the
LLM's answers were unusable) is written to $COSIM_HOME/demos-rejected/ for diagnosis and the call fails
with an LLMError, so the next call, once the backend works, asks the LLM again instead of reusing it.
An unreachable backend fails earlier, in the SED run itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def demos_root() -> Path:
    from scenarios.paths import home_dir

    return home_dir("demos")


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


def _cached(folder: Path) -> bool:
    """A finished cache entry whose summary records a usable share of LLM plans (entries from before
    the share was recorded are made again)."""
    from llm.sed import MAX_FALLBACK_SHARE

    try:
        s = json.loads((folder / "summary.json").read_text())
        return max(s["fallback_share"], s["first_round_fallback_share"]) <= MAX_FALLBACK_SHARE
    except (OSError, ValueError, KeyError, TypeError):
        return False


def provide_demos(scenario: str, agents: int | None, seed: int, first_round: bool = False) -> Path:
    """A demonstrations folder for (scenario, agents, seed): built with SED on first use, then reused.
    With first_round, its round-1 (unvalidated) demonstrations."""
    from llm.errors import LLMError
    from llm.sed import SED, write_outputs
    from scenarios import ensure_built
    from scenarios.paths import home_dir

    sc = ensure_built(scenario)
    cfg = sed_config(agents, seed)
    key = json.dumps({"scenario": str(sc.path), "sed": asdict(cfg) | {"cache_path": None}}, sort_keys=True)
    folder = demos_root() / f"{sc.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not _cached(folder):
        print(f"[cosim] generating SED demonstrations for {sc.name} into {folder} (once)", file=sys.stderr)
        sed = SED(sc, cfg)
        try:
            result = sed.run(progress=lambda msg: print(f"[cosim] SED {msg}", file=sys.stderr))
            problem = result.fallback_problem()
            target = home_dir("demos-rejected") / folder.name if problem else folder
            write_outputs(sed, result, target)
        finally:
            sed.close()
        if problem:
            raise LLMError(
                f"SED demonstrations for {sc.name} with the {cfg.llm!r} LLM: {problem}; not cached, kept for "
                f"diagnosis in {target}"
            )
    return folder / "first_round" if first_round else folder
