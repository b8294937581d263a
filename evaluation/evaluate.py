"""`cosim evaluate`: run a trained policy greedily on a city (typically one it never saw).

The environment's observation is city-independent (a fixed number of candidate edges, each described
by relative or normalised features; see cosim/features.py), so a policy trained on one city runs on any
other: for PPO-family learners (IPPO, MAPPO, RELED, LEED, ablations) a PPO learner with the run's PPO
settings is set up on the new city and the checkpoint's *actor* weights are loaded (acting greedily
needs nothing else — no demonstrations); other methods are rebuilt from the run's config. A centralised
critic (MAPPO) is sized by the city's number of edges and is not needed to act greedily, so it is left
out when it does not fit. RELED's per-agent embedding is the training city's: on any other city (or
another agent count) every agent acts with the mean of its rows. Independent per-agent networks
(``--independent``) only fit the same number of agents.

    cosim evaluate --checkpoint runs/helsinki-ippo-s0 --scenario kouvola --episodes 3 --json

Episode i (0-based) uses the SUMO seed ``--seed + i`` (default: the run's evaluation seed). The metrics
are the training runner's: mean travel time, arrival rate, return, teleports, decisions, time split.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from core.errors import UserError, check_positive, check_seed
from core.settings import SET_HELP

EVAL_METRICS = ("mean_travel_time", "arrival_rate", "return", "teleports", "mean_travel_time_arrived",
                "all_vehicles_mean_travel_time", "decisions")  # fmt: skip


class EvaluateError(UserError):
    """Bad input to `cosim evaluate`: no checkpoint there, one that cannot run on the city, …"""


def resolve_checkpoint(path: str | Path) -> Path:
    from agents.runner import CHECKPOINT

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise EvaluateError(f"no checkpoint at {path} (give a run directory holding {CHECKPOINT} or the file itself)")
    return p


def config_from_checkpoint(ck: dict, scenario: str, agents: int | None = None, horizon: float | None = None,
                           sets: list[str] | tuple[str, ...] = ()):  # fmt: skip
    """The run's tree (settings the checkpoint does not record take their defaults), moved to `scenario`
    with the given agent count and horizon (None: that city's own), then the `--set` overrides."""
    from dataclasses import replace

    from core.settings import SettingsError, from_dict, resolve
    from evaluation.config import ExperimentConfig

    try:
        cfg = from_dict(ExperimentConfig, ck.get("config") or {})
    except SettingsError as exc:
        raise EvaluateError(f"the checkpoint's configuration does not fit this version: {exc}") from None
    cfg = replace(cfg, scenario=replace(cfg.scenario, name=scenario),
                  env=replace(cfg.env, n_agents=agents, horizon=horizon))  # fmt: skip
    if sets:
        try:
            cfg = resolve(ExperimentConfig, None, sets, base=cfg)
        except SettingsError as exc:
            raise EvaluateError(str(exc)) from None
    return cfg


def load_weights(method, state: dict, *, same_agents: bool = True, observation: tuple[str, str] = ("", "")) -> dict:
    """A checkpoint's weights into a method set up for (possibly) another city (`Method.load_weights`,
    for PPO-family learners `agents.marl.load_policy`); what does not fit is an EvaluateError."""
    from agents.base import TrainError

    try:
        return method.load_weights(state, same_agents=same_agents, observation=observation)
    except TrainError as exc:
        raise EvaluateError(str(exc)) from None


def trained_name(ck: dict) -> str | None:
    """The city a checkpoint was trained on, as its run named it."""
    return ((ck.get("config") or {}).get("scenario") or {}).get("name")


def describe_observation(env_cfg) -> str:
    """An observation as a user names it: its registered name and the action width it is laid out for."""
    return f"observation {env_cfg.observation!r}, max_actions {env_cfg.max_actions}"


def rebuild(checkpoint: str | Path, scenario, *, agents: int | None = None, horizon: float | None = None,
            sets: list[str] | tuple[str, ...] = ()):  # fmt: skip
    """(cfg, method, env, ck, loaded) ready to act on `scenario` (a built Scenario)."""
    from agents.episode import make_env
    from agents.methods import make_method
    from agents.runner import load_checkpoint

    path = resolve_checkpoint(checkpoint)
    ck = load_checkpoint(path)
    cfg = config_from_checkpoint(ck, scenario=scenario.name, agents=agents, horizon=horizon, sets=sets)
    state = ck.get("method")
    if isinstance(state, dict) and "policy" in state:
        # a PPO-family learner (IPPO, MAPPO, RELED and its variants): acting greedily needs only its
        # actor, so a plain PPO learner with the run's PPO settings stands in (no demonstrations needed)
        from dataclasses import replace

        from agents.marl import PER_AGENT, PPOLearner
        from agents.methods import ppo_config

        ppo = replace(ppo_config(cfg), agent_id=PER_AGENT in state["policy"])  # as it was trained (on 1 or more cities)
        method = PPOLearner(ppo, critic="central" if cfg.method == "mappo" else "local", name=cfg.method)
    else:
        method = make_method(cfg)
    env = make_env(scenario, cfg, method.env_settings)
    saved_cfg = config_from_checkpoint(ck, scenario=str(trained_name(ck)))
    # the same city built the same way: the same agents, in the same order (their count is the shape's)
    same_agents = Path(str(trained_name(ck))).name == scenario.name and (
        cfg.scenario.overrides() == saved_cfg.scenario.overrides()
    )
    observation = (describe_observation(saved_cfg.env), describe_observation(cfg.env))
    try:
        method.setup(env)
        loaded = load_weights(method, ck["method"], same_agents=same_agents, observation=observation)
    except EvaluateError:
        env.close()
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        env.close()
        raise EvaluateError(
            f"cannot load {path} into {cfg.method} on {scenario.name}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return cfg, method, env, ck, loaded


def full_route(graph, edges: list[str]) -> list[str]:
    """The edges seen by the env (at and around decisions), joined by the free-flow paths between them:
    the route the vehicle drove (between decisions it follows the free-flow shortest path)."""
    idx = [graph.index[e] for e in edges if e in graph.index]
    if not idx:
        return []
    out = [idx[0]]
    for a, b in zip(idx, idx[1:]):
        if a == b:
            continue
        path = graph.path(a, b)
        out.extend(path[1:] if path and path[0] == a else [b])
    dedup = [out[0]] + [e for p, e in zip(out, out[1:]) if e != p]
    return [graph.edges[i] for i in dedup]


def greedy_episode(env, method, seed: int, routes: bool = False) -> tuple[dict, dict]:
    """One greedy (evaluation) episode: the runner's metrics row and, if asked, every agent's route."""
    import torch

    from agents.episode import run_episode

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = run_episode(env, method, seed, train=False)
    finally:
        torch.set_num_threads(old)
    out: dict = {}
    if routes and not row.get("sumo_fault"):
        for a in env.possible_agents:
            try:
                seen = [e for _, e in env.trajectory(a)]
            except (KeyError, AttributeError):
                continue
            r = full_route(env.graph, seen)
            if len(r) >= 2:
                out[a] = r
    return row, out


def evaluate_checkpoint(
    checkpoint: str | Path,
    scenario: str,
    episodes: int = 1,
    agents: int | None = None,
    horizon: float | None = None,
    seed: int | None = None,
    sets: list[str] | tuple[str, ...] = (),
) -> dict:
    """`cosim evaluate`: the checkpoint's policy on `scenario`, `episodes` seeds from `seed` on. `sets`
    (``--set``) change the run's settings for this evaluation: ``algorithm.ppo.eval_actions=sample``,
    ``scenario.demand_scale=1.5`` (the city is then built at that demand), env settings."""
    from evaluation.results import stats
    from scenarios import ensure_built

    try:
        check_positive("--episodes", episodes)
        check_positive("--agents", agents)
        check_positive("--horizon", horizon)
    except UserError as exc:
        raise EvaluateError(str(exc)) from None
    if seed is not None:
        check_seed("--seed", seed, count=episodes)
    resolve_checkpoint(checkpoint)  # a missing checkpoint is reported before building a city
    from core.settings import SettingsError, resolve
    from evaluation.config import ExperimentConfig

    try:
        overrides = resolve(ExperimentConfig, None, sets).scenario.overrides() if sets else {}
    except SettingsError as exc:
        raise EvaluateError(str(exc)) from None
    sc = ensure_built(scenario, **overrides)
    cfg, method, env, ck, loaded = rebuild(checkpoint, sc, agents=agents, horizon=horizon, sets=sets)
    trained = trained_name(ck)
    base = cfg.run.eval_seed if seed is None else seed
    rows = []
    try:
        for i in range(episodes):
            row, _ = greedy_episode(env, method, base + i)
            rows.append({"episode": i + 1, "seed": base + i, **row})
    finally:
        env.close()
    return {
        "checkpoint": str(resolve_checkpoint(checkpoint)),
        "method": cfg.method,
        "trained_on": trained,
        "trained_episodes": ck.get("episode"),
        "scenario": sc.name,
        "same_city": Path(str(trained)).name == sc.name,
        "agents": len(env.possible_agents),
        "actions": cfg.algorithm.ppo.eval_actions if getattr(method, "policy", None) is not None else "fixed",
        "loaded": loaded,
        "episodes": rows,
        "mean": {k: stats([r.get(k) for r in rows]) for k in EVAL_METRICS},
    }


def _print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"{res['method']} trained on {res['trained_on']} -> {res['scenario']} ({res['agents']} agents, "
        f"{res['actions']} actions)"
    )
    for c in ("episode", "seed", "mean travel time s", "arrival rate", "return", "teleports", "decisions"):
        t.add_column(c, justify="right")
    for r in res["episodes"]:
        t.add_row(str(r["episode"]), str(r["seed"]), f"{r.get('mean_travel_time', float('nan')):.1f}",
                  f"{r.get('arrival_rate', 0):.2f}", f"{r.get('return', 0):.2f}", str(r.get("teleports")),
                  str(r.get("decisions")))  # fmt: skip
    m = res["mean"]

    def fmt(k, p):
        s = m.get(k)
        return "-" if not s else f"{s['mean']:.{p}f} ± {s['std']:.{p}f}"

    t.add_row(
        "mean",
        "",
        fmt("mean_travel_time", 1),
        fmt("arrival_rate", 2),
        fmt("return", 2),
        fmt("teleports", 1),
        fmt("decisions", 0),
    )
    Console().print(t)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: Path = typer.Option(
            ..., "--checkpoint", "-c", help="A run directory (cosim train/compare) or its checkpoint.pt."
        ),
        scenario: str = typer.Option(
            ..., "--scenario", "-s", help="City to evaluate on (name, recipe, OSM file or built folder)."
        ),
        episodes: int = typer.Option(1, "--episodes", "-e", help="Greedy episodes (seeds --seed, --seed+1, ...)."),
        agents: int | None = typer.Option(None, "--agents", "-n", help="Controlled agents (default: the city's)."),
        horizon: float | None = typer.Option(None, "--horizon", help="Episode horizon in s (default: the city's)."),
        seed: int | None = typer.Option(
            None, "--seed", help="SUMO seed of the first episode (default: the run's evaluation seed)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        set_: list[str] = typer.Option(
            [], "--set", help=SET_HELP + " E.g. algorithm.ppo.eval_actions=sample, scenario.demand_scale=1.5."
        ),
    ) -> None:
        """Run a trained policy (greedily, unless the run samples) on any city and report the training metrics."""
        res = evaluate_checkpoint(checkpoint, scenario, episodes, agents, horizon, seed, sets=set_)
        if as_json:
            print(json.dumps(res, indent=1, default=str))
        else:
            _print_table(res)


def main(argv: list[str] | None = None) -> None:
    from core.errors import standalone

    standalone(register, "Generalisation: evaluate a checkpoint on another city (same as `cosim evaluate`).", argv)


if __name__ == "__main__":
    main()
