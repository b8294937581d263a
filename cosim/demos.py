"""The demonstrations folder that `cosim demos` writes and RELED, expert-replay, compare and the report read.

One module owns its layout, so that the writer (``llm.sed``) and the readers (``agents``, ``evaluation``)
cannot drift apart, and every reader gets the same checks and the same error messages. It lives in
cosim because the demonstrations are in exactly the env's observation/action format, and because both
agents/ and llm/ need it while neither may import the other.

Layout of one folder (``first_round/`` holds a second demonstrations set, without the SED files)::

    demos.npz           agent (index into agents.json), obs, mask, action, reward, done: one row per decision
    agents.json         index -> agent id
    expert_traces.json  agent id -> [[x, y, t], ...] (positions for RELED's DTW)
    plans.json          agent id -> {"edges": [...], "candidate": k}
    llm_log.jsonl       SED only: every prompt and answer
    rounds.json         SED only: the bounds per agent per round
    summary.json        SED only: the run's summary
    first_round/        SED only: round 1's unvalidated plans as a demonstrations set (LEED's one-shot demos)

numpy is imported only where arrays are read or written: the CLI, `compare` and the method registry
use the names and the JSON readers without loading it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

DEMOS_NPZ = "demos.npz"
AGENTS_JSON = "agents.json"
TRACES_JSON = "expert_traces.json"
PLANS_JSON = "plans.json"
LLM_LOG = "llm_log.jsonl"
ROUNDS_JSON = "rounds.json"
SUMMARY_JSON = "summary.json"
FIRST_ROUND = "first_round"
# what training needs, and what the digest covers: a resume must not learn from other demonstrations
TRAINING_FILES = (DEMOS_NPZ, AGENTS_JSON, TRACES_JSON)
# Everything `cosim demos` puts in its --out: a folder holding these and nothing else (at least the
# summary and the demonstrations) is an earlier output, which may be replaced; anything else is not ours.
OUTPUT_NAMES = frozenset(
    {DEMOS_NPZ, AGENTS_JSON, TRACES_JSON, PLANS_JSON, FIRST_ROUND, LLM_LOG, ROUNDS_JSON, SUMMARY_JSON}
)
_MAKE_ONE = "(make one with `cosim demos --out DIR`)"


class DemosError(UserError):
    """A demonstrations folder is missing, incomplete or corrupt. A UserError (one line, as is), defined
    here so that both the writer's and the readers' layers can raise and catch it."""


@dataclass(frozen=True)
class Plan:
    """One agent's expert plan: the route, and which of its candidate routes the LLM chose (None when a
    hand-made plans.json does not say)."""

    edges: list[str]
    candidate: int | None = None


@dataclass
class Demonstrations:
    """One demonstrations set in memory. Arrays, not per-agent lists, because training indexes them as
    one batch; ``agent`` indexes ``agents`` so the arrays stay numeric."""

    agents: list[str]  # index -> agent id
    agent: np.ndarray  # (n,) int64
    obs: np.ndarray  # (n, obs_size) float32
    mask: np.ndarray  # (n, max_actions) bool
    action: np.ndarray  # (n,) int64
    reward: np.ndarray | None = None  # (n,) float32: the reward that followed the action (absent in hand-made sets)
    done: np.ndarray | None = None  # (n,) bool: the agent's last action
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # agent id -> (m, 3): x, y (metres), t (s)
    plans: dict[str, Plan] = field(default_factory=dict)  # empty when the folder has no plans.json
    folder: Path | None = None  # where it was read from
    digest: str = ""  # sha256 over TRAINING_FILES (read only)
    dropped: int = 0  # samples read whose action was outside their mask (left out)

    @property
    def n(self) -> int:
        return len(self.action)

    def positions(self, agent: str) -> np.ndarray:
        """The (m, 2) expert positions of an agent; none (0, 2) for an agent without a trace, whom RELED
        then treats as never departed."""
        import numpy as np

        t = self.traces.get(agent)
        return np.zeros((0, 2)) if t is None else t[:, :2]


# ------------------------------------------------------------------------------------- writing
def write(folder: str | Path, d: Demonstrations) -> None:
    """The files of one demonstrations set (demos.npz, agents.json, expert_traces.json, plans.json).
    The SED files around it and the atomic replacement of an earlier output are the writer's
    (``llm.sed.write_outputs``), since what may be replaced is a policy of `cosim demos --out`."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = d.n
    arrays = {
        "agent": np.asarray(d.agent, dtype=np.int64),
        "obs": np.asarray(d.obs, dtype=np.float32),
        "mask": np.asarray(d.mask).astype(np.int8),
        "action": np.asarray(d.action, dtype=np.int64),
        "reward": np.zeros(n, np.float32) if d.reward is None else np.asarray(d.reward, dtype=np.float32),
        "done": np.zeros(n, bool) if d.done is None else np.asarray(d.done, dtype=bool),
    }
    np.savez_compressed(folder / DEMOS_NPZ, **arrays)
    (folder / AGENTS_JSON).write_text(json.dumps(list(d.agents)))
    (folder / TRACES_JSON).write_text(json.dumps({a: np.asarray(t).tolist() for a, t in d.traces.items()}))
    (folder / PLANS_JSON).write_text(
        json.dumps({a: {"edges": list(p.edges), "candidate": p.candidate} for a, p in d.plans.items()}, indent=1)
    )


def record(env, act, seed: int) -> tuple[Demonstrations, dict[str, float], dict]:
    """Run one episode with an expert policy ``act(env, obs) -> actions`` and record what it did in the
    env's own format: (the demonstrations, travel time per arrived agent, the episode's metrics). Every
    decision is one sample; its reward is what followed until the agent's next decision."""
    import numpy as np

    obs, _ = env.reset(seed=seed)
    cols: dict[str, list] = {"agent": [], "obs": [], "mask": [], "action": [], "reward": [], "done": []}
    last: dict[str, int] = {}
    index = {a: i for i, a in enumerate(env.possible_agents)}
    travel: dict[str, float] = {}
    while env.agents:
        acts = act(env, obs)
        for a, action in acts.items():
            last[a] = len(cols["agent"])
            cols["agent"].append(index[a])
            cols["obs"].append(obs[a]["observation"])
            cols["mask"].append(obs[a]["action_mask"])
            cols["action"].append(action)
            cols["reward"].append(0.0)
            cols["done"].append(False)
        obs, rew, _, _, infos = env.step(acts)
        for a, r in rew.items():
            if a in last:
                cols["reward"][last[a]] += r
        for a, i in infos.items():
            if "travel_time" in i:
                travel[a] = i["travel_time"]
                if a in last:
                    cols["done"][last[a]] = True
    g = env.graph
    n = len(cols["agent"])
    demos = Demonstrations(
        agents=list(env.possible_agents),
        agent=np.asarray(cols["agent"], dtype=np.int64),
        obs=np.asarray(cols["obs"], dtype=np.float32).reshape(n, env.obs_size),
        mask=np.asarray(cols["mask"], dtype=bool).reshape(n, env.config.max_actions),
        action=np.asarray(cols["action"], dtype=np.int64),
        reward=np.asarray(cols["reward"], dtype=np.float32),
        done=np.asarray(cols["done"], dtype=bool),
        traces={a: np.asarray([[*g.xy[g.index[e]], t] for t, e in env.trajectory(a)], dtype=np.float64).reshape(-1, 3)
                for a in env.possible_agents},
    )  # fmt: skip
    return demos, travel, dict(env.metrics)


# ------------------------------------------------------------------------------------- reading
def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TRAINING_FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def _trace(pts) -> np.ndarray:
    """Points [x, y, t] as an (m, 3) array; a point without its time (older or hand-made traces) gets NaN,
    since only the positions shape training."""
    import numpy as np

    rows = [(p[0], p[1], p[2] if len(p) > 2 else math.nan) for p in pts]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def read(folder: str | Path) -> Demonstrations:
    """A demonstrations set, checked before any training starts (a bad folder must not cost a SUMO run).
    Samples whose action lies outside their mask are left out and counted: the env could never take
    them. plans.json is read when present (a training-only set may lack it)."""
    import numpy as np

    folder = Path(folder)
    if not folder.is_dir():
        raise DemosError(f"demonstrations folder {folder} does not exist {_MAKE_ONE}")
    missing = [n for n in TRAINING_FILES if not (folder / n).is_file()]
    if missing:
        raise DemosError(f"demonstrations folder {folder} lacks {', '.join(missing)} {_MAKE_ONE}")
    try:
        with np.load(folder / DEMOS_NPZ) as z:
            agent = np.asarray(z["agent"], dtype=np.int64)
            obs = np.asarray(z["obs"], dtype=np.float32)
            mask = np.asarray(z["mask"]).astype(bool)
            action = np.asarray(z["action"], dtype=np.int64)
            reward = np.asarray(z["reward"], dtype=np.float32) if "reward" in z.files else None
            done = np.asarray(z["done"], dtype=bool) if "done" in z.files else None
        names = json.loads((folder / AGENTS_JSON).read_text())
        raw = json.loads((folder / TRACES_JSON).read_text())
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise DemosError(
            f"demonstrations in {folder} are unreadable ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    n = len(action)
    if not (isinstance(names, list) and isinstance(raw, dict)) or obs.ndim != 2 or mask.ndim != 2 or \
            not (len(agent) == len(obs) == len(mask) == n) or (n and (agent.min() < 0 or agent.max() >= len(names))) or \
            any(x is not None and len(x) != n for x in (reward, done)):  # fmt: skip
        raise DemosError(f"demonstrations in {folder} are inconsistent (array lengths or agent indices)")
    try:
        traces = {str(a): _trace(pts) for a, pts in raw.items()}
    except (TypeError, ValueError, IndexError, KeyError):
        raise DemosError(f"{folder / TRACES_JSON} must map agent ids to lists of [x, y, t]") from None
    plans = read_plans(folder, allow_empty=True) if (folder / PLANS_JSON).exists() else {}
    ok = (action >= 0) & (action < mask.shape[1])
    ok[ok] = mask[np.flatnonzero(ok), action[ok]]
    return Demonstrations(
        agents=[str(a) for a in names], agent=agent[ok], obs=obs[ok], mask=mask[ok], action=action[ok],
        reward=None if reward is None else reward[ok], done=None if done is None else done[ok],
        traces=traces, plans=plans, folder=folder, digest=_digest(folder), dropped=int((~ok).sum()),
    )  # fmt: skip


def _read_json(folder: Path, name: str):
    p = folder / name
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise DemosError(f"demonstrations folder {folder} has no {name}") from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise DemosError(f"{p} is not readable JSON ({exc})") from None


def read_plans(folder: str | Path, allow_empty: bool = False) -> dict[str, Plan]:
    """The expert plans, agent id -> Plan. Entries that are not a list of edge ids are left out (a bare
    list instead of {"edges": ...} is taken as the edges); a file with none left is an error, since a
    replay of no plans would silently drive everyone on its own."""
    folder = Path(folder)
    data = _read_json(folder, PLANS_JSON)
    plans = {}
    for a, v in data.items() if isinstance(data, dict) else ():
        edges = v.get("edges") if isinstance(v, dict) else v
        cand = v.get("candidate") if isinstance(v, dict) else None
        if isinstance(edges, list) and all(isinstance(e, str) for e in edges):
            ok = isinstance(cand, int) and not isinstance(cand, bool)
            plans[str(a)] = Plan(edges, cand if ok else None)
    if not plans and not (allow_empty and data == {}):
        raise DemosError(f'{folder / PLANS_JSON} holds no plans (expected agent -> {{"edges": [...]}})')
    return plans


def read_summary(folder: str | Path) -> dict:
    """summary.json of an SED output: what the run did (rounds, bounds, LLM calls, fallback shares)."""
    folder = Path(folder)
    data = _read_json(folder, SUMMARY_JSON)
    if not isinstance(data, dict):
        raise DemosError(f"{folder / SUMMARY_JSON} is not a JSON object (a `cosim demos` summary)")
    return data


def read_rounds(folder: str | Path) -> list[dict]:
    """rounds.json of an SED output: one record per round (bound, volatility, divergence per agent, ...)."""
    folder = Path(folder)
    data = _read_json(folder, ROUNDS_JSON)
    if not (isinstance(data, list) and all(isinstance(r, dict) for r in data)):
        raise DemosError(f"{folder / ROUNDS_JSON} is not a list of rounds (a `cosim demos` rounds file)")
    return data


# ------------------------------------------------------------------------------ earlier outputs
def is_earlier_output(names: set[str]) -> bool:
    """Whether a folder holding these names is an earlier `cosim demos` output (which that command may
    replace whole) rather than someone else's folder (which it must never delete)."""
    return {SUMMARY_JSON, DEMOS_NPZ} <= set(names) <= OUTPUT_NAMES
