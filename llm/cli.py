"""`cosim demos`: LLM expert demonstrations with stationarity-aware validation (SED)."""

from __future__ import annotations

from pathlib import Path

import typer

from llm.errors import LLMError


def default_cache() -> str:
    from scenarios.paths import home_dir

    return str(home_dir() / "llm-cache.sqlite")


def demos(
    scenario: str = typer.Option("helsinki", help="City name or a built scenario folder."),
    llm: str = typer.Option("local", "--llm", help="local | openai[:model] | ollama[:model] | provider:model"),
    out: Path = typer.Option(..., help="Folder for demos, plans, prompts, bounds and summary.json."),
    agents: int = typer.Option(50, help="Controlled agents."),
    rounds: int = typer.Option(3, help="M: SED rounds at most."),
    rollouts: int = typer.Option(3, help="R: background-traffic seeds per round."),
    threshold: float = typer.Option(1.0, help="Accept when max_i B_i <= threshold (minutes)."),
    c: float = typer.Option(1.0, help="Weight of the divergence term D_i in B_i = V_i + c*D_i."),
    k: int = typer.Option(3, help="Candidate routes per agent."),
    subset_size: int = typer.Option(6, help="Agents per prompt at most."),
    seed: int = typer.Option(0),
    request_timeout: float = typer.Option(60.0, help="Seconds per call to a remote LLM before it counts as failed."),
    cache: str = typer.Option(None, help="LangChain answer cache (SQLite); default $COSIM_HOME/llm-cache.sqlite."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not cache LLM answers."),
    random_baseline: bool = typer.Option(True, help="Also measure random candidate choice."),
) -> None:
    """Generate expert demonstrations with the LLM, validated by the SED bound; prints a one-line summary.
    Mostly-fallback plans (the LLM's answers were unusable) still write --out, for diagnosis, but end
    with an error: they are not expert demonstrations."""
    import numpy as np
    from rich.console import Console

    from llm.sed import SED, SEDConfig, check_out, random_choice_baseline, write_outputs
    from scenarios import ensure_built

    out = check_out(out)  # before the scenario, the LLM and SUMO: a bad --out costs nothing

    for name, value in (("agents", agents), ("rounds", rounds), ("rollouts", rollouts), ("k", k),
                        ("subset-size", subset_size)):  # fmt: skip
        if value <= 0:
            raise LLMError(f"--{name} must be positive, got {value}")
    if rollouts < 2:
        raise LLMError("--rollouts must be at least 2 (the volatility term needs a spread)")
    if not request_timeout > 0:
        raise LLMError(f"--request-timeout must be positive, got {request_timeout}")
    cfg = SEDConfig(
        llm=llm, agents=agents, k=k, subset_size=subset_size, rounds=rounds, rollouts=rollouts, c=c,
        threshold=threshold, seed=seed, cache_path=None if no_cache else (cache or default_cache()),
        request_timeout=request_timeout,
    )  # fmt: skip
    err = Console(stderr=True)
    sc = ensure_built(scenario)
    sed = SED(sc, cfg)
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


def register(app: typer.Typer) -> None:
    app.command("demos")(demos)
