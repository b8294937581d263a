"""PPO's hyperparameters: one dataclass, the ``algorithm.ppo`` section of the configuration tree.

Kept apart from `agents.ppo.core` so that reading the tree (every `cosim` start, every ``--help``) does
not import torch; the two files are the PPO algorithm read together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from core.settings import limit_problems, limits


@dataclass
class PPOConfig:
    """PPO hyperparameters. IPPO and MAPPO use the same instance (only the critic's input differs)."""

    lr: float = field(default=1e-3, metadata=limits(gt=0))
    gamma: float = field(
        default=0.99, metadata=limits(ge=0, le=1)
    )  # per decision (the env is a semi-MDP: one transition per decision)
    gae_lambda: float = field(default=0.95, metadata=limits(ge=0, le=1))
    clip_coef: float = field(default=0.2, metadata=limits(gt=0))
    clip_vloss: bool = True
    ent_coef: float = field(default=0.01, metadata=limits(ge=0))
    vf_coef: float = field(default=0.5, metadata=limits(ge=0))
    max_grad_norm: float = field(default=0.5, metadata=limits(gt=0))
    update_epochs: int = field(default=4, metadata=limits(gt=0))
    minibatch_size: int = field(default=256, metadata=limits(gt=0))
    norm_adv: bool = True
    target_kl: float | None = field(
        default=None, metadata=limits(gt=0)
    )  # stop the epochs early once the approx. KL exceeds it
    hidden: int = field(default=64, metadata=limits(gt=0))
    shared: bool = True  # parameter sharing across agents; False: one actor and one critic per agent
    # shared networks only: a learned per-agent embedding added to the first hidden layer (the "agent
    # indication" of parameter-sharing MARL; equivalent to a one-hot agent id in the input). Zero-initialised,
    # so the initial outputs and every other initial parameter are those of the plain shared network.
    # None: the method's choice (on for RELED and its variants, whose expert plans are per agent; off
    # for IPPO and MAPPO)
    agent_id: bool | None = None
    # a logit bonus for action 0, the env's first candidate (with live continuations the navigation app's
    # choice): an untrained policy then drives like the app plus exploration (3.0: ~90 % action 0 among
    # three candidates) and learns a residual over it. 0: a plain policy, every action alike at the start
    action_prior: float = field(default=0.0, metadata=limits(ge=0, le=20))
    # the exploration schedule: the prior moves linearly from action_prior (training episode 1) to
    # action_prior_end (episode action_prior_episodes and after); None: constant. With rollout workers
    # an iteration's episodes share the prior of its first episode (one update, one policy)
    action_prior_end: float | None = field(default=None, metadata=limits(ge=0, le=20))
    action_prior_episodes: int = field(default=0, metadata=limits(ge=0))
    # how a policy acts outside training (evaluations, `cosim evaluate`, compare's final figures): "greedy"
    # takes each agent's most likely action; "sample" draws from the policy with a generator seeded by the
    # episode's SUMO seed (reproducible, and the same draws for every checkpoint). In a congestion game a
    # shared greedy policy sends every agent in the same state the same way; the sampled one splits them
    eval_actions: str = field(default="greedy", metadata=limits(choices=("greedy", "sample")))

    def prior_at(self, episode: int) -> float:
        """The action prior of training episode `episode` (1-based) under the schedule."""
        start, end, n = self.action_prior, self.action_prior_end, self.action_prior_episodes
        if end is None:
            return float(start)
        if episode >= n:
            return float(end)
        return float(start + (end - start) * (episode - 1) / (n - 1))

    @classmethod
    def from_dict(cls, d: dict) -> PPOConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def type_problems(self) -> list[str]:
        """Values of the wrong type, one phrase each (a tree built in Python skips the --set parser's type
        check); the ranges are the fields' `limits`."""
        out = []
        for f in fields(self):
            v, kind = getattr(self, f.name), str(f.type)
            if v is None and "None" in kind:
                continue
            if kind.startswith("bool"):
                ok, want = isinstance(v, bool), "true or false"
            elif kind.startswith("str"):
                ok, want = isinstance(v, str), "a word"
            elif kind.startswith("int"):
                ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
            else:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                want = "a finite number"
            if not ok:
                out.append(f"{f.name} must be {want}, got {v!r}")
        return out

    def problems(self) -> list[str]:
        """What is wrong with these values (type or range), one phrase each; empty when all is well.
        Checked before a run starts, so a bad ``--set`` never costs an episode or leaves a run behind."""
        return self.type_problems() or limit_problems(self)
