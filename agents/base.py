"""The interface every method (learned or not) implements so that one runner drives them all."""

from __future__ import annotations

from core.errors import UserError


class TrainError(UserError):
    """Bad training input: unknown method, bad episode count, a clashing or corrupt run directory."""


class Method:
    """One way of steering the agents through the env, learned or not.

    The runner calls, per episode: ``begin_episode`` -> (``act`` -> env.step -> ``observe``)* ->
    ``end_episode``. ``train=False`` is an evaluation episode: a learner acts greedily and stores
    nothing. Learners update in ``end_episode`` (``faulted=True``: SUMO failed mid-episode, drop the
    data). ``timers`` accumulates seconds spent in torch (keys ``torch_infer``, ``torch_update``); the
    runner reads and resets it.
    """

    name: str = ""
    learns: bool = False
    # the env settings this method fixes, whatever the tree says (the free-flow baseline keeps free-flow
    # routes, SUMO's device needs no decisions); the tree's env section gives the rest
    env_settings: dict = {"control": "policy"}

    def __init__(self) -> None:
        self.timers: dict[str, float] = {}

    def setup(self, env) -> None:
        """Called once with the env before the first episode (sizes, agent names)."""

    def setup_cities(self, envs: list) -> None:
        """Training on several cities: called instead of `setup`, once, with one env per city (the first
        is where the run starts), for what a method must size or match on every city before it learns
        (MAPPO's global state, RELED's demonstrations per city)."""
        self.setup(envs[0])

    def schedule(self, episode: int) -> None:
        """Called by the learner before training episode `episode` (1-based), or before an iteration of
        rollout workers with its first episode: where a schedule (exploration) stands. What it changes
        must travel with the weights, so that workers act with it too."""

    def switch_env(self, env) -> None:
        """Called before an episode on another env than the last (a run on several cities): what the
        method keys by the env's agents follows it."""

    def begin_episode(self, env, train: bool) -> None:
        pass

    def act(self, env, obs: dict, train: bool) -> dict:
        raise NotImplementedError

    def observe(self, env, rew: dict, term: dict, trunc: dict, infos: dict) -> None:
        pass

    def end_episode(self, env, train: bool, faulted: bool) -> dict:
        """Learners update here; returns loss logs (floats) for the metrics row."""
        return {}

    # parallel rollouts (agents/workers.py): workers run episodes with ``collect_only`` set and hand
    # ``take_payload()`` to the learner, which calls ``learn`` on all of them once per iteration
    collect_only: bool = False

    def before_rollouts(self) -> dict:
        """Learner-side work before the first weights go out (a warm start); its logs join the first update."""
        return {}

    def take_payload(self) -> dict | None:
        return None

    def learn(self, payloads: list) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def load_weights(self, state: dict, same_agents: bool = True, observation: tuple[str, str] = ("", "")) -> dict:
        """Another run's weights as where this one starts or what it evaluates, on this run's city (which
        may be another): learners load what fits (`agents.marl.load_policy`); returns what was loaded."""
        self.load_state_dict(state)
        return {"actor": False, "critic": False, "agent_embedding": None}

    def describe(self) -> dict:
        """Resolved settings recorded in config.json."""
        return {}
