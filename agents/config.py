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

import math
from dataclasses import dataclass, field, fields

from core.settings import nest, to_dict, update
from core.shortcuts import SHORTCUTS as TABLE
from cosim.config import EnvConfig
from scenarios.recipe import ScenarioConfig


@dataclass
class PPOConfig:
    """PPO hyperparameters. IPPO and MAPPO use the same instance (only the critic's input differs)."""

    lr: float = 1e-3
    gamma: float = 0.99  # per decision (the env is a semi-MDP: one transition per decision)
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    update_epochs: int = 4
    minibatch_size: int = 256
    norm_adv: bool = True
    target_kl: float | None = None  # stop the epochs early once the approx. KL exceeds it
    hidden: int = 64
    shared: bool = True  # parameter sharing across agents; False: one actor and one critic per agent
    # shared networks only: a learned per-agent embedding added to the first hidden layer (the "agent
    # indication" of parameter-sharing MARL; equivalent to a one-hot agent id in the input). Zero-initialised,
    # so the initial outputs and every other initial parameter are those of the plain shared network.
    # None: the method's choice (on for RELED and its variants, whose expert plans are per agent; off
    # for IPPO and MAPPO)
    agent_id: bool | None = None

    @classmethod
    def from_dict(cls, d: dict) -> PPOConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def problems(self) -> list[str]:
        """What is wrong with these values (type or range), one phrase each; empty when all is well.
        Checked before a run starts, so a bad ``--set`` never costs an episode or leaves a run behind."""
        out = []
        for f in fields(self):
            v, kind = getattr(self, f.name), str(f.type)
            if v is None and "None" in kind:
                continue
            if kind.startswith("bool"):
                ok, want = isinstance(v, bool), "true or false"
            elif kind.startswith("int"):
                ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
            else:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                want = "a finite number"
            if not ok:
                out.append(f"{f.name} must be {want}, got {v!r}")
        if out:
            return out
        for name in ("lr", "clip_coef", "max_grad_norm", "update_epochs", "minibatch_size", "hidden"):
            if getattr(self, name) <= 0:
                out.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("ent_coef", "vf_coef"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.target_kl is not None and self.target_kl <= 0:
            out.append(f"target_kl must be > 0 or null, got {self.target_kl}")
        return out


@dataclass
class RELEDSettings:
    """The expert term of RELED, LEED and the ablations (this project's formalisation and defaults)."""

    w0: float = 5.0  # weight scale
    eta: float = 0.9  # per-iteration decay of the expert signal (1.0: none): halves every ~6.6 iterations
    d0: float = 100.0  # m: DTW distance at which phi = 1/2 (ratio) or 1 - 1/e (exp)
    phi: str = "ratio"  # ratio: d / (d + d0); exp: 1 - exp(-d / d0)
    bc_batch: int = 4096  # expert samples per minibatch at most (all of them when fewer)
    pretrain: int = 2000  # BC-only Adam steps on the actor before the first episode (DAPG-style warm start)

    PHIS = ("ratio", "exp")

    def problems(self) -> list[str]:
        out = []
        if not (math.isfinite(self.w0) and self.w0 >= 0):
            out.append(f"w0 must be a finite number >= 0, got {self.w0}")
        if not 0 < self.eta <= 1:
            out.append(f"eta must be in (0, 1], got {self.eta}")
        if not (math.isfinite(self.d0) and self.d0 > 0):
            out.append(f"d0 must be a positive number of metres, got {self.d0}")
        if self.phi not in self.PHIS:
            out.append(f"phi must be one of {', '.join(self.PHIS)}, got {self.phi!r}")
        if self.bc_batch <= 0:
            out.append(f"bc_batch must be positive, got {self.bc_batch}")
        if self.pretrain < 0:
            out.append(f"pretrain must be >= 0 (gradient steps), got {self.pretrain}")
        return out


@dataclass
class AlgorithmConfig:
    method: str = "ippo"  # see `cosim train --help` for the list
    ppo: PPOConfig = field(default_factory=PPOConfig)  # IPPO, MAPPO, RELED and its variants share it
    reled: RELEDSettings = field(default_factory=RELEDSettings)  # the expert term (RELED, LEED, ablations)
    plans: str | None = None  # replay: JSON file agent id -> list of edge ids
    demos: str | None = None  # expert demonstrations folder (`cosim demos --out DIR`); None: made by SED


@dataclass
class RunConfig:
    episodes: int = 50  # training episodes per run
    seed: int = 0  # network init, sampling, SUMO seeds of training episodes (and SED's seed)
    eval_every: int = 5  # greedy evaluation every K training episodes (and before the first, after the last); 0: never
    eval_seed: int = 10_000  # SUMO seed of every evaluation episode
    seeds: int = 3  # compare: seeds per method (0 .. N-1)
    workers: int | None = None  # compare: parallel runs (None: one per core, at most one per run)
    rollout_workers: int = 1  # train: processes running episodes for one learner (0: one per free core)
    executor: str = "local"  # compare's runs and train's rollout workers: local (processes) or ray
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
        """Ranges and names the types cannot say, checked before any work: one-line TrainError. (The
        method's name is the method registry's to check: agents.runner.validate.)"""
        from agents.base import TrainError
        from core.errors import UserError, check_positive, check_seed

        run, env = self.run, self.env
        try:
            check_positive("--episodes", run.episodes)
            check_positive("--eval-every", run.eval_every, zero_ok=True)
            check_positive("--agents", env.n_agents)
            check_positive("--horizon", env.horizon)
            check_positive("--seeds", run.seeds)
            check_positive("--workers", run.workers)
            check_positive("--workers (run.rollout_workers)", run.rollout_workers, zero_ok=True)
            check_seed("--seed", run.seed)
            check_seed("--eval-seed", run.eval_seed)
        except UserError as exc:
            raise TrainError(str(exc)) from None
        if env.backend not in ("libsumo", "traci"):
            raise TrainError(f"--backend must be libsumo or traci, got {env.backend!r}")
        if run.executor not in ("local", "ray"):
            raise TrainError(f"--executor must be local or ray, got {run.executor!r}")
        self._check_rollout_workers()
        problems = self.algorithm.ppo.problems() + self.algorithm.reled.problems()
        if problems:
            raise TrainError("; ".join(problems))

    def _check_rollout_workers(self) -> None:
        """One rule for rollout workers: each runs one episode per iteration on its own core, so more
        workers than episodes would idle and more local workers than cores would only contend (a Ray
        cluster counts its own CPUs when the workers are placed)."""
        from agents.base import TrainError

        n, episodes = self.run.rollout_workers, self.run.episodes
        if n > episodes:
            raise TrainError(f"--workers {n} is more than --episodes {episodes}: each worker runs one episode per "
                             "iteration, so the extra ones would have nothing to do")  # fmt: skip
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
