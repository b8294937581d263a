"""Demonstrations on demand for the methods that learn from an expert (RELED, LEED, ablations).

agents/ may not import llm/ (imports go evaluation -> agents, llm -> cosim -> scenarios), so the
CLI registers this provider with agents.methods: when `cosim train --method reled` runs without
`--demos DIR`, the SED pipeline runs here once, with the run's tree (its ``sed`` section, ``env.n_agents``
and ``run.seed``), and its folder is cached under $COSIM_HOME/demos/ by scenario, agent count, seed and
SED settings.

Only expert demonstrations enter that cache: a result whose plans are mostly free-flow fallbacks (the
LLM's answers were unusable) is written to $COSIM_HOME/demos-rejected/ for diagnosis and the call fails
with an LLMError, so the next call, once the backend works, asks the LLM again instead of reusing it.
An unreachable backend fails earlier, in the SED run itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path


def demos_root() -> Path:
    from core.paths import home_dir

    return home_dir("demos")


def sed_config(cfg):
    """The SED run of an experiment tree (a tree without a ``sed`` section uses SED's defaults)."""
    from llm.config import SEDSettings
    from llm.sed import SEDConfig

    return SEDConfig.from_settings(getattr(cfg, "sed", None) or SEDSettings(), cfg.env.n_agents, cfg.run.seed)


def _cached(folder: Path) -> bool:
    """A finished cache entry whose summary records a usable share of LLM plans (entries from before
    the share was recorded are made again)."""
    from cosim.demos import DemosError, read_summary
    from llm.sed import MAX_FALLBACK_SHARE

    try:
        s = read_summary(folder)
        return max(s["fallback_share"], s["first_round_fallback_share"]) <= MAX_FALLBACK_SHARE
    except (DemosError, KeyError, TypeError):
        return False


def provide_demos(tree, first_round: bool = False) -> Path:
    """A demonstrations folder for an experiment tree (scenario, agents, seed, SED settings): built with
    SED on first use, then reused. With first_round, its round-1 (unvalidated) demonstrations."""
    from core.paths import home_dir
    from core.settings import to_dict
    from cosim.demos import FIRST_ROUND
    from llm.errors import LLMError
    from llm.sed import SED, write_outputs
    from scenarios import ensure_built

    sc = ensure_built(tree.scenario.name, **tree.scenario.overrides())
    expert = getattr(tree.algorithm, "expert", "llm")
    if expert != "llm":  # a baseline demonstrates: one folder serves both the SED and the one-shot variants
        from llm.experts import write_expert_demos

        env = {k: v for k, v in to_dict(tree.env).items() if k not in ("backend", "gui", "label")}
        key = json.dumps({"scenario": str(sc.path), "expert": expert, "env": env, "seed": tree.run.seed,
                          "dua_iterations": tree.algorithm.dua_iterations}, sort_keys=True)  # fmt: skip
        folder = demos_root() / f"{sc.name}-{expert}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        if not (folder / "summary.json").is_file():
            print(f"[cosim] recording {expert} demonstrations for {sc.name} into {folder} (once)", file=sys.stderr)
            write_expert_demos(tree, expert, folder)
        return folder
    cfg = sed_config(tree)
    ignore = {"cache_path": None, "cache": None, "cache_file": None}  # where answers are cached, not what
    env = {k: v for k, v in to_dict(tree.env).items() if k not in ("backend", "gui", "label")}
    key = json.dumps({"scenario": str(sc.path), "sed": asdict(cfg) | ignore, "env": env}, sort_keys=True)
    folder = demos_root() / f"{sc.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not _cached(folder):
        print(f"[cosim] generating SED demonstrations for {sc.name} into {folder} (once)", file=sys.stderr)
        sed = SED(sc, cfg, env=tree.env)
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
    return folder / FIRST_ROUND if first_round else folder
