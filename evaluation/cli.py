"""The `cosim` console script: one entry point; each layer contributes its own sub-commands.

Heavy imports (torch, SUMO, LangChain) happen inside the commands, so `cosim --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from core.errors import run_app
from core.shortcuts import shortcut_options

app = typer.Typer(
    name="cosim",
    help="LLM-guided multi-agent RL on real OpenStreetMap cities in SUMO (RELED).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # the whole configuration tree first: every command's --help shows its defaults
    from core.settings import set_experiment_class
    from evaluation.config import ExperimentConfig

    set_experiment_class(ExperimentConfig)
    # agents/ may not import llm/: the top layer hands it the SED pipeline for on-the-fly demos
    from agents.methods import set_demo_provider
    from evaluation.demos_provider import provide_demos

    set_demo_provider(provide_demos)

    from agents.cli import register as register_agents
    from cosim.cli import register as register_cosim
    from evaluation.compare import register as register_compare
    from evaluation.evaluate import register as register_evaluate
    from llm.cli import register as register_llm
    from scenarios.cli import app as scenario_app

    app.add_typer(scenario_app, name="scenario", help="Build, list and inspect city scenarios.")
    register_cosim(app)
    register_agents(app)
    register_llm(app)
    register_compare(app)
    register_evaluate(app)


_register()


def _preset():
    from evaluation.demo import preset

    return preset()


@app.command()
@shortcut_options("scenario", "agents", "seeds", "episodes", "out", "workers", "llm", tree=lambda: type(_preset()),
                  base=_preset, short=False, helps={"out": "Output folder (null: runs/demo-<scenario>)."})  # fmt: skip
def demo(
    shortcuts: dict,
    config: Path | None = typer.Option(
        None, "--config", help="TOML (or a run's config.json) with any subset of the configuration tree's sections."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override one setting: section.key=value (repeatable)."),
    no_open: bool = typer.Option(False, "--no-open", help="Do not open the report in a browser."),
) -> None:
    """The main job: build the city, SED demos with the local LLM, RELED vs baselines, report (see README)."""
    from core.settings import resolve
    from evaluation.demo import run

    base = _preset()
    run(resolve(type(base), config, set_, shortcuts, base=base), open_report=not no_open)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
