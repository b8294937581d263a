"""The `cosim` console script: one entry point; each layer contributes its own sub-commands.

Heavy imports (torch, SUMO, LangChain) happen inside the commands, so `cosim --help` stays instant.
"""

from __future__ import annotations

import sys

import typer

from scenarios.errors import UserError

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
    register_llm(app)
    register_compare(app)
    register_evaluate(app)


_register()


@app.command()
def demo(
    scenario: str = typer.Option("helsinki", help="City name or a built scenario folder."),
    agents: int = typer.Option(None, help="Controlled agents (default: the recipe's)."),
    seed: int = typer.Option(0),
) -> None:
    """The main job on the embedded defaults (see README)."""
    from evaluation.demo import run

    run(scenario, agents, seed)


def main() -> None:
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
