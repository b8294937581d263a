"""RELED's Hybrid Expert-Agent Policy Optimisation (HPO), LEED and the ablations, on the PPO core.

**This project's own formalisation.** The RELED paper (arXiv 2511.19368) is public only as an
abstract: it says that a "Hybrid Expert-Agent Policy Optimization module adaptively balances each
agent's learning from both expert-generated and agent-generated trajectories". The loss, the weight
and every constant below are ours, not the paper's:

* per agent i:  ``L_i = L_PPO,i + w_i * L_BC,i``  with  ``L_BC,i = -mean_{s in E_i} log pi(a_s | o_s)``
  over agent i's expert samples ``E_i`` (observation, action mask and action recorded by executing the
  LLM's plans through the same env, see ``llm.sed``);
* ``w_i = w0 * eta**k * phi(DTW_i)``: ``k`` is the training iteration (the number of training episodes
  before the current update, starting at 0), ``DTW_i`` the dynamic-time-warping distance (metres,
  ``dtaidistance.dtw_ndim.distance_fast``: square root of the summed squared point distances along the
  optimal warping path) between the (x, y) sequence of agent i's latest training trajectory (the
  episode whose samples the update learns from; edge midpoints from ``env.trajectory``) and the (x, y)
  sequence of its expert trajectory (``expert_traces.json``);
* ``phi(d) = d / (d + d0)`` (default, ``phi="ratio"``) or ``1 - exp(-d / d0)`` (``phi="exp"``): bounded
  in [0, 1), increasing, 0 when the agent drove the expert's route; ``d0`` (default 100 m, about one
  block of central Helsinki: an agent that left the expert's route for one block gets about half the
  weight, one that drove another route across town nearly all of it) is the distance at which the
  ratio map gives half the weight. So the expert pulls harder on the agents that strayed from it, and
  the whole expert signal decays geometrically with k. An agent without a trajectory (never departed)
  gets ``phi = 1``.
* Defaults ``w0 = 5``, ``eta = 0.9`` (the signal halves every ~6.6 iterations: 12 % is left after 20,
  0.5 % after 50), ``d0 = 100 m`` and ``pretrain = 2000``, chosen on helsinki (100 agents, 50 episodes)
  with training seed 0 only; seeds 1 and 2 were not used to choose them.
* Warm start (``pretrain``, default 2000 Adam steps, a few seconds on a CPU): before the first episode the
  actor is fitted to the expert samples by behaviour cloning alone (every agent weighted 1), as DAPG
  (Rajeswaran et al., 2018) does before its decaying demonstration-augmented policy gradient. It uses
  the demonstrations only, no environment episode.
* Agent indication: the LLM's plan is a choice per trip, not a function of the observation, so a
  shared policy that does not know which agent it drives can only learn the most common expert
  action. The RELED family therefore runs PPO's shared networks with ``PPOConfig.agent_id = True`` (a
  learned per-agent embedding, zero-initialised) unless ``--set agent_id=false``; IPPO/MAPPO accept the
  same switch (``--set agent_id=true``), so the comparison can hold it fixed.
* With shared parameters the update minimises the mean over agents: ``L = L_PPO + (1/M) sum_i w_i
  L_BC,i`` (``L_PPO`` the usual minibatch mean; M agents with expert samples). Every PPO minibatch
  adds the BC term on all expert samples (or on a random ``bc_batch`` of them, re-weighted to stay
  unbiased, when there are more).

Variants (all share this code, see ``agents.methods``):

==================  =================================  ====================================
method              weight                             demonstrations
==================  =================================  ====================================
``reled``           ``w0 * eta**k * phi(DTW_i)``       SED's accepted/best plans (``DIR``)
``reled-nosed``     ``w0 * eta**k * phi(DTW_i)``       round 1, unvalidated (``DIR/first_round``)
``reled-fixedw``    ``w0`` (no DTW, no decay)          SED (``DIR``)
``leed``            ``w0`` (no DTW, no decay)          round 1, unvalidated (``DIR/first_round``)
``expert-replay``   no learning: replays ``DIR/plans.json`` through the replay baseline
==================  =================================  ====================================

LEED (arXiv 2509.14680) is likewise represented by this project's reading of its abstract: a fixed
expert-loss weight and one-shot LLM demonstrations.

Logged in the first episode's row (usually the evaluation before training): ``pretrain_steps``,
``pretrain_bc_nll``, ``pretrain_agreement_before`` / ``pretrain_agreement``. Logged per training episode
(metrics row): ``bc_nll`` (the unweighted agent-mean BC loss, averaged over
minibatches), ``bc_term`` (the weighted term added to the loss), ``expert_agreement`` (fraction of
expert samples on which the greedy policy picks the expert's action, after the update), ``reled_k``,
``reled_decay`` (``eta**k``), ``bc_weight_mean/min/max``, ``dtw_mean/min/max`` and the full per-agent
vectors ``bc_weights`` / ``dtw`` (rounded, in the order of ``config.json``'s ``method.demo_agents``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from agents.base import TrainError
from agents.config import RELEDSettings
from agents.marl import PPOLearner
from agents.ppo.core import ActorCritic, Batch, PPOConfig
from cosim import demos as demofiles
from cosim.demos import Demonstrations

PHIS = RELEDSettings.PHIS


# ------------------------------------------------------------------------------------ settings
@dataclass
class RELEDConfig(RELEDSettings):
    """The settings of the tree's ``algorithm.reled`` section plus what the method fixes: ``adaptive``
    (False: w_i = w0 for every agent and iteration, LEED and reled-fixedw)."""

    adaptive: bool = True

    @classmethod
    def from_settings(cls, settings: RELEDSettings, adaptive: bool) -> RELEDConfig:
        problems = settings.problems()
        if problems:
            raise TrainError("; ".join(problems))
        return cls(**{f.name: getattr(settings, f.name) for f in fields(RELEDSettings)}, adaptive=adaptive)


# -------------------------------------------------------------------------------- the weights
def phi(d: np.ndarray, d0: float, kind: str = "ratio") -> np.ndarray:
    """Bounded increasing map of a DTW distance to [0, 1); NaN (no trajectory) maps to 1."""
    d = np.asarray(d, dtype=np.float64)
    out = d / (d + d0) if kind == "ratio" else -np.expm1(-d / d0)
    return np.where(np.isnan(d), 1.0, out)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """DTW distance between two (n, 2) position sequences (metres); NaN when either is empty."""
    from dtaidistance import dtw_ndim

    a = np.ascontiguousarray(a, dtype=np.double).reshape(-1, 2)
    b = np.ascontiguousarray(b, dtype=np.double).reshape(-1, 2)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(dtw_ndim.distance_fast(a, b))


def reled_weights(dtw: np.ndarray, k: int, cfg: RELEDConfig) -> np.ndarray:
    """``w_i = w0 * eta**k * phi(DTW_i)`` (adaptive) or ``w0`` (fixed), one per agent."""
    dtw = np.asarray(dtw, dtype=np.float64)
    if not cfg.adaptive:
        return np.full(dtw.shape, cfg.w0)
    return cfg.w0 * cfg.eta**k * phi(dtw, cfg.d0, cfg.phi)


# ------------------------------------------------------------------------------ demonstrations
def load_demos(folder: str | Path) -> Demonstrations:
    """The demonstrations set of a run (``cosim.demos.read``); a bad folder is a TrainError, like every
    other bad training input."""
    try:
        return demofiles.read(folder)
    except demofiles.DemosError as exc:
        raise TrainError(str(exc)) from None


def load_expert_plans(folder: str | Path) -> dict[str, list[str]]:
    """``plans.json`` of a demonstrations folder as agent id -> edge ids (what the replay baseline takes)."""
    try:
        return {a: p.edges for a, p in demofiles.read_plans(folder).items()}
    except demofiles.DemosError as exc:
        raise TrainError(str(exc)) from None


# -------------------------------------------------------------------------------------- learner
class RELEDLearner(PPOLearner):
    """PPO (IPPO-style local critic by default) plus the per-agent weighted expert term.

    ``demos`` is a folder (see `load_demos`), or on several cities one folder per city in the run's
    order of cities; ``cfg.adaptive`` selects RELED's DTW/decay weight or a fixed ``w0``. State kept
    across episodes and checkpoints: the iteration counter ``k``, the last weights and DTW distances,
    and the demonstrations' digest (a resume with other demonstrations is refused).
    """

    def __init__(
        self,
        ppo: PPOConfig,
        demos: str | Path | list,
        rcfg: RELEDConfig,
        name: str = "reled",
        critic: str = "local",
    ):
        super().__init__(ppo, critic=critic, name=name)
        self.rcfg = rcfg
        # read now: a bad folder fails before SUMO starts
        self.demo_sets = [load_demos(f) for f in (demos if isinstance(demos, (list, tuple)) else [demos])]
        self.digest = "+".join(d.digest for d in self.demo_sets)
        self.extra_loss = self.bc_loss
        self.k = 0
        self.pretrained = rcfg.pretrain == 0  # the warm start runs once, before the first episode
        self._pending_logs: dict = {}

    # -------------------------------------------------------------------------------- setup
    def setup(self, env) -> None:
        """Match every city's expert samples to that city's agents. Agents are numbered across the run's
        cities (city after city) for the per-agent weights and DTW distances; on one city that is the
        env's own order."""
        super().setup(env)
        several = len(self.city_envs) > 1
        cities = [(c.name, c.agents) for c in self.city_envs] if several else [("", list(env.possible_agents))]
        if len(cities) != len(self.demo_sets):
            raise TrainError(f"{len(self.demo_sets)} demonstrations folders for {len(cities)} cities: give one per "
                             "city, in the order of --scenario")  # fmt: skip
        parts, self.expert, self.city_agents, offset = [], [], [], 0
        for c, ((city, agents), d) in enumerate(zip(cities, self.demo_sets)):
            where = f" for {city}" if several else ""
            if d.obs.shape[1] != self.obs_size or d.mask.shape[1] != self.n_actions:
                raise TrainError(
                    f"demonstrations in {d.folder}{where} have observations of size {d.obs.shape[1]} and "
                    f"{d.mask.shape[1]} actions; this env has {self.obs_size} and {self.n_actions} (other observation "
                    "or max_actions?)"
                )
            # demo agent index -> the city's agent index (agents are matched by id; others are left out)
            index = {a: i for i, a in enumerate(agents)}
            to_city = np.array([index.get(a, -1) for a in d.agents], dtype=np.int64)
            lidx = to_city[d.agent] if d.n else np.zeros(0, dtype=np.int64)
            keep = lidx >= 0
            if not keep.any():
                raise TrainError(
                    f"none of the {len(set(d.agents))} agents in {d.folder} is among this env's "
                    f"{len(agents)} agents{' of ' + city if several else ''} (other scenario or --agents?)"
                )
            parts.append((d.obs[keep], d.mask[keep], d.action[keep], lidx[keep] + offset))
            for i in np.unique(lidx[keep]):
                self.expert.append((offset + int(i), c, agents[i], d.positions(agents[i])))
            self.city_agents.append((offset, len(agents)))
            offset += len(agents)
        self.n_all = offset
        self.bc_obs, self.bc_mask, self.bc_act, self.bc_agent = (
            torch.from_numpy(np.concatenate([p[j] for p in parts])) for j in range(4)
        )
        # the agents that have expert samples, in run order: the weight/DTW vectors follow it
        self.demo_idx = np.array([g for g, *_ in self.expert], dtype=np.int64)
        self.demo_names = [f"{cities[c][0]}/{a}" if several else a for _, c, a, _ in self.expert]
        self.bc_count = torch.from_numpy(np.bincount(self.bc_agent.numpy(), minlength=offset).astype(np.float64))
        self.weights = np.zeros(offset)
        self.dtw = np.full(offset, np.nan)
        self._set_sample_coef()

    def _set_sample_coef(self) -> None:
        """Per expert sample: w_i / (n_i * M), so that sum_s coef_s * nll_s = (1/M) sum_i w_i L_BC,i."""
        m = max(len(self.demo_idx), 1)
        w = torch.from_numpy(self.weights).to(torch.float32)
        n = self.bc_count.to(torch.float32).clamp(min=1)
        self.bc_coef = (w / (n * m))[self.bc_agent]
        self.bc_mean = (1.0 / (n * m))[self.bc_agent]  # the unweighted agent-mean NLL's coefficients

    def describe(self) -> dict:
        d = super().describe()
        r = self.rcfg
        d["reled"] = {
            "weight": "w0 * eta**k * phi(DTW_i)" if r.adaptive else "w0 (fixed)",
            "w0": r.w0, "eta": r.eta, "d0": r.d0, "phi": r.phi, "adaptive": r.adaptive, "bc_batch": r.bc_batch,
            "pretrain": r.pretrain,
            "formalisation": "this project's own (the RELED paper is public only as an abstract)",
        }  # fmt: skip
        d["demos"] = {"folder": ", ".join(str(x.folder) for x in self.demo_sets), "digest": self.digest,
                      "samples": int(len(self.bc_act)), "dropped_samples": sum(x.dropped for x in self.demo_sets),
                      "agents": len(self.demo_names)}  # fmt: skip
        d["demo_agents"] = self.demo_names
        return d

    # -------------------------------------------------------------------------------- the loss
    def bc_loss(self, mb: Batch, policy: ActorCritic) -> tuple[torch.Tensor, dict]:
        """``(1/M) sum_i w_i L_BC,i`` on the expert samples (all, or an unbiased random ``bc_batch``)."""
        n = len(self.bc_act)
        if n > self.rcfg.bc_batch:
            idx = torch.randint(n, (self.rcfg.bc_batch,))
            scale = n / self.rcfg.bc_batch
        else:
            idx, scale = slice(None), 1.0
        nll = -policy.log_prob(self.bc_obs[idx], self.bc_mask[idx], self.bc_act[idx], self.bc_agent[idx])
        term = (self.bc_coef[idx] * nll).sum() * scale
        if self.pretrained:
            with torch.no_grad():
                mean_nll = (self.bc_mean[idx] * nll).sum() * scale
            return term, {"bc_term": term.detach(), "bc_nll": mean_nll}
        return term, {"bc_nll_grad": term}  # during the warm start (bc_coef = bc_mean)

    def pretrain(self) -> dict:
        """Behaviour cloning alone (agent-mean NLL, every agent weighted 1) for ``rcfg.pretrain`` Adam steps
        on the actor, before any environment episode: a DAPG-style warm start that costs no env samples."""
        opt = torch.optim.Adam(self.policy.actor.parameters(), lr=self.cfg.lr, eps=1e-5)
        saved = self.bc_coef
        self.bc_coef = self.bc_mean  # uniform weights: plain BC
        before = self.expert_agreement()
        nll = float("nan")
        t0 = time.perf_counter()
        try:
            for _ in range(self.rcfg.pretrain):
                _, logs = self.bc_loss(None, self.policy)
                loss = logs["bc_nll_grad"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                nll = float(loss.detach())
        finally:
            self.bc_coef = saved
            self.pretrained = True
        self.timers["torch_update"] = self.timers.get("torch_update", 0.0) + time.perf_counter() - t0
        return {"pretrain_steps": self.rcfg.pretrain, "pretrain_bc_nll": nll,
                "pretrain_agreement_before": before, "pretrain_agreement": self.expert_agreement()}  # fmt: skip

    # -------------------------------------------------------------------------------- episodes
    def begin_episode(self, env, train: bool) -> None:
        super().begin_episode(env, train)
        if not self.pretrained:
            self._pending_logs = self.pretrain()  # reported in this episode's metrics row

    def agent_dtw(self, env) -> np.ndarray:
        """DTW distance of every agent with expert samples in this episode's city (run order): latest
        trajectory vs expert; NaN elsewhere."""
        g = env.graph
        out = np.full(self.n_all, np.nan)
        for i, city, name, expert_xy in self.expert:
            if city == self.city:
                traj = env.trajectory(name)
                xy = g.xy[[g.index[e] for _, e in traj]] if traj else np.zeros((0, 2))
                out[i] = dtw_distance(xy, expert_xy)
        return out

    def _set_weights(self, dtw: np.ndarray, cities, k: int) -> None:
        """The weights after iteration k: the DTW distances of the cities its episodes drove in replace
        theirs (an agent without a trajectory there: NaN, phi = 1); other cities keep their last ones."""
        new = self.dtw.copy()
        for c in cities:
            lo, n = self.city_agents[c]
            new[lo : lo + n] = dtw[lo : lo + n]
        w = np.zeros(self.n_all)
        w[self.demo_idx] = reled_weights(new[self.demo_idx], k, self.rcfg)
        self.weights, self.dtw = w, new
        self._set_sample_coef()

    def before_rollouts(self) -> dict:
        """The warm start, in the learner, before the first weights go out to the rollout workers."""
        if self.pretrained:
            return {}
        return self.pretrain()

    def end_episode(self, env, train: bool, faulted: bool) -> dict:
        if self.collect_only:  # a rollout worker: the samples and this episode's DTW go to the learner
            dtw = None
            if train and not faulted and self.rcfg.adaptive and any(self.traj.values()):
                dtw = self.agent_dtw(env)
            super().end_episode(env, train, faulted)
            if self._payload is not None:
                self._payload["city"] = self.city
                if dtw is not None:
                    self._payload["dtw"] = dtw
            return {}
        pending, self._pending_logs = self._pending_logs, {}
        if not train:
            return pending
        k = self.k
        self.k += 1  # a lost (faulted) episode still counts as an iteration, like its env steps
        logs: dict = {"reled_k": k, **pending}
        if faulted or not any(self.traj.values()):
            return {**super().end_episode(env, train, faulted), **logs}
        dtw = self.agent_dtw(env) if self.rcfg.adaptive else np.full(self.n_all, np.nan)
        self._set_weights(dtw, [self.city], k)
        logs.update(super().end_episode(env, train, faulted))
        logs.update(self._weight_logs(k))
        return logs

    def learn(self, payloads: list[dict | None]) -> dict:
        """One iteration on several workers' episodes: the weights follow each agent's mean DTW over them."""
        k = self.k
        self.k += 1
        logs: dict = {"reled_k": k}
        good = [p for p in payloads if p is not None]
        if not good:
            return {**self.update_on(good), **logs}
        n = self.n_all
        if self.rcfg.adaptive:
            d = np.stack([p.get("dtw", np.full(n, np.nan)) for p in good])
            seen = np.isfinite(d).sum(axis=0)
            dtw = np.where(seen > 0, np.nansum(np.where(np.isfinite(d), d, 0.0), axis=0) / np.maximum(seen, 1), np.nan)
        else:
            dtw = np.full(n, np.nan)
        self._set_weights(dtw, {p.get("city", 0) for p in good}, k)
        logs.update(self.update_on(good))
        logs.update(self._weight_logs(k))
        return logs

    def _weight_logs(self, k: int) -> dict:
        w = self.weights[self.demo_idx]
        out = {
            "reled_decay": self.rcfg.eta**k if self.rcfg.adaptive else 1.0,
            "bc_weight_mean": float(w.mean()), "bc_weight_min": float(w.min()), "bc_weight_max": float(w.max()),
            "bc_weights": [round(float(x), 5) for x in w],
            "expert_agreement": self.expert_agreement(),
        }  # fmt: skip
        if self.rcfg.adaptive:
            d = self.dtw[self.demo_idx]
            fin = d[np.isfinite(d)]
            out.update(
                dtw_mean=float(fin.mean()) if len(fin) else None,
                dtw_min=float(fin.min()) if len(fin) else None,
                dtw_max=float(fin.max()) if len(fin) else None,
                dtw_missing=int(len(d) - len(fin)),
                dtw=[round(float(x), 1) if math.isfinite(x) else None for x in d],
            )
        return out

    @torch.no_grad()
    def expert_agreement(self) -> float:
        """Fraction of expert samples where the greedy policy picks the expert's action."""
        lp = self.policy.log_probs(self.bc_obs, self.bc_mask, self.bc_agent)
        return float((lp.argmax(-1) == self.bc_act).float().mean())

    # -------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        st = super().state_dict()
        st["reled"] = {
            "k": self.k,
            "weights": torch.from_numpy(self.weights.copy()),
            "dtw": torch.from_numpy(self.dtw.copy()),
            "demos_digest": self.digest,
            "pretrained": self.pretrained,
            "settings": self._settings(),
        }
        return st

    def _settings(self) -> dict:
        """The resolved settings that shape training (defaults included): a resume must not change them."""
        r = self.rcfg
        return {"w0": r.w0, "eta": r.eta, "d0": r.d0, "phi": r.phi, "adaptive": r.adaptive, "bc_batch": r.bc_batch,
                "pretrain": r.pretrain, "agent_id": self.cfg.agent_id}  # fmt: skip

    def load_weights(self, state: dict, same_agents: bool = True, observation: tuple[str, str] = ("", "")) -> dict:
        """Another run's policy as this run's start (a fine-tune): it replaces the behaviour-cloning warm
        start; the expert term goes on with this run's demonstrations from k = 0."""
        loaded = super().load_weights(state, same_agents=same_agents, observation=observation)
        self.pretrained = True
        return loaded

    def load_state_dict(self, state: dict) -> None:
        r = state["reled"]
        if r["demos_digest"] != self.digest:
            folders = ", ".join(str(x.folder) for x in self.demo_sets)
            raise TrainError(
                f"the demonstrations in {folders} differ from those this run was trained on "
                f"(digest {self.digest} != {r['demos_digest']}); use the original --demos folder"
            )
        old, new = r.get("settings"), self._settings()
        if old is not None and old != new:  # e.g. a default changed between the run and its resumption
            keys = [k for k in new if old.get(k) != new[k]]
            was = ", ".join(f"{k}={old.get(k)!r}" for k in keys)
            now = ", ".join(f"{k}={new[k]!r}" for k in keys)
            raise TrainError(f"this run was trained with {was} (now {now}); pass them with --set to continue it")
        super().load_state_dict(state)
        self.k = int(r["k"])
        self.pretrained = bool(r.get("pretrained", True))
        self.weights = r["weights"].numpy().astype(np.float64)
        self.dtw = r["dtw"].numpy().astype(np.float64)
        self._set_sample_coef()
