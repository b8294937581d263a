"""``cosim train``: wired into the main CLI with ``agents.cli.register(app)``.

Also runnable on its own: ``python -m agents.cli train --method ippo --episodes 5 --out runs/x``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from agents.methods import METHODS


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings -> dict; values are read as JSON where they parse (numbers, true, null)."""
    from agents.base import TrainError

    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise TrainError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def _method_help() -> str:
    return "; ".join(f"{name}: {spec.help}" for name, spec in METHODS.items())


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        scenario: str = typer.Option("helsinki", "--scenario", "-s", help="City scenario name."),
        method: str = typer.Option("ippo", "--method", "-m", help=f"One of: {', '.join(METHODS)}."),
        episodes: int = typer.Option(50, "--episodes", "-e", help="Training episodes."),
        seed: int = typer.Option(0, "--seed", help="Run seed (network init, sampling, SUMO seeds)."),
        out: Optional[Path] = typer.Option(
            None, "--out", "-o", help="Run directory (default runs/<scenario>-<method>-s<seed>)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        agents: Optional[int] = typer.Option(None, "--agents", "-n", help="Controlled agents (default: the scenario's)."),
        eval_every: int = typer.Option(5, "--eval-every", help="Greedy evaluation every K episodes (0: never)."),
        eval_seed: int = typer.Option(10_000, "--eval-seed", help="SUMO seed of every evaluation episode."),
        horizon: Optional[float] = typer.Option(None, "--horizon", help="Episode horizon in s (default: the scenario's)."),
        plans: Optional[Path] = typer.Option(None, "--plans", help="replay: JSON file agent id -> list of edge ids."),
        independent: bool = typer.Option(False, "--independent", help="One network per agent instead of sharing."),
        set_: List[str] = typer.Option([], "--set", help="PPO hyperparameter override key=value (repeatable)."),
        backend: str = typer.Option("libsumo", "--backend", help="libsumo or traci."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Train a MARL method (or run a baseline) with periodic greedy evaluation and checkpoints."""
        from agents.runner import TrainConfig, train

        ppo = parse_overrides(set_)
        if independent:
            ppo["shared"] = False
        cfg = TrainConfig(
            scenario=scenario,
            method=method,
            episodes=episodes,
            seed=seed,
            agents=agents,
            eval_every=eval_every,
            eval_seed=eval_seed,
            horizon=horizon,
            backend=backend,
            plans=str(plans) if plans else None,
            ppo=ppo,
        )
        out_dir = out or Path("runs") / f"{scenario}-{method}-s{seed}"
        res = train(cfg, out_dir, resume=resume, progress=not quiet)
        ev = res["last_eval"] or res["last_train"]
        mtt, arr = ev.get("mean_travel_time"), ev.get("arrival_rate")
        typer.echo(
            f"{method} on {scenario}: {res['episodes']} episodes, {res['env_steps']} decisions, "
            f"{res['wall_s']:.0f} s, SUMO faults {res['sumo_faults']}; "
            + (f"{ev.get('phase', '')} mean travel time {mtt:.1f} s, arrival rate {arr:.2f}; " if mtt is not None else "")
            + f"metrics in {Path(res['out']) / 'metrics.jsonl'}"
        )


def main(argv: list[str] | None = None) -> None:
    from scenarios.errors import UserError

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)

    @app.callback()
    def _root() -> None:
        """MARL training (the same commands as `cosim train`)."""

    register(app)
    try:
        app(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
