"""`cosim demos`: LLM expert demonstrations with stationarity-aware validation (SED)."""

from __future__ import annotations

from pathlib import Path

import typer

from core.shortcuts import shortcut_options
from llm.errors import LLMError


def _tree():
    from core.settings import experiment_class

    cls = experiment_class(None)
    if cls is None:  # pragma: no cover - `cosim` registers the tree before any command runs
        raise LLMError("`cosim demos` runs through the cosim command line")
    return cls


@shortcut_options("scenario", "expert", "llm", "agents", "rounds", "rollouts", "threshold", "c", "k", "subset_size", "seed",
                  "request_timeout", "cache", "max_concurrency", tree=lambda: _tree(),
                  helps={"seed": "Seed of the LLM's sampling and the rollouts."})  # fmt: skip
def demos(
    shortcuts: dict,
    out: Path = typer.Option(..., help="Folder for demos, plans, prompts, bounds and summary.json."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache LLM answers (sed.cache=false)."),
    random_baseline: bool = typer.Option(True, help="Also measure random candidate choice."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML (or a run's config.json) with any subset of the configuration tree's sections."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one setting: section.key=value, e.g. sed.rounds=2 (repeatable)."
    ),
) -> None:
    """Generate expert demonstrations with the LLM, validated by the SED bound (or, with --expert, from the
    navigation or dua baseline); prints a one-line summary.
    Mostly-fallback plans (the LLM's answers were unusable) still write --out, for diagnosis, but end
    with an error: they are not expert demonstrations."""
    import numpy as np
    from rich.console import Console

    from core.errors import UserError
    from core.settings import resolve
    from llm.sed import SED, SEDConfig, check_out, random_choice_baseline, write_outputs
    from scenarios import ensure_built

    out = check_out(out)  # before the scenario, the LLM and SUMO: a bad --out costs nothing
    shortcuts["sed.cache"] = False if no_cache else None
    try:
        tree = resolve(_tree(), config, set_, shortcuts)
        tree.check()
    except UserError as exc:
        raise LLMError(str(exc)) from None
    expert = tree.algorithm.expert
    if expert != "llm":
        from llm.experts import write_expert_demos

        summary = write_expert_demos(tree, expert, out)
        print(f"{summary['scenario']}: {summary['agents']} agents, expert {expert}: {summary['demo_samples']} decisions, "
              f"mean travel {summary['demo_mean_travel_time']} s -> {out}")  # fmt: skip
        return
    cfg = SEDConfig.from_settings(tree.sed, tree.env.n_agents, tree.run.seed)
    seed, llm = tree.run.seed, tree.sed.llm
    err = Console(stderr=True)
    sc = ensure_built(tree.scenario.name, **tree.scenario.overrides())
    sed = SED(sc, cfg, env=tree.env)
    try:
        with err.status("SED…") as status:
            result = sed.run(progress=status.update)
            extra = {}
            if random_baseline:
                status.update("measuring random candidate choice")
                extra["random_choice_mean_travel_time"] = round(
                    random_choice_baseline(sed, np.random.default_rng(seed)), 2
                )
            status.update("recording demonstrations")
            summary = write_outputs(sed, result, out, extra)
    finally:
        sed.close()
    tt = summary["mean_travel_time_per_round"]
    print(
        f"{summary['scenario']}: {summary['agents']} agents, {summary['rounds']} round(s), "
        f"accepted {'round ' + str(summary['accepted_round']) if summary['accepted_round'] else 'none (kept best)'}, "
        f"bound {summary['bound_per_round']}, mean travel {tt} s"
        + (f" vs random {summary['random_choice_mean_travel_time']} s" if random_baseline else "")
        + f", {summary['llm_calls']} LLM calls in {summary['llm_seconds']:.1f} s, "
        f"{summary['invalid_answers']} invalid, {summary['repaired']} repaired, "
        f"{summary['fallback_share']:.0%} fallback plans kept -> {out}"
    )
    problem = result.fallback_problem()
    if problem:
        raise LLMError(f"{out}: {problem}; check the backend (--llm {llm})")


@shortcut_options("scenario", "agents", "llm", "max_concurrency", "rounds", "seed", tree=lambda: _tree(),
                  helps={"seed": "Seed of the LLM's sampling and the rollouts."})  # fmt: skip
def bench_sed(
    shortcuts: dict,
    config: Path | None = typer.Option(None, "--config", help="TOML with any subset of the configuration tree."),
    set_: list[str] = typer.Option([], "--set", help="Override one setting: section.key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON only: one object."),
) -> None:
    """What SED costs per agent (LLM seconds, prompts, tokens, rollout seconds) and the kept plans' mean
    travel time; one run without the answer cache."""
    import json
    import sys

    from core.errors import UserError
    from core.settings import resolve
    from llm.bench import sed_bench
    from scenarios import ensure_built

    try:
        tree = resolve(_tree(), config, set_, shortcuts)
        tree.check()
    except UserError as exc:
        raise LLMError(str(exc)) from None
    sc = ensure_built(tree.scenario.name, **tree.scenario.overrides())
    n = tree.env.n_agents
    if n is not None and not sc.imported and n > len(sc.trip_pool):
        # as `bench overhead`: a generated scenario grows its agent pool (same background, same first trips)
        print(f"{sc.name}: growing the agent pool to {n} trips", file=sys.stderr)
        sc = ensure_built(tree.scenario.name, agent_pool=n, **tree.scenario.overrides())
    row = sed_bench(sc, tree, progress=lambda msg: None if as_json else print(msg, file=sys.stderr))
    if not as_json:
        print(
            f"{row['agents']} agents, {row['llm']}: {row['prompts']} prompts, {row['llm_seconds']:.1f} s of LLM "
            f"({row['seconds_per_agent_round']} s per agent and round), {row['rollout_seconds']:.1f} s of rollouts, "
            f"kept plans {row['mean_travel_time']} s mean travel time",
            file=sys.stderr,
        )
    print(json.dumps(row, indent=None if as_json else 1))


def register(app: typer.Typer) -> None:
    from cosim.cli import bench_app

    app.command("demos")(demos)
    bench_app.command("sed")(bench_sed)
