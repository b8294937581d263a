"""MARL learners and non-learning baselines, all driven by one training runner.

* `agents.config`    the algorithm and run sections of the configuration tree (RELEDSettings, TrainConfig)
* `agents.ppo`       the PPO core (GAE, clipped loss, masks, shared/independent networks, extra-loss hook) and
                     its hyperparameters (`agents.ppo.config.PPOConfig`)
* `agents.marl`      IPPO / MAPPO on the env's semi-MDP (one transition per agent decision)
* `agents.reled`     RELED's hybrid expert-agent optimisation (PPO + DTW/decay-weighted expert loss), LEED
                     and the ablations (this project's formalisation; the paper is public only as an abstract)
* `agents.baselines` random, free-flow shortest, SUMO rerouting device, plan replay
* `agents.methods`   the ``--method`` registry and the demonstrations provider hook (``set_demo_provider``)
* `agents.runner`    ``train(TrainConfig, out)``: episodes, greedy evaluations, metrics.jsonl, checkpoints, resume
* `agents.cli`       ``register(app)`` adds ``cosim train``
* `agents.plot`, `agents.bench`  learning curves (PNG) and throughput / time split from metrics.jsonl

Imports stay light here: torch loads only when a learner is built.
"""
