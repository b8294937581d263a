"""The `cosim` console script, and its own commands `simulate` and `bench overhead`.

The script is built here, but most commands belong to layers above this one (training, the LLM,
comparisons), which this layer may not import. They plug in instead, the way pytest plugins do: each
package names a ``register(app)`` function under the entry-point group ``cosim.commands``
(pyproject.toml), and may name a hook under ``cosim.configure``. Every hook runs before the first
command module is imported, so the top layer hands the whole configuration tree to every command's
options whatever order the plugins come in. A researcher's own package adds a command the same way.

Heavy imports (torch, SUMO, LangChain) happen inside the commands, so `cosim --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer

from core.errors import RunFailed, check_positive, check_seed, run_app
from core.settings import experiment_class
from core.shortcuts import shortcut_options
from cosim.config import EnvConfig
from cosim.errors import CosimError


@dataclass
class _EnvTree:
    """The tree `simulate` reads when this layer runs on its own (`cosim` gives it the whole tree)."""

    env: EnvConfig = field(default_factory=EnvConfig)


bench_app = typer.Typer(help="Benchmarks (speed is measured here, never in tests).", no_args_is_help=True)


def _scenario(name: str):
    from scenarios import ensure_built

    return ensure_built(name)


def _agents_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CosimError(f"--agents takes integers separated by commas, got {text!r}") from None
    if not out or any(n <= 0 for n in out):
        raise CosimError(f"--agents must be positive, got {text!r}")
    return out


@shortcut_options("agents", "backend", tree=lambda: experiment_class(_EnvTree), short=False)
def simulate(
    shortcuts: dict,
    scenario: str = typer.Argument("helsinki", help="City name or a built scenario folder."),
    policy: str = typer.Option("shortest", help="random | shortest"),
    seed: int = typer.Option(0, help="SUMO seed of the episode."),
    gui: bool = typer.Option(False, "--gui", help="Show the run in sumo-gui (needs a display)."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML (or a run's config.json): its env section is used."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override an env setting: env.key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
) -> None:
    """Run one episode with a fixed policy and print its metrics."""
    import dataclasses
    import time

    from core.settings import resolve
    from cosim.env import VehicleRoutingEnv
    from cosim.errors import SumoFault
    from cosim.policies import make_policy

    check_seed("--seed", seed)
    check_positive("--agents", shortcuts["env.n_agents"], zero_ok=True)  # 0: a plain run of imported demand
    env_cfg = resolve(experiment_class(_EnvTree), config, set_, {**shortcuts, "env.gui": gui or None}).env
    act = make_policy(policy, seed)
    env = VehicleRoutingEnv(_scenario(scenario), dataclasses.replace(env_cfg, control="policy"))
    backend = env_cfg.backend
    try:
        t0 = time.perf_counter()
        try:
            obs, _ = env.reset(seed=seed)
        except SumoFault as exc:
            raise RunFailed(f"SUMO could not start the episode: {str(exc).strip()[:300]}") from None
        while env.agents:
            obs, *_ = env.step(act(env, obs))
        metrics = dict(env.metrics, wall_s=round(time.perf_counter() - t0, 3), policy=policy, backend=backend)
    finally:
        env.close()
    if as_json:
        print(json.dumps(_clean(metrics)))
    if metrics.get("sumo_fault"):  # no metrics to speak of: never a success
        raise RunFailed(f"SUMO failed during the episode: {getattr(env, 'last_fault', '?')}")
    if as_json:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{env.scenario.name}: one episode, policy={policy}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    Console().print(table)


def _clean(d: dict) -> dict:
    """JSON has no NaN: report missing values as null."""
    from core.jsonio import clean_dict

    return clean_dict(d)


@bench_app.command("overhead")
def bench_overhead(
    scenario: str = typer.Option("helsinki", help="City name or a built scenario folder."),
    agents: str = typer.Option("100", help="Number of agents; several (50,100,300) = scaling mode."),
    backend: str = typer.Option("libsumo", help="libsumo | traci | both (side by side)"),
    seed: int = typer.Option(0),
    repeat: int = typer.Option(5, help="Interleaved (env, bare sumo) pairs; ratio = median of the pair ratios."),
    instructions: bool = typer.Option(
        False, "--instructions", help="Also count both sides' instructions with valgrind (slow, load-independent)."
    ),
    reference: bool = typer.Option(
        False,
        "--reference",
        help="Also time, in the same runs, the simplest hand-written event-driven loop and SUMO stepping alone.",
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON only (one object, or a list in scaling mode)."),
) -> None:
    """Env with the `shortest` policy vs bare `sumo` on identical traffic: ratio = env_s / sumo_s."""
    from cosim.bench import overhead

    ns = _agents_list(agents)
    backends = ["libsumo", "traci"] if backend == "both" else [backend]
    for b in backends:
        if b not in ("libsumo", "traci"):
            raise CosimError(f"unknown backend {b!r} (libsumo, traci or both)")
    check_positive("--repeat", repeat)
    check_seed("--seed", seed)
    sc = _scenario(scenario)
    if not sc.imported and max(ns) > len(sc.trip_pool):
        # a generated scenario grows its agent pool for the largest count: the same background, and the
        # pool's first trips unchanged (scenarios/trips.py samples in order)
        from scenarios import ensure_built

        print(f"{sc.name}: growing the agent pool to {max(ns)} trips", file=sys.stderr)
        sc = ensure_built(scenario, agent_pool=max(ns))
    rows = []
    for n in ns:
        for b in backends:
            row = overhead(sc, n, backend=b, seed=seed, repeat=repeat, instructions=instructions, reference=reference)
            rows.append(row)
            if not as_json:
                print(
                    f"{row['scenario']} N={n:<4} {b:<8} sumo {row['sumo_s']:.3f}s  env {row['env_s']:.3f}s  "
                    f"ratio {row['ratio']:.3f}  decisions {row['decisions']} ({row['decisions_per_s']:.0f}/s)"
                    + (f"  instructions ratio {row['instructions_ratio']:.3f}" if instructions else "")
                    + (
                        f"  reference loop ratio {row['reference_ratio']:.3f}"
                        f"  stepping alone {row['stepping_ratio']:.3f}"
                        if reference
                        else ""
                    ),
                    file=sys.stderr,
                )
    out = rows[0] if len(rows) == 1 else rows
    print(json.dumps(out, indent=None if as_json else 1))


def _numbers(text: str, flag: str, kind=float) -> list:
    try:
        out = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CosimError(f"{flag} takes numbers separated by commas, got {text!r}") from None
    if not out or any(v < 0 for v in out):
        raise CosimError(f"{flag} takes non-negative numbers separated by commas, got {text!r}")
    return out


@bench_app.command("rerouting")
def bench_rerouting(
    scenario: str = typer.Option("helsinki", "--scenario", "-s", help="City name or a built scenario folder."),
    agents: int = typer.Option(100, "--agents", "-n", help="Controlled agents (they carry the device)."),
    periods: str = typer.Option("0,30,60,120", help="Re-routing periods in s (0: route once, at departure)."),
    steps: str = typer.Option("18,30,60,180", help="Adaptation steps: how many speed samples SUMO averages."),
    interval: float = typer.Option(1.0, help="Adaptation interval in s (one speed sample every this many s)."),
    seeds: int = typer.Option(3, help="Episodes per setting (SUMO seeds 0, 1, ...)."),
    as_json: bool = typer.Option(False, "--json", help="JSON only: one object per setting."),
) -> None:
    """Sweep SUMO's rerouting device on the agents: the strongest setting is sumo-rerouting's default."""
    from cosim.bench import rerouting_sweep

    check_positive("--agents", agents)
    check_positive("--seeds", seeds)
    if interval <= 0:
        raise CosimError(f"--interval must be a positive number of seconds, got {interval:g}")
    rows = rerouting_sweep(_scenario(scenario), agents, _numbers(periods, "--periods"),
                           [max(int(v), 1) for v in _numbers(steps, "--steps", int)], interval, seeds)  # fmt: skip
    if not as_json:
        best = min(rows, key=lambda r: r["mean_travel_time"])
        for r in rows:
            mark = "  <- strongest" if r is best else ""
            print(f"period {r['period']:>5g} s  steps {r['adaptation_steps']:>4}  agents {r['mean_travel_time']:7.1f} "
                  f"± {r['mean_travel_time_std']:5.1f} s  all vehicles {r['all_vehicles_mean_travel_time']:7.1f} s{mark}",
                  file=sys.stderr)  # fmt: skip
    print(json.dumps(rows, indent=None if as_json else 1))


CONFIGURE_GROUP, COMMANDS_GROUP = "cosim.configure", "cosim.commands"

app = typer.Typer(
    name="cosim",
    help="LLM-guided multi-agent RL on real OpenStreetMap cities in SUMO (RELED).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("simulate")(simulate)
app.add_typer(bench_app, name="bench")


@functools.cache
def build() -> typer.Typer:
    """`app` with every plugin's commands. The configure hooks run first, before any command module is
    imported: command modules build their options (with the tree's defaults) when they are imported.
    Once per process."""
    from importlib.metadata import entry_points

    for hook in entry_points(group=CONFIGURE_GROUP):
        hook.load()()
    for register in entry_points(group=COMMANDS_GROUP):
        register.load()(app)
    return app


def main() -> None:
    run_app(build())
