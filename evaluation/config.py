"""The whole configuration tree of an experiment: every command reads it, every run records it.

Sections (BenchMARL-style, each with its own dataclass and defaults):

* ``scenario``  `scenarios.recipe.ScenarioConfig`  which city
* ``env``       `cosim.config.EnvConfig`            the environment (agents, horizon, observation, reward, backend)
* ``algorithm`` `agents.config.AlgorithmConfig`     the method, PPO and RELED hyperparameters, plans, demos
* ``sed``       `llm.config.SEDSettings`            the LLM and the SED loop for demonstrations made on demand
* ``run``       `agents.config.RunConfig`           budget, seeds, evaluation cadence, workers, output

`cosim train`, `compare`, `demos`, `demo`, `simulate` resolve it from the defaults, ``--config FILE``
(TOML, or a run's config.json), their shortcut flags and ``--set section.key=value``; the resolved tree
is each run's config.json and W&B config, decides resume compatibility, and is handed whole to every
run of a comparison and to the demonstrations provider. No setting travels through the environment
(only secrets and endpoints do).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.config import TrainConfig
from llm.config import SEDSettings


@dataclass
class ExperimentConfig(TrainConfig):
    sed: SEDSettings = field(default_factory=SEDSettings)

    # how the LLM is reached and its answers cached does not make another run
    RESUMABLE_CHANGES = TrainConfig.RESUMABLE_CHANGES + (
        "sed.threads", "sed.cache", "sed.cache_file", "sed.request_timeout", "sed.retry_attempts",
        "sed.retry_initial_wait",
    )  # fmt: skip

    def check(self) -> None:
        super().check()
        problems = self.sed.problems()
        if problems:
            from agents.base import TrainError

            raise TrainError("; ".join(problems))
