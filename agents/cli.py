"""``cosim train``: wired into the main CLI with ``agents.cli.register(app)``.

Also runnable on its own: ``python -m agents.cli train --method ippo --episodes 5 --out runs/x`` (there
the tree has no ``sed`` section: the top layer adds it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from agents.config import TrainConfig
from core.flags import positive_or_auto
from core.settings import CONFIG_HELP, SET_HELP, experiment_class, resolve
from core.shortcuts import shortcut_options

_T = TrainConfig


def resolve_train(config: Path | None, sets: list[str], shortcuts: dict) -> TrainConfig:
    """The run's whole tree: defaults < --config < the shortcut flags given ({path: value}) < --set."""
    return resolve(experiment_class(TrainConfig), config, sets, shortcuts)


def parse_workers(text: str | None) -> int | None:
    """--workers N | auto (0 in the tree: one per free core); 0, negative or not a number: one line."""
    return positive_or_auto("--workers")(text)


def _check_own_settings(cfg) -> None:
    """RELED's settings given to a method that has none: a mistake worth one line, not silence. (A
    comparison may set them for all its methods; only the ones that use them read them.)"""
    from agents.base import TrainError
    from agents.config import RELEDSettings
    from agents.methods import expert_loss_methods
    from core.settings import to_dict

    reled_family = expert_loss_methods()
    if cfg.algorithm.method in reled_family:
        return
    given, default = to_dict(cfg.algorithm.reled), to_dict(RELEDSettings())
    changed = [k for k in given if given[k] != default[k]]
    if changed:
        raise TrainError(f"algorithm.reled.{changed[0]} is a setting of {', '.join(reled_family)}, "
                         f"not of {cfg.algorithm.method!r}")  # fmt: skip


def register(app: typer.Typer) -> None:
    from cosim.cli import bench_app

    register_bench(bench_app)

    @app.command("train")
    @shortcut_options("scenario", "method", "episodes", "seed", "agents", "eval_every", "eval_seed", "time_limit", "horizon", "plans",
                      "demos", "expert", "backend", "executor", "ray_address", "rollout_workers",
                      tree=lambda: experiment_class(TrainConfig))  # fmt: skip
    def train_cmd(
        shortcuts: dict,
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Run directory (default runs/<scenario>-<method>-s<seed>)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
        independent: bool = typer.Option(
            False, "--independent", help="One network per agent instead of sharing (algorithm.ppo.shared=false)."
        ),
        config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
        set_: list[str] = typer.Option(
            [], "--set", help=SET_HELP + " A bare key (lr, w0) names the one setting it ends."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Train a MARL method (or run a baseline) with periodic greedy evaluation and checkpoints."""
        from agents.base import TrainError
        from agents.methods import check_method
        from agents.runner import train

        shortcuts["algorithm.ppo.shared"] = False if independent else None
        cfg = resolve_train(config, set_, shortcuts)
        spec = check_method(cfg.algorithm.method)
        _check_own_settings(cfg)
        if shortcuts["algorithm.demos"] is not None and not spec.needs_demos:
            raise TrainError(f"--demos is for methods that learn from demonstrations, not {cfg.algorithm.method!r}")
        cities = cfg.scenario.cities()
        name = cfg.scenario.name if len(cities) == 1 else "+".join(Path(c).name for c in cities)
        run = cfg.run
        out_dir = out or (Path(run.out) if run.out else Path("runs") / f"{name}-{cfg.algorithm.method}-s{run.seed}")
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(run, out=str(out_dir)))
        if resume and not (Path(out_dir) / "config.json").is_file():
            raise TrainError(f"--resume: {out_dir} holds no run to continue (no config.json); "
                             "leave out --resume to start one")  # fmt: skip
        res = train(cfg, out_dir, resume=resume, progress=not quiet)
        ev = res["last_eval"] or res["last_train"]
        mtt, arr = ev.get("mean_travel_time"), ev.get("arrival_rate")
        if len(res["last_evals"]) > 1:  # several cities: each one's last evaluation
            for city, row in res["last_evals"].items():
                if row.get("mean_travel_time") is not None:
                    typer.echo(f"  {city}: eval mean travel time {row['mean_travel_time']:.1f} s, arrival rate "
                               f"{row.get('arrival_rate', 0):.2f} (episode {row.get('episode')})")  # fmt: skip
        typer.echo(
            f"{cfg.algorithm.method} on {name}: {res['episodes']} episodes, {res['env_steps']} decisions, "
            f"{res['wall_s']:.0f} s, SUMO faults {res['sumo_faults']}; "
            + (
                f"{ev.get('phase', '')} mean travel time {mtt:.1f} s, arrival rate {arr:.2f}; "
                if mtt is not None
                else ""
            )
            + f"metrics in {Path(res['out']) / 'metrics.jsonl'}"
        )


def register_bench(bench_app: typer.Typer) -> None:
    @bench_app.command("throughput")
    def bench_throughput(
        scenario: str = typer.Option("helsinki", "--scenario", "-s", help="City name or a built scenario folder."),
        agents: int = typer.Option(100, "--agents", "-n", help="Controlled agents."),
        workers: str = typer.Option("1,2", "--workers", "-w", help="Worker counts to compare (1,2,4 or auto)."),
        method: str = typer.Option("ippo", "--method", "-m", help="The learner trained."),
        iterations: int = typer.Option(
            4, "--iterations", help="Iterations per worker count (episodes = workers x it; the first is a warm-up)."
        ),
        seed: int = typer.Option(0, "--seed"),
        as_json: bool = typer.Option(False, "--json", help="JSON only: a list, one object per worker count."),
        config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    ) -> None:
        """Training throughput with 1..N rollout workers: decisions/s (updates included), speedup, efficiency,
        where the time goes and peak memory (learner and each worker)."""
        import json

        from agents.bench import throughput
        from core.errors import check_positive, check_seed
        from core.procs import free_cores

        check_positive("--agents", agents)
        check_positive("--iterations", iterations)
        if iterations < 2:
            from agents.base import TrainError

            raise TrainError(f"--iterations must be at least 2 (the first is a warm-up), got {iterations}")
        check_seed("--seed", seed)
        counts = []
        for part in workers.split(","):
            n = parse_workers(part.strip())
            counts.append(free_cores() if n == 0 else n)
        if 1 not in counts:
            counts.insert(0, 1)  # the speedup's yardstick
        base = resolve_train(config, set_, {})
        from agents.methods import check_method

        check_method(method)
        rows = throughput(scenario, agents, counts, method=method, iterations=iterations, seed=seed, base=base)
        if not as_json:
            for r in rows:
                sh = "  ".join(f"{k} {v:.0%}" for k, v in r["share"].items())
                mem = f"learner {r['learner_peak_mb']:.0f} MiB" + (
                    f", workers {'/'.join(f'{m:.0f}' for m in r['worker_peak_mb'])} MiB" if r["worker_peak_mb"] else ""
                )
                busy = f", workers busy {r['worker_busy']:.0%}" if r.get("worker_busy") is not None else ""
                typer.echo(f"{r['workers']} workers: {r['decisions_per_s']:.0f} decisions/s, speedup {r['speedup']:.2f}, "
                           f"efficiency {r['efficiency']:.2f}{busy}; {sh}; peak {mem}", err=True)  # fmt: skip
        print(json.dumps(rows, indent=None if as_json else 1))


def main(argv: list[str] | None = None) -> None:
    from core.errors import standalone

    standalone(register, "MARL training (the same commands as `cosim train`).", argv)


if __name__ == "__main__":
    main()
