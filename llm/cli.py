"""`cosim demos`: LLM expert demonstrations with stationarity-aware validation (SED)."""

from __future__ import annotations

from pathlib import Path

import typer

from llm.errors import LLMError


def _tree():
    from core.settings import experiment_class

    cls = experiment_class(None)
    if cls is None:  # pragma: no cover - `cosim` registers the tree before any command runs
        raise LLMError("`cosim demos` runs through the cosim command line")
    return cls


def _help(path: str, text: str) -> str:
    from core.settings import help_for

    return help_for(_tree(), path, text)


def demos(
    out: Path = typer.Option(..., help="Folder for demos, plans, prompts, bounds and summary.json."),
    scenario: str | None = typer.Option(None, help=_help("scenario.name", "City name or a built scenario folder.")),
    llm: str | None = typer.Option(
        None, "--llm", help=_help("sed.llm", "local | openai[:model] | ollama[:model] | provider:model.")
    ),
    agents: int | None = typer.Option(None, help=_help("env.n_agents", "Controlled agents (null: the city's).")),
    rounds: int | None = typer.Option(None, help=_help("sed.rounds", "M: SED rounds at most.")),
    rollouts: int | None = typer.Option(None, help=_help("sed.rollouts", "R: background-traffic seeds per round.")),
    threshold: float | None = typer.Option(
        None, help=_help("sed.threshold", "Accept when max_i B_i <= threshold (minutes).")
    ),
    c: float | None = typer.Option(
        None, help=_help("sed.c", "Weight of the divergence term D_i in B_i = V_i + c*D_i.")
    ),
    k: int | None = typer.Option(None, help=_help("sed.k", "Candidate routes per agent.")),
    subset_size: int | None = typer.Option(None, help=_help("sed.subset_size", "Agents per prompt at most.")),
    seed: int | None = typer.Option(None, help=_help("run.seed", "Seed of the LLM's sampling and the rollouts.")),
    request_timeout: float | None = typer.Option(
        None, help=_help("sed.request_timeout", "Seconds per call to a remote LLM before it counts as failed.")
    ),
    cache: str | None = typer.Option(
        None, help=_help("sed.cache_file", "LangChain answer cache (SQLite; null: $COSIM_HOME/llm-cache.sqlite).")
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache LLM answers (sed.cache=false)."),
    max_concurrency: int | None = typer.Option(
        None, help=_help("sed.max_concurrency", "Remote backends: prompts in flight at once (local: one).")
    ),
    random_baseline: bool = typer.Option(True, help="Also measure random candidate choice."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML (or a run's config.json) with any subset of the configuration tree's sections."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one setting: section.key=value, e.g. sed.rounds=2 (repeatable)."
    ),
) -> None:
    """Generate expert demonstrations with the LLM, validated by the SED bound; prints a one-line summary.
    Mostly-fallback plans (the LLM's answers were unusable) still write --out, for diagnosis, but end
    with an error: they are not expert demonstrations."""
    import numpy as np
    from rich.console import Console

    from core.errors import UserError
    from core.settings import resolve
    from llm.sed import SED, SEDConfig, check_out, random_choice_baseline, write_outputs
    from scenarios import ensure_built

    out = check_out(out)  # before the scenario, the LLM and SUMO: a bad --out costs nothing
    shortcuts = {
        "scenario.name": scenario, "sed.llm": llm, "env.n_agents": agents, "sed.rounds": rounds, "sed.rollouts": rollouts,
        "sed.threshold": threshold, "sed.c": c, "sed.k": k, "sed.subset_size": subset_size, "run.seed": seed,
        "sed.request_timeout": request_timeout, "sed.cache_file": cache, "sed.cache": False if no_cache else None,
        "sed.max_concurrency": max_concurrency,
    }  # fmt: skip
    try:
        tree = resolve(_tree(), config, set_, shortcuts)
        tree.check()
    except UserError as exc:
        raise LLMError(str(exc)) from None
    cfg = SEDConfig.from_settings(tree.sed, tree.env.n_agents, tree.run.seed)
    seed, llm = tree.run.seed, tree.sed.llm
    err = Console(stderr=True)
    sc = ensure_built(tree.scenario.name)
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


def bench_sed(
    scenario: str = typer.Option("helsinki", "--scenario", "-s", help="City name or a built scenario folder."),
    agents: int | None = typer.Option(None, "--agents", "-n", help="Agents asked about (default: the city's)."),
    llm: str | None = typer.Option(None, "--llm", help=_help("sed.llm", "local | openai[:model] | ollama[:model].")),
    max_concurrency: int | None = typer.Option(
        None, help=_help("sed.max_concurrency", "Remote backends: prompts in flight at once.")
    ),
    rounds: int | None = typer.Option(None, help=_help("sed.rounds", "M: SED rounds at most.")),
    seed: int | None = typer.Option(None, help=_help("run.seed", "Seed of the LLM's sampling and the rollouts.")),
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

    shortcuts = {"scenario.name": scenario, "env.n_agents": agents, "sed.llm": llm,
                 "sed.max_concurrency": max_concurrency, "sed.rounds": rounds, "run.seed": seed}  # fmt: skip
    try:
        tree = resolve(_tree(), config, set_, shortcuts)
        tree.check()
    except UserError as exc:
        raise LLMError(str(exc)) from None
    sc = ensure_built(tree.scenario.name)
    n = tree.env.n_agents
    if n is not None and not sc.imported and n > len(sc.trip_pool):
        # as `bench overhead`: a generated scenario grows its agent pool (same background, same first trips)
        print(f"{sc.name}: growing the agent pool to {n} trips", file=sys.stderr)
        sc = ensure_built(tree.scenario.name, agent_pool=n)
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
