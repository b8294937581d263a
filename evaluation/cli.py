"""The top layer's part of the `cosim` console script (a ``cosim.commands`` plugin, see `cosim.cli`).

``configure()`` hands the whole configuration tree to every command's options and the SED pipeline to
agents/ for demonstrations made on the fly; ``register(app)`` adds `demo`, `compare` and `evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from core.shortcuts import shortcut_options


def configure() -> None:
    # the whole configuration tree first: every command's --help shows its defaults
    from agents.methods import set_demo_provider
    from core.settings import set_experiment_class
    from evaluation.config import ExperimentConfig
    from evaluation.demos_provider import provide_demos

    set_experiment_class(ExperimentConfig)
    # agents/ may not import llm/: the top layer hands it the SED pipeline for on-the-fly demos
    set_demo_provider(provide_demos)


def _preset():
    from evaluation.demo import preset

    return preset()


def register(app: typer.Typer) -> None:
    from evaluation.compare import register as register_compare
    from evaluation.evaluate import register as register_evaluate
    from evaluation.generalize import register as register_generalize

    register_compare(app)
    register_evaluate(app)
    register_generalize(app)

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
