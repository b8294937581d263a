"""The learning part of an experiment's configuration tree (BenchMARL-style sections kept apart).

``TrainConfig`` = ``scenario`` (which city) + ``env`` (`cosim.EnvConfig`) + ``algorithm`` (the method
and its hyperparameters) + ``run`` (budget, seeds, evaluation cadence, workers, output). The top layer
adds the ``sed`` section (`evaluation.config.ExperimentConfig`); agents/ never imports llm/, and hands
the whole tree it was given to the demonstrations provider.

Every default is written once, here or in the section's own dataclass. Commands resolve the tree from
the defaults, ``--config FILE``, their shortcut flags and ``--set section.key=value``
(`core.settings.resolve`), write it to the run's ``config.json`` and to W&B, and compare resumes
against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.ppo.config import PPOConfig
from core.errors import MAX_SEED
from core.flags import SHORTCUTS as TABLE
from core.settings import limit_problems, limits, nest, to_dict, update
from cosim.config import EnvConfig
from scenarios.recipe import ScenarioConfig


@dataclass
class RELEDSettings:
    """The expert term of RELED, LEED and the ablations (this project's formalisation and defaults)."""

    w0: float = field(default=5.0, metadata=limits(ge=0))  # weight scale
    eta: float = field(
        default=0.9, metadata=limits(gt=0, le=1)
    )  # per-iteration decay of the expert signal (1.0: none): halves every ~6.6 iterations
    d0: float = field(
        default=100.0, metadata=limits(gt=0)
    )  # m: DTW distance at which phi = 1/2 (ratio) or 1 - 1/e (exp)
    phi: str = field(
        default="ratio", metadata=limits(choices=("ratio", "exp"))
    )  # ratio: d / (d + d0); exp: 1 - exp(-d / d0)
    bc_batch: int = field(
        default=4096, metadata=limits(gt=0)
    )  # expert samples per minibatch at most (all of them when fewer)
    pretrain: int = field(
        default=2000, metadata=limits(ge=0)
    )  # BC-only Adam steps on the actor before the first episode (DAPG-style warm start)

    PHIS = ("ratio", "exp")

    def problems(self) -> list[str]:
        return limit_problems(self)


@dataclass
class AlgorithmConfig:
    method: str = "ippo"  # see `cosim train --help` for the list
    ppo: PPOConfig = field(default_factory=PPOConfig)  # IPPO, MAPPO, RELED and its variants share it
    reled: RELEDSettings = field(default_factory=RELEDSettings)  # the expert term (RELED, LEED, ablations)
    plans: str | None = None  # replay: JSON file agent id -> list of edge ids
    dua_iterations: int = field(default=30, metadata=limits(gt=0))  # dua: duaIterate.py's iterations
    demos: str | None = None  # expert demonstrations folder (`cosim demos --out DIR`); None: made on demand
    # who demonstrates when demonstrations are made (`cosim demos`, or on demand without --demos): the LLM
    # through SED, the navigation app or the agents' user equilibrium (llm/experts.py)
    expert: str = field(default="llm", metadata=limits(choices=("llm", "navigation", "dua")))


@dataclass
class RunConfig:
    episodes: int = field(default=50, metadata=limits(gt=0))  # training episodes per run
    seed: int = field(
        default=0, metadata=limits(ge=0, le=MAX_SEED, note="SUMO's seeds are 32-bit")
    )  # network init, sampling, SUMO seeds of training episodes (and SED's seed)
    eval_every: int = field(
        default=5, metadata=limits(ge=0)
    )  # greedy evaluation every K training episodes (and before the first, after the last); 0: never
    eval_seed: int = field(
        default=10_000, metadata=limits(ge=0, le=MAX_SEED, note="SUMO's seeds are 32-bit")
    )  # SUMO seed of every evaluation episode
    # s of simulated time after which a training episode is cut: its unfinished agents are truncated and
    # their values bootstrapped (no timeout penalty: the cut is not part of the task). Evaluations always
    # run the whole horizon. null: training episodes run the whole horizon too
    time_limit: float | None = field(default=None, metadata=limits(gt=0))
    seeds: int = field(default=3, metadata=limits(gt=0))  # compare: seeds per method (0 .. N-1)
    workers: int | None = field(
        default=None, metadata=limits(gt=0)
    )  # compare: parallel runs (None: one per core, at most one per run)
    rollout_workers: int = field(
        default=1, metadata=limits(ge=0)
    )  # train: processes running episodes for one learner (0: one per free core)
    # rollout workers: 0, each iteration's episodes act with the policy of the update just made (the learner
    # waits for them, the workers for its update); 1, with the policy one update older, so the workers run
    # the next episodes while the learner updates (PPO's ratio is taken against the policy that acted)
    policy_lag: int = field(default=0, metadata=limits(ge=0, le=1))
    executor: str = field(
        default="local", metadata=limits(choices=("local", "ray"))
    )  # compare's runs and train's rollout workers: local (processes) or ray
    ray_address: str | None = (
        None  # --executor ray: an existing cluster (host:port; else $RAY_ADDRESS, else a local one)
    )
    out: str | None = None  # output folder (None: the command's default)


SECTIONS = ("scenario", "env", "algorithm", "run")  # the tree of a training run


@dataclass
class TrainConfig:
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # settings that may change between a run and its resumption (and that do not make another run)
    RESUMABLE_CHANGES = ("run.episodes", "run.out", "run.seeds", "run.workers", "run.executor", "run.ray_address",
                         "env.backend", "env.gui", "env.label")  # fmt: skip

    def to_dict(self) -> dict:
        return to_dict(self)

    def identity(self) -> dict:
        """The settings that make this run what it is (config.json minus what may change on resume)."""
        d = self.to_dict()
        for path in self.RESUMABLE_CHANGES:
            section, key = path.split(".")
            d.get(section, {}).pop(key, None)
        return d

    # the flat names of the Python shortcut `of` -> tree paths: the command line's table (core/shortcuts.py)
    SHORTCUTS = {n: sc.path for n, sc in TABLE.items() if sc.path.split(".")[0] in SECTIONS}

    @classmethod
    def of(cls, ppo: dict | None = None, reled: dict | None = None, options: dict | None = None, **flat):
        """A tree from the shortcut names (``TrainConfig.of(method="ippo", episodes=4, agents=20)``), PPO
        settings (``ppo={"lr": 3e-4}``) and RELED settings (``reled={"w0": 0.2}``; ``options`` is the
        same with ``demos`` allowed among them, as ``--demos``)."""
        options = dict(options or {})
        if "demos" in options:
            flat["demos"] = options.pop("demos")
        reled = {**(reled or {}), **options}
        unknown = sorted(set(flat) - set(cls.SHORTCUTS))
        if unknown:
            raise TypeError(f"unknown shortcut(s) {unknown}; known: {sorted(cls.SHORTCUTS)}")
        data = nest({cls.SHORTCUTS[k]: v for k, v in flat.items()})
        data.setdefault("algorithm", {}).update({"ppo": dict(ppo or {}), "reled": dict(reled or {})})
        return update(cls(), data)

    def check(self) -> None:
        """Ranges and names the types cannot say, checked before any work: one-line TrainError. The ranges
        are the fields' own (`limits` in their metadata, one checker for the whole tree), each named by its
        flag where it has one; on top, what a training run needs. (The method's name is the method
        registry's to check: agents.runner.validate.)"""
        from agents.base import TrainError
        from core.flags import flag_of
        from core.settings import paths

        problems = self.algorithm.ppo.type_problems()
        problems += limit_problems(self, {p: flag_of(p) for p in paths(type(self)) if flag_of(p)})
        if self.env.n_agents == 0:
            problems.append("--agents must be a positive number, got 0 (0 agents is a plain `cosim simulate` run)")
        if problems:
            raise TrainError("; ".join(problems[:3]))
        self._check_rollout_workers()
        self._check_cities()

    def _check_cities(self) -> None:
        """Training on several cities: each at most once, and a learner with nothing tied to one city's
        agents (shared networks without a per-agent embedding; MAPPO's critic pads each city's global
        state, RELED takes one demonstrations set per city)."""
        from agents.base import TrainError

        cities = self.scenario.cities()
        if len(cities) < 2:
            return
        if len(set(cities)) < len(cities) or not all(cities):
            raise TrainError(f"--scenario {','.join(cities)}: name each city once")
        ppo = self.algorithm.ppo
        if not ppo.shared or ppo.agent_id:
            raise TrainError(
                f"training on several cities (--scenario {','.join(cities)}) takes shared networks without a "
                f"per-agent embedding (one city's agents are not another's), not "
                + ("--independent" if not ppo.shared else "algorithm.ppo.agent_id = true")
            )
        demos = [d for d in (self.algorithm.demos or "").split(",") if d.strip()]
        if demos and len(demos) != len(cities):
            n = len(demos)
            raise TrainError(f"--demos names {n} folder{'s' * (n != 1)} for {len(cities)} cities: give one per "
                             "city, comma-separated in the order of --scenario")  # fmt: skip

    def _check_rollout_workers(self) -> None:
        """One rule for rollout workers: each runs one episode per iteration on its own core, so more
        workers than episodes would idle and more local workers than cores would only contend (a Ray
        cluster counts its own CPUs when the workers are placed)."""
        from agents.base import TrainError

        n, episodes = self.run.rollout_workers, self.run.episodes
        if n > episodes:
            raise TrainError(f"--workers {n} is more than --episodes {episodes}: each worker runs one episode per "
                             "iteration, so the extra ones would have nothing to do")  # fmt: skip
        if self.run.policy_lag and n == 1 and self.run.executor == "local":
            raise TrainError("run.policy_lag = 1 overlaps the update with rollout workers' episodes, and one worker "
                             "runs in-process: use --workers 2 or more, or run.policy_lag = 0")  # fmt: skip
        if self.run.executor == "local" and n > 1:
            from core.procs import free_cores

            cores = free_cores()
            if n > cores:
                raise TrainError(f"--workers {n} is more than the {cores} cores this process may use (one SUMO per "
                                 f"worker); use at most {cores}, or --workers auto")  # fmt: skip

    # read-only shortcuts for the code that drives a run
    @property
    def method(self) -> str:
        return self.algorithm.method

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def rollout_workers(self) -> int:
        """Rollout worker processes for this run (0 in the tree: one per free core)."""
        if self.run.rollout_workers > 0:
            return int(self.run.rollout_workers)
        from core.procs import free_cores

        return max(1, min(free_cores(), self.run.episodes))
