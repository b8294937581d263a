"""The `cosim` console script: one entry point; each layer contributes its own sub-commands.

Heavy imports (torch, SUMO, LangChain) happen inside the commands, so `cosim --help` stays instant.
"""

from __future__ import annotations


import typer

from scenarios.errors import run_app

app = typer.Typer(
    name="cosim",
    help="LLM-guided multi-agent RL on real OpenStreetMap cities in SUMO (RELED).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from scenarios.cli import app as scenario_app
    from cosim.cli import register as register_cosim
    from evaluation.compare import register as register_compare
    from evaluation.evaluate import register as register_evaluate
    from agents.cli import register as register_agents
    from llm.cli import register as register_llm

    app.add_typer(scenario_app, name="scenario", help="Build, list and inspect city scenarios.")
    register_cosim(app)
    register_agents(app)
    # agents/ may not import llm/: the top layer hands it the SED pipeline for on-the-fly demos
    from agents.methods import set_demo_provider
    from evaluation.demos_provider import provide_demos

    set_demo_provider(provide_demos)
    register_llm(app)
    register_compare(app)
    register_evaluate(app)


_register()


@app.command()
def demo(
    scenario: str = typer.Option("helsinki", help="City name or a built scenario folder."),
    agents: int = typer.Option(50, help="Controlled agents."),
    seeds: int = typer.Option(3, help="Seeds per method."),
    episodes: int = typer.Option(12, help="Training episodes per run."),
    out: str = typer.Option(None, help="Output folder (default runs/demo-<scenario>)."),
    workers: int = typer.Option(None, help="Parallel runs (default: one per core)."),
    llm: str = typer.Option("local", "--llm", help="LLM backend for the SED demonstrations."),
    no_open: bool = typer.Option(False, "--no-open", help="Do not open the report in a browser."),
) -> None:
    """The main job: build the city, SED demos with the local LLM, RELED vs baselines, report (see README)."""
    from evaluation.demo import run

    run(scenario, agents, seeds, episodes, out=out, workers=workers, llm=llm, open_report=not no_open)


def main() -> None:
    run_app(app)

if __name__ == "__main__":
    main()
