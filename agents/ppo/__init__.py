"""The PPO core (CleanRL style), in two files read together:

* `agents.ppo.config` - `PPOConfig`, the hyperparameters (no torch, so the configuration tree stays light)
* `agents.ppo.core`   - GAE, masked logits, the actor-critic networks, the clipped loss and the update

Nothing here imports the other files on package import, so ``import agents.ppo.config`` never loads torch.
"""
