"""`cosim generalize`: does a policy travel? Train one policy on several cities, run it zero-shot on
held-out cities it never saw, and set it there beside free-flow routes, SUMO's rerouting and the policy
trained on that city itself (the in-city reference, same training budget).

    cosim generalize -s helsinki,kouvola,cologne8.sumocfg --held-out ingolstadt21.sumocfg,adlershof -m ippo \
        --seeds 3 --episodes 50 --eval-episodes 5 [--fine-tune 10] --out gen

(any scenario reference: a shipped city, a recipe, an OSM file, a `.net.xml`, an imported `.sumocfg`
or a built folder; the RESCO scenarios come from the sumo-rl wheel, see docs/scenarios.md).

Folder (`--out`)::

    runs/multi-s{s}            the policy trained on the training cities, seed s
    runs/{city}-s{s}           the in-city reference: trained on that held-out city alone, seed s
    runs/{city}-tuned-s{s}     --fine-tune K: the multi-city policy, K more episodes on that city
    runs/{city}-{baseline}     shortest, sumo-rerouting and navigation there (no training: once per city)
    results.json, report.html  the table below; W&B gets each training run and a summary run

Every policy and baseline runs on the same `--eval-episodes` SUMO seeds from `--test-seed` (default
20000; no training episode uses them). Per held-out city and policy: the mean over those episodes of the
agents' mean travel time per run, then mean ± std and a 95 % interval over the training seeds (for a
baseline, which has no seeds, over its test episodes). The
generalisation gap is zero-shot ÷ in-city travel time, per seed. A rerun with the same settings resumes:
finished runs are kept, unfinished ones go on from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from core.errors import UserError

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"
FORMAT = 1
BASELINES = ("shortest", "sumo-rerouting", "navigation")  # free-flow routes, SUMO's device, a navigation app


class GeneralizeError(UserError):
    """Bad input to `cosim generalize`: held-out cities that overlap the training ones, …"""


def _slug(city: str) -> str:
    return Path(city).name.replace(".", "_").replace(",", "_") or "city"


def check_cities(train_cities: list[str], held_out: list[str], allow_overlap: bool) -> None:
    """Both lists, before anything is built: each city known, and held out means not trained on."""
    from scenarios.build import resolve

    if not held_out or not all(held_out):
        raise GeneralizeError("--held-out needs at least one city (comma-separated)")
    if len(set(held_out)) < len(held_out):
        raise GeneralizeError(f"--held-out {','.join(held_out)}: name each city once")
    for c in [*train_cities, *held_out]:
        resolve(c)
    both = [c for c in held_out if c in train_cities]
    if both and not allow_overlap:
        raise GeneralizeError(f"held-out cities {', '.join(both)} are also training cities: a zero-shot result "
                              "needs cities the policy never saw (--allow-overlap to evaluate there anyway)")  # fmt: skip


def _with(tree, cities: list[str], seed: int, **run):
    """The tree for one training run: these cities, this seed, the rest as given. Demonstrations given
    with --demos are the training cities'; a run on a held-out city gets its own from the provider."""
    sc = dataclasses.replace(tree.scenario, name=",".join(cities), names=())
    algorithm = tree.algorithm
    if cities != tree.scenario.cities():
        algorithm = dataclasses.replace(algorithm, demos=None)
    return dataclasses.replace(
        tree, scenario=sc, algorithm=algorithm, run=dataclasses.replace(tree.run, seed=seed, **run)
    )


def _train(cfg, out: Path, tags: list[str], log, init: Path | None = None) -> None:
    """One training run into `out`; a finished one is kept, an unfinished one resumed."""
    from agents.runner import CHECKPOINT, load_checkpoint
    from evaluation.tracking import tracked_train

    ck = out / CHECKPOINT
    if ck.is_file() and load_checkpoint(ck)["episode"] >= cfg.run.episodes:
        return
    from evaluation.compare import inject_fault

    log(f"training {out.name} ({cfg.algorithm.method} on {cfg.scenario.name}, {cfg.run.episodes} episodes)")
    # a run that stopped early is resumed; one that failed before its first checkpoint starts over
    resume = ck.is_file() or (out / "config.json").is_file()
    tracked_train(cfg, out, resume=resume, tags=tags, init=None if ck.is_file() else init,
                  on_row=lambda row: inject_fault(out.name, row))  # fmt: skip


def _attempt(failed: dict, name: str, log, fn):
    """One run's training and testing: a run that raises is recorded as failed and the study goes on
    without it (its folder stays; a rerun tries it again)."""
    from evaluation.tracking import scrub

    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the study
        failed[name] = scrub(f"{type(exc).__name__}: {str(exc)[:300]}")
        log(f"{name} failed ({failed[name]}); the study goes on without it")
        return None


def _evaluate(run: Path, city: str, episodes: int, seed: int, env) -> dict:
    """`cosim evaluate` of one run on one city, with the study's agent count and horizon; kept in the run's
    folder (`test-*.json`), so a rerun does not run it again."""
    from agents.runner import CHECKPOINT
    from core.jsonio import atomic_write
    from evaluation.evaluate import evaluate_checkpoint

    key = f"test-{_slug(city)}-{seed}-{episodes}-{env.n_agents}-{env.horizon}.json"
    kept = run / key
    if kept.is_file() and kept.stat().st_mtime_ns >= (run / CHECKPOINT).stat().st_mtime_ns:
        return json.loads(kept.read_text())
    res = evaluate_checkpoint(run, city, episodes=episodes, seed=seed, agents=env.n_agents, horizon=env.horizon)
    eps = res["episodes"]

    def mean(k: str) -> float | None:
        vals = [e.get(k) for e in eps if isinstance(e.get(k), (int, float))]
        return sum(vals) / len(vals) if vals else None

    out = {"run": str(run), "mean_travel_time": mean("mean_travel_time"), "arrival_rate": mean("arrival_rate"),
           "all_vehicles_mean_travel_time": mean("all_vehicles_mean_travel_time"), "agents": res["agents"],
           "per_episode": [e.get("mean_travel_time") for e in eps],
           "per_episode_all_vehicles": [e.get("all_vehicles_mean_travel_time") for e in eps],
           "per_episode_arrival_rate": [e.get("arrival_rate") for e in eps]}  # fmt: skip
    atomic_write(kept, json.dumps(out, indent=1))
    return out


def _summary(evals: list[dict]) -> dict | None:
    """Mean ± std and the 95 % interval over runs (training seeds) of each run's mean over the test
    episodes; a baseline (one run, no seeds): over its test episodes (`over` says which)."""
    from evaluation.results import stats

    if len(evals) == 1 and evals[0].get("seed") is None:
        (e,) = evals
        s = stats(e["per_episode"])
        over = "episodes"
        all_v, arr = stats(e.get("per_episode_all_vehicles") or []), stats(e.get("per_episode_arrival_rate") or [])
    else:
        s = stats([e["mean_travel_time"] for e in evals])
        over = "seeds"
        all_v = stats([e["all_vehicles_mean_travel_time"] for e in evals])
        arr = stats([e["arrival_rate"] for e in evals])
    if s is None:
        return None
    return {**s, "ci95": _ci95(s), "over": over, "all_vehicles": all_v, "arrival_rate": arr}


def _ci95(s: dict) -> float | None:
    """Half-width of the t interval of the mean (None for a single value)."""
    from scipy.stats import t

    n = s["n"]
    return float(t.ppf(0.975, n - 1) * s["std"] / n**0.5) if n > 1 else None


def generalize(tree, held_out: list[str], *, out: Path, seeds: int, eval_episodes: int, test_seed: int,
               fine_tune: int = 0, allow_overlap: bool = False, log=print) -> dict:  # fmt: skip
    """The whole protocol (module docstring); returns results.json's content."""
    from agents.runner import validate
    from evaluation.results import stats

    train_cities = tree.scenario.cities()
    check_cities(train_cities, held_out, allow_overlap)
    for n, v in (("--seeds", seeds), ("--eval-episodes", eval_episodes)):
        if v < 1:
            raise GeneralizeError(f"{n} must be a positive number, got {v}")
    if fine_tune < 0:
        raise GeneralizeError(f"--fine-tune must be >= 0 episodes, got {fine_tune}")
    validate(_with(tree, train_cities, 0))  # the method, its ranges and what several cities allow
    for c in held_out:
        validate(_with(tree, [c], 0))
    identity = {"format": FORMAT, "train": train_cities, "held_out": held_out, "method": tree.algorithm.method,
                "seeds": seeds, "episodes": tree.run.episodes, "fine_tune": fine_tune,
                "eval_episodes": eval_episodes, "test_seed": test_seed, "config": tree.identity()}  # fmt: skip
    out = _prepare(Path(out), identity)
    tags = [f"generalize-{_digest(identity)}"]
    t0 = time.perf_counter()
    runs = out / "runs"
    evals: dict[str, dict[str, list[dict]]] = {c: {} for c in held_out}
    failed: dict[str, str] = {}

    def trained_and_tested(run: Path, cfg, city: str, policy: str, seed: int | None = None, init=None) -> bool:
        def go():
            _train(cfg, run, tags, log, init=init)
            return _evaluate(run, city, eval_episodes, test_seed, tree.env)

        res = _attempt(failed, run.name, log, go)
        if res is not None:
            evals[city].setdefault(policy, []).append({**res, "seed": seed})
        return res is not None

    for c in held_out:
        for b in BASELINES:
            cfg = dataclasses.replace(_with(tree, [c], 0, episodes=1, eval_every=0, rollout_workers=1, policy_lag=0),
                                      algorithm=dataclasses.replace(tree.algorithm, method=b))  # fmt: skip
            trained_and_tested(runs / f"{_slug(c)}-{b}", cfg, c, b)
    for s in range(seeds):
        multi = runs / f"multi-s{s}"
        ok = _attempt(failed, multi.name, log,
                      lambda m=multi, s=s: _train(_with(tree, train_cities, s), m, tags, log) or True)  # fmt: skip
        for c in held_out:
            trained_and_tested(runs / f"{_slug(c)}-s{s}", _with(tree, [c], s), c, "in_city", s)
            if not ok:
                continue
            res = _attempt(failed, f"{multi.name} on {c}", log,
                           lambda m=multi, c=c: _evaluate(m, c, eval_episodes, test_seed, tree.env))  # fmt: skip
            if res is not None:
                evals[c].setdefault("zero_shot", []).append({**res, "seed": s})
            if fine_tune:
                workers = min(tree.run.rollout_workers, fine_tune)  # a short fine-tune may have fewer episodes
                tuned_cfg = _with(tree, [c], s, episodes=fine_tune, rollout_workers=workers,
                                  policy_lag=tree.run.policy_lag if workers > 1 else 0)  # fmt: skip
                trained_and_tested(runs / f"{_slug(c)}-tuned-s{s}", tuned_cfg, c, "fine_tuned", s, init=multi)
    cities = {}
    for c in held_out:
        e = evals[c]
        in_city = {i["seed"]: i["mean_travel_time"] for i in e.get("in_city", [])}
        gaps = [z["mean_travel_time"] / in_city[z["seed"]] for z in e.get("zero_shot", [])
                if z["mean_travel_time"] and in_city.get(z["seed"])]  # fmt: skip
        gap = stats(gaps)
        cities[c] = {"policies": {k: _summary(v) for k, v in e.items()}, "runs": e,
                     "gap": {**gap, "ci95": _ci95(gap)} if gap else None}  # fmt: skip
    res = {**{k: v for k, v in identity.items() if k != "config"}, "out": str(out), "cities": cities,
           "failed": failed, "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    from core.jsonio import atomic_write

    atomic_write(out / RESULTS_FILE, json.dumps(res, indent=1, default=str))
    from evaluation.report import write_generalization_report

    write_generalization_report(out, res)
    _log_wandb(tree, out, res, tags)
    return res


def _digest(identity: dict) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _prepare(out: Path, identity: dict) -> Path:
    """The output folder policy (`core/outputs.py`): new, empty or this study's own (a rerun resumes
    it); another study's folder is refused too."""
    from core.outputs import check_output

    out = check_output(out, "cosim generalize", lambda names: "generalize.json" in names, error=GeneralizeError)
    mine = out / "generalize.json"
    if mine.is_file():
        if json.loads(mine.read_text()).get("identity") != json.loads(json.dumps(identity, default=str)):
            raise GeneralizeError(f"{out} holds another generalisation study (other cities or settings); "
                                  "choose another --out")  # fmt: skip
        return out
    out.mkdir(parents=True, exist_ok=True)
    from core.jsonio import atomic_write

    atomic_write(mine, json.dumps({"identity": identity}, indent=1, default=str))
    return out


def _log_wandb(tree, out: Path, res: dict, tags: list[str]) -> None:
    """A W&B run holding the table (one row per held-out city and policy) and the gaps in its summary."""
    from evaluation.tracking import Tracker

    tracker = Tracker(
        tree,
        out / "wandb-summary",
        name="generalize",
        tags=tags,
        extra_config={
            "generalize": {k: res[k] for k in ("train", "held_out", "seeds", "episodes", "fine_tune", "eval_episodes")}
        },
    )
    if not tracker.start():
        return
    rows, summary = [], {}
    for city, c in res["cities"].items():
        for policy, s in c["policies"].items():
            if s:
                rows.append([city, policy, s["mean"], s["std"], s["n"]])
                summary[f"generalize/{city}/{policy}"] = s["mean"]
        if c["gap"]:
            summary[f"generalize/{city}/gap"] = c["gap"]["mean"]
    tracker.log_table("generalize/table", ["city", "policy", "mean_travel_time", "std", "runs"], rows, summary)
    tracker.finish()


# ------------------------------------------------------------------------------------------ CLI
def register(app) -> None:
    import typer

    from core.settings import SET_HELP
    from core.shortcuts import shortcut_options
    from evaluation.config import ExperimentConfig

    @app.command("generalize")
    @shortcut_options("scenario", "method", "seeds", "episodes", "agents", "horizon", "eval_every", "out",
                      tree=lambda: ExperimentConfig,
                      helps={"scenario": "Training cities, comma-separated (names, recipes, files or built folders).",
                             "out": "Study folder: runs, results.json, report.html (null: runs/generalize)."})  # fmt: skip
    def generalize_cmd(
        shortcuts: dict,
        held_out: str = typer.Option(..., "--held-out", help="Cities the policy never trains on, comma-separated."),
        eval_episodes: int = typer.Option(5, "--eval-episodes", help="Test episodes per policy and held-out city."),
        test_seed: int = typer.Option(20_000, "--test-seed", help="SUMO seed of the first test episode."),
        fine_tune: int = typer.Option(
            0, "--fine-tune", help="Also train the zero-shot policy K episodes on each held-out city."
        ),
        allow_overlap: bool = typer.Option(
            False, "--allow-overlap", help="Let held-out cities be training cities too."
        ),
        config: Path | None = typer.Option(None, "--config", help="TOML with any subset of the configuration tree."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print results.json to stdout."),
    ) -> None:
        """Train on several cities, run zero-shot on held-out ones against shortest, rerouting and the in-city policy."""
        from core.errors import check_seed
        from core.settings import resolve

        try:
            tree = resolve(ExperimentConfig, config, set_, shortcuts)
        except UserError as exc:
            raise GeneralizeError(str(exc)) from None
        check_seed("--test-seed", test_seed, count=eval_episodes if eval_episodes > 0 else 1)
        cities = [c.strip() for c in held_out.split(",")]
        out = Path(tree.run.out) if tree.run.out else Path("runs") / "generalize"
        res = generalize(tree, cities, out=out, seeds=tree.run.seeds, eval_episodes=eval_episodes,
                         test_seed=test_seed, fine_tune=fine_tune, allow_overlap=allow_overlap,
                         log=lambda m: print(m, file=sys.stderr))  # fmt: skip
        if as_json:
            print(json.dumps(res, indent=1, default=str))
            return
        for city, c in res["cities"].items():
            parts = [f"{k} {v['mean']:.1f}" for k, v in c["policies"].items() if v]
            gap = f"; gap {c['gap']['mean']:.3f}" if c["gap"] else ""
            print(f"{city}: " + ", ".join(parts) + f" s{gap}", file=sys.stderr)
        print(Path(res["out"]) / REPORT_FILE)
        if res["failed"]:
            print(f"warning: {len(res['failed'])} run(s) failed ({', '.join(res['failed'])}); the table leaves them out "
                  f"(errors in {Path(res['out']) / RESULTS_FILE}); a rerun tries them again", file=sys.stderr)  # fmt: skip
            raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    from core.errors import standalone

    standalone(register, "Generalisation studies (same as `cosim generalize`).", argv)


if __name__ == "__main__":
    main()
