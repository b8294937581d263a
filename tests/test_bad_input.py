"""The catalogue of bad input and faults, as a user meets them on the command line.

One table: a command line, the exit status it must end with and a fragment its one `error:` line must
hold. Every row runs the real `cosim` in a subprocess against the session's scenario cache; none may
print a traceback, and a failing command leaves nothing half-written where the row says so. New commands
and new checks join the table (the README's Reliability section lists what is covered).

Placeholders in a row's arguments and environment: ``{tmp}`` a fresh folder for the row, ``{helsinki}``
and ``{kouvola}`` the built scenario folders, ``{grid}`` a small SUMO scenario with its demand files, ``{home}`` the session's COSIM_HOME, ``{file}`` an existing
ordinary file, ``{closed}`` a 127.0.0.1 URL on which nothing listens.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Case:
    id: str
    args: list[str]
    code: int = 2
    message: str = ""  # a fragment of the single `error:` line (regular expression)
    env: dict = field(default_factory=dict)
    untouched: str | None = None  # a path (with placeholders) that must not exist afterwards
    timeout: float = 120
    setup: Callable[[dict], None] | None = None  # prepares files from the placeholders' values
    after: Callable[[dict], None] | None = None  # checks files afterwards (e.g. the user's are unchanged)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


# ---- set-ups and checks of the rows that need files ---------------------------------------------------
USER_METRICS = '{"my": "own results"}\n'


def _user_metrics(ctx: dict) -> None:
    (ctx["tmp"] / "mine").mkdir()
    (ctx["tmp"] / "mine" / "metrics.jsonl").write_text(USER_METRICS)


def _user_metrics_kept(ctx: dict) -> None:
    assert (ctx["tmp"] / "mine" / "metrics.jsonl").read_text() == USER_METRICS
    assert sorted(os.listdir(ctx["tmp"] / "mine")) == ["metrics.jsonl"]


def _damaged_copy(name: str) -> Callable[[dict], None]:
    """A copy of the built kouvola folder with one file cut to half its bytes (a disk that filled up)."""

    def setup(ctx: dict) -> None:
        shutil.copytree(ctx["kouvola"], ctx["tmp"] / "kv")
        f = ctx["tmp"] / "kv" / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    return setup


def _sumo_refuses(ctx: dict) -> None:
    """A copy of kouvola whose background holds a vehicle on a route SUMO refuses (two edges that do
    not connect), with the manifest's digests updated: the build's checks passed, SUMO fails at run time."""
    import sumolib

    from scenarios import cache

    folder = ctx["tmp"] / "kv"
    shutil.copytree(ctx["kouvola"], folder)
    net = sumolib.net.readNet(str(folder / "net.net.xml"))
    edges = [e for e in net.getEdges() if e.allows("passenger")]
    a = edges[0]
    b = next(e for e in edges if e not in a.getOutgoing() and e is not a)
    bg = folder / "background.rou.xml"
    broken = f'<routes>\n    <vehicle id="broken" depart="0.00"><route edges="{a.getID()} {b.getID()}"/></vehicle>'
    bg.write_text(bg.read_text().replace("<routes>", broken, 1))  # first: SUMO reads a route file in time order
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"]["background.rou.xml"] = cache.file_digest(bg)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _plan_with_unknown_edge(ctx: dict) -> None:
    trip = json.loads((ctx["kouvola"] / "agents.json").read_text())[0]
    plan = {trip["id"]: [trip["from"], "no-such-edge", trip["to"]]}
    (ctx["tmp"] / "plans.json").write_text(json.dumps(plan))


# ---- the table -------------------------------------------------------------------------------------
CASES: list[Case] = [
    # -- run commands: seeds, counts, overrides (validated before any work; no half-written run folder)
    Case("train-seed-negative", ["train", "-s", "{kouvola}", "--seed", "-1", "--out", "{tmp}/run"],
         message=r"--seed must be in 0\.\.2147483647", untouched="{tmp}/run"),
    Case("train-seed-too-big", ["train", "-s", "{kouvola}", "--seed", "3000000000", "--out", "{tmp}/run"],
         message=r"--seed must be in 0\.\.2147483647.*got 3000000000", untouched="{tmp}/run"),
    Case("train-eval-seed", ["train", "-s", "{kouvola}", "--eval-seed", "-5", "--out", "{tmp}/run"],
         message=r"--eval-seed must be in", untouched="{tmp}/run"),
    Case("train-set-not-a-number", ["train", "-s", "{kouvola}", "--set", "lr=abc", "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.lr must be a number, got 'abc'", untouched="{tmp}/run"),
    Case("train-set-zero-minibatch", ["train", "-s", "{kouvola}", "--set", "minibatch_size=0", "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.minibatch_size must be a positive number, got 0", untouched="{tmp}/run"),
    Case("train-set-bool-typed", ["train", "-s", "{kouvola}", "--set", "shared=3", "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.shared must be true or false, got 3", untouched="{tmp}/run"),
    Case("train-set-unknown", ["train", "-s", "{kouvola}", "--set", "lrr=0.1", "--out", "{tmp}/run"],
         message=r"--set lrr: unknown setting \(sections: algorithm, env, run, scenario, sed\); did you mean lr", untouched="{tmp}/run"),
    Case("train-workers-zero", ["train", "-s", "{kouvola}", "--workers", "0", "--out", "{tmp}/run"],
         message=r"--workers must be a positive number of processes or auto, got '0'", untouched="{tmp}/run"),
    Case("train-workers-negative", ["train", "-s", "{kouvola}", "--workers", "-3", "--out", "{tmp}/run"],
         message=r"--workers must be a positive number of processes or auto, got '-3'", untouched="{tmp}/run"),
    Case("train-workers-not-a-number", ["train", "-s", "{kouvola}", "--workers", "two", "--out", "{tmp}/run"],
         message=r"--workers must be a positive number of processes or auto, got 'two'", untouched="{tmp}/run"),
    Case("train-ray-address-unreachable", ["train", "-s", "{kouvola}", "--workers", "2", "--executor", "ray",
                                           "--ray-address", "127.0.0.1:9", "--episodes", "2", "--out", "{tmp}/run"],
         message=r"cannot reach the Ray cluster at '127\.0\.0\.1:9' \(ConnectionRefusedError", timeout=60,
         untouched="{tmp}/run"),
    Case("train-episodes-zero", ["train", "-s", "{kouvola}", "--episodes", "0", "--out", "{tmp}/run"],
         message=r"--episodes must be a positive number", untouched="{tmp}/run"),
    Case("train-unknown-city", ["train", "-s", "atlantis", "--episodes", "1", "--out", "{tmp}/run"],
         message=r"unknown city 'atlantis'", untouched="{tmp}/run"),
    Case("compare-seed", ["compare", "-s", "{kouvola}", "--methods", "shortest", "--eval-seed", "3000000000",
                          "--out", "{tmp}/cmp"], message=r"--eval-seed must be in", untouched="{tmp}/cmp"),
    Case("compare-set-zero", ["compare", "-s", "{kouvola}", "--methods", "ippo", "--set", "minibatch_size=0",
                              "--out", "{tmp}/cmp"], message=r"algorithm\.ppo\.minibatch_size must be a positive number", untouched="{tmp}/cmp"),
    Case("evaluate-horizon-zero", ["evaluate", "--checkpoint", "{tmp}/none", "-s", "{kouvola}", "--horizon", "0"],
         message=r"--horizon must be a positive number, got 0"),
    Case("evaluate-seed", ["evaluate", "--checkpoint", "{tmp}/none", "-s", "{kouvola}", "--seed", "-1"],
         message=r"--seed must be in 0\.\."),
    Case("simulate-seed", ["simulate", "{kouvola}", "--seed", "-1"], message=r"--seed must be in 0\.\."),
    Case("bench-seed", ["bench", "overhead", "--scenario", "{kouvola}", "--seed", "3000000000"],
         message=r"--seed must be in 0\.\."),
    # one rule for rollout workers against cores and episodes (issue 26)
    Case("train-workers-beyond-cores", ["train", "-s", "{kouvola}", "--workers", "1000", "--episodes", "2000",
                                        "--out", "{tmp}/run"],
         message=r"--workers 1000 is more than the \d+ cores this process may use", untouched="{tmp}/run"),
    Case("train-workers-beyond-episodes", ["train", "-s", "{kouvola}", "--workers", "2", "--episodes", "1",
                                           "--out", "{tmp}/run"],
         message=r"--workers 2 is more than --episodes 1", untouched="{tmp}/run"),
    # -- the configuration tree: --config and --set, the same for every command (nothing written)
    Case("train-config-missing", ["train", "-s", "{kouvola}", "--config", "{tmp}/none.toml", "--out", "{tmp}/run"],
         message=r"--config .*none\.toml does not exist", untouched="{tmp}/run"),
    Case("train-config-not-toml", ["train", "-s", "{kouvola}", "--config", "{file}", "--out", "{tmp}/run"],
         message=r"--config .*a-file\.txt is not valid TOML", untouched="{tmp}/run"),
    Case("train-set-unknown-section", ["train", "--set", "nosuch.key=1", "--out", "{tmp}/run"],
         message=r"--set nosuch\.key: unknown setting \(sections: algorithm, env, run, scenario, sed\)",
         untouched="{tmp}/run"),
    Case("train-set-wrong-type", ["train", "--set", "env.reward_scale=fast", "--out", "{tmp}/run"],
         message=r"env\.reward_scale must be a number, got 'fast'", untouched="{tmp}/run"),
    # issue 28: live travel times and the route after a decision
    Case("train-traffic-update-zero", ["train", "-s", "{kouvola}", "--set", "env.traffic_update_s=0", "--out",
                                       "{tmp}/run"], message=r"env\.traffic_update_s must be a positive number, got 0\.0",
         untouched="{tmp}/run"),
    Case("train-continuation-unknown", ["train", "-s", "{kouvola}", "--set", "env.continuation=teleport", "--out",
                                        "{tmp}/run"], message=r"env\.continuation must be live or free_flow",
         untouched="{tmp}/run"),
    Case("train-action-prior-negative", ["train", "-s", "{kouvola}", "--set", "algorithm.ppo.action_prior=-1",
                                         "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.action_prior must be in 0\.\.20, got -1\.0", untouched="{tmp}/run"),
    Case("train-prior-end-too-high", ["train", "-s", "{kouvola}", "--set", "algorithm.ppo.action_prior_end=25",
                                      "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.action_prior_end must be in 0\.\.20, got 25\.0", untouched="{tmp}/run"),
    Case("train-prior-episodes-negative", ["train", "-s", "{kouvola}", "--set",
                                           "algorithm.ppo.action_prior_episodes=-3", "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.action_prior_episodes must be >= 0, got -3", untouched="{tmp}/run"),
    Case("train-eval-actions-unknown", ["train", "-s", "{kouvola}", "--set", "algorithm.ppo.eval_actions=argmax",
                                        "--out", "{tmp}/run"],
         message=r"algorithm\.ppo\.eval_actions must be greedy or sample", untouched="{tmp}/run"),
    Case("train-time-limit-zero", ["train", "-s", "{kouvola}", "--time-limit", "0", "--out", "{tmp}/run"],
         message=r"--time-limit must be a positive number, got 0\.0", untouched="{tmp}/run"),
    Case("train-time-limit-negative-set", ["train", "-s", "{kouvola}", "--set", "run.time_limit=-60", "--out",
                                           "{tmp}/run"],
         message=r"run\.time_limit must be a positive number, got -60\.0", untouched="{tmp}/run"),
    Case("train-policy-lag-two", ["train", "-s", "{kouvola}", "--workers", "2", "--set", "run.policy_lag=2",
                                  "--out", "{tmp}/run"],
         message=r"run\.policy_lag must be in 0\.\.1, got 2", untouched="{tmp}/run"),
    Case("train-policy-lag-in-process", ["train", "-s", "{kouvola}", "--set", "run.policy_lag=1", "--out", "{tmp}/run"],
         message=r"run\.policy_lag = 1 overlaps the update with rollout workers' episodes, and one worker runs "
                 r"in-process: use --workers 2 or more, or run\.policy_lag = 0", untouched="{tmp}/run"),
    # several cities (issue 30): an unknown one is named before any is built; what cannot train on several
    Case("train-cities-unknown", ["train", "-s", "helsinki,atlantis", "--out", "{tmp}/run"],
         message=r"unknown city 'atlantis'; known cities: ", untouched="{tmp}/run"),
    Case("train-cities-twice", ["train", "-s", "kouvola,kouvola", "--out", "{tmp}/run"],
         message=r"--scenario kouvola,kouvola: name each city once", untouched="{tmp}/run"),
    Case("train-cities-agent-id", ["train", "-s", "helsinki,kouvola", "-m", "mappo", "--set", "algorithm.ppo.agent_id=true",
                                   "--out", "{tmp}/run"],
         message=r"training on several cities \(--scenario helsinki,kouvola\) takes shared networks without a "
                 r"per-agent embedding \(one city's agents are not another's\), not algorithm\.ppo\.agent_id = true",
         untouched="{tmp}/run"),
    Case("train-cities-baseline", ["train", "-s", "helsinki,kouvola", "-m", "shortest", "--out", "{tmp}/run"],
         message=r"training on several cities \(--scenario helsinki,kouvola\) is for learning methods; shortest "
                 r"learns nothing: evaluate it on each city instead", untouched="{tmp}/run"),
    Case("train-cities-demos", ["train", "-s", "helsinki,kouvola", "-m", "reled", "--demos", "{tmp}/d", "--out",
                                "{tmp}/run"],
         message=r"--demos names 1 folder for 2 cities: give one per city, comma-separated in the order of "
                 r"--scenario", untouched="{tmp}/run"),
    Case("train-unknown-flag", ["train", "-s", "{kouvola}", "--bogus", "--out", "{tmp}/run"],
         message=r"No such option: --bogus \(.*\(see `.*cosim train --help`\)", untouched="{tmp}/run"),
    Case("build-wrong-type", ["scenario", "build", "kouvola", "--agents", "many"],
         message=r"Invalid value for '--agents'.*see `.*cosim scenario build --help`"),
    Case("train-team-weight-above-one", ["train", "-s", "{kouvola}", "--set", "env.team_weight=2", "--out",
                                         "{tmp}/run"], message=r"env\.team_weight must be in 0\.\.1, got 2\.0", untouched="{tmp}/run"),
    Case("train-set-no-equals", ["train", "--set", "env.reward_scale", "--out", "{tmp}/run"],
         message=r"--set expects section\.key=value, got 'env\.reward_scale'", untouched="{tmp}/run"),
    Case("compare-set-unknown-key", ["compare", "--methods", "shortest", "--set", "env.reward_scal=2", "--out",
                                     "{tmp}/cmp"], message=r"unknown key 'reward_scal' in env; known: backend",
         untouched="{tmp}/cmp"),  # fmt: skip
    Case("compare-config-not-toml", ["compare", "--methods", "shortest", "--config", "{file}", "--out", "{tmp}/cmp"],
         message=r"is not valid TOML", untouched="{tmp}/cmp"),
    Case("demos-set-wrong-type", ["demos", "--set", "sed.rounds=two", "--out", "{tmp}/d"],
         message=r"sed\.rounds must be an integer, got 'two'", untouched="{tmp}/d"),
    Case("demo-set-unknown", ["demo", "--set", "sed.roundz=2", "--out", "{tmp}/d", "--no-open"],
         message=r"unknown key 'roundz' in sed; known: c, cache", untouched="{tmp}/d"),
    Case("simulate-set-wrong-type", ["simulate", "{kouvola}", "--set", "env.max_actions=six"],
         message=r"env\.max_actions must be an integer, got 'six'"),
    # -- files and folders: COSIM_HOME, --out, names
    Case("train-out-is-a-file", ["train", "-s", "{kouvola}", "--episodes", "1", "--out", "{file}"],
         message=r"--out .*a-file\.txt exists and is not a folder"),
    Case("train-out-unwritable", ["train", "-s", "{kouvola}", "--episodes", "1", "--out", "/proc/cosim-run"],
         message=r"--out /proc/cosim-run cannot be written"),
    # one output-folder policy for train, compare and demos: a folder of the user's own files is refused
    Case("train-out-holds-user-files", ["train", "-s", "{kouvola}", "--episodes", "1", "--out", "{tmp}/mine"],
         setup=_user_metrics, after=_user_metrics_kept,
         message=r"--out .*mine is not empty and is not an earlier `cosim train` output \(it holds metrics\.jsonl\)"),
    Case("compare-out-holds-user-files", ["compare", "-s", "{kouvola}", "--methods", "shortest", "--out", "{tmp}/mine"],
         setup=_user_metrics, after=_user_metrics_kept,
         message=r"--out .*mine is not empty and is not an earlier `cosim compare` output \(it holds metrics\.jsonl\)"),
    Case("train-resume-nothing", ["train", "-s", "{kouvola}", "--episodes", "1", "--resume", "--out", "{tmp}/run"],
         message=r"--resume: .*run holds no run to continue \(no config\.json\)", untouched="{tmp}/run"),
    Case("train-replay-unknown-edge", ["train", "-s", "{kouvola}", "--method", "replay", "--plans", "{tmp}/plans.json",
                                       "--episodes", "1", "--out", "{tmp}/run"], setup=_plan_with_unknown_edge,
         message=r"replay: the plan of agent '[^']+' names edge 'no-such-edge', which is not a road of the net",
         untouched="{tmp}/run"),
    # a built folder verifies its files against the digests in its manifest
    *[Case(f"simulate-damaged-{name.split('.')[0]}", ["simulate", "{tmp}/kv"], setup=_damaged_copy(name),
           message=rf"scenario .*kv is damaged: {name.replace('.', '[.]')} changed since it was built; rebuild it with "
                   r"`cosim scenario build .*kv --force`")
      for name in ("net.net.xml", "agents.json")],
    # SUMO failing at run time is an `error:` and exit 1, never exit 0 with NaN metrics
    Case("simulate-sumo-refuses-a-route", ["simulate", "{tmp}/kv", "--json"], setup=_sumo_refuses, code=1,
         message=r"SUMO (failed during the episode|could not start the episode): .*broken"),
    # `cosim demos --out`: checked before the scenario, the LLM and SUMO (the LLM here is unreachable, so a
    # check made after the run would end with another error); an output never deletes what it did not write
    Case("demos-out-is-a-file", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "{file}"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"a-file\.txt exists and is not a folder"),
    Case("demos-out-non-empty", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "{kouvola}"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"is not empty and is not an earlier `cosim demos` output \(it holds "),
    Case("demos-out-current-folder", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "."],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"}, message=r"is the current folder"),
    Case("demos-out-under-a-file", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "{file}/d"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"a-file\.txt is a file, not a folder"),
    Case("demos-out-unwritable", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "/proc/cosim-d"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"--out /proc/cosim-d cannot be written"),
    # COSIM_HOME that is a file, or that cannot be created even by root (/proc), for every scenario command
    *[Case(f"home-is-a-file-{cmd[1]}", cmd, env={"COSIM_HOME": "{file}"},
           message=r"COSIM_HOME=.*a-file\.txt: .*a-file\.txt is a file, not a folder; set COSIM_HOME to a folder")
      for cmd in (["scenario", "list"], ["scenario", "build", "kouvola"], ["scenario", "show", "kouvola"])],
    *[Case(f"home-cannot-be-created-{cmd[1]}", cmd, env={"COSIM_HOME": "/proc/cosim-test"},
           message=r"COSIM_HOME=/proc/cosim-test: cannot create /proc/cosim-test/scenarios \(")
      for cmd in (["scenario", "list"], ["scenario", "build", "kouvola"], ["scenario", "show", "kouvola"])],
    Case("home-unknown-user", ["scenario", "list"], env={"COSIM_HOME": "~no-such-user-cosim/x"},
         message=r"COSIM_HOME='~no-such-user-cosim/x': cannot expand '~no-such-user-cosim'"),
    # -- scenarios: sources, endpoints, cache
    Case("scenario-name-too-long", ["scenario", "build", "--net", "{helsinki}/net.net.xml", "--name", "x" * 300],
         message=r"name must be at most 100 characters, got 300"),
    Case("overpass-url-not-a-url", ["scenario", "build", "--bbox", "24.93,60.16,24.94,60.17", "--overpass-url",
                                    "notaurl"], message=r"--overpass-url: 'notaurl' is not a URL for the Overpass API"),
    Case("nominatim-url-not-a-url", ["scenario", "build", "--place", "Kallio, Helsinki", "--nominatim-url", "notaurl"],
         message=r"--nominatim-url: 'notaurl' is not a URL for Nominatim"),
    Case("overpass-url-env-not-a-url", ["scenario", "build", "--bbox", "24.93,60.16,24.94,60.17"],
         env={"COSIM_OVERPASS_URL": "notaurl"}, message=r"COSIM_OVERPASS_URL: 'notaurl' is not a URL"),
    Case("nominatim-url-env-not-a-url", ["scenario", "build", "--place", "Kallio, Helsinki"],
         env={"COSIM_NOMINATIM_URL": "notaurl"}, message=r"COSIM_NOMINATIM_URL: 'notaurl' is not a URL"),
    Case("http-timeout-not-positive", ["scenario", "build", "--bbox", "24.93,60.16,24.94,60.17"],
         env={"COSIM_HTTP_TIMEOUT_S": "0"}, message=r"COSIM_HTTP_TIMEOUT_S must be a number of seconds > 0, got '0'"),
    Case("overpass-closed", ["scenario", "build", "--bbox", "24.93,60.16,24.94,60.17", "--overpass-url", "{closed}"],
         message=r"cannot reach Overpass API at http://127\.0\.0\.1:\d+: .*refused"),
    Case("nominatim-closed", ["scenario", "build", "--place", "Kallio, Helsinki", "--nominatim-url", "{closed}"],
         message=r"cannot reach Nominatim at http://127\.0\.0\.1:\d+: .*refused"),
    Case("build-agents-beyond-the-net", ["scenario", "build", "kouvola", "--agents", "100000"],
         message=r"--agents 100000 \(\[demand\]\.agents\) is more than kouvola's roads can hold: [\d.]+ km of lanes "
                 r"fit at most \d+ cars at once"),
    Case("simulate-agents-beyond-the-net", ["simulate", "{kouvola}", "--agents", "100000"],
         message=r"100000 agents requested but the roads of scenario 'kouvola' hold at most \d+ cars at once"),
    Case("show-folder-not-built", ["scenario", "show", "{tmp}"],
         message=r"is not a built scenario \(no manifest\.json\)"),
    # -- imported demand ({grid}: a netgenerate net with randomTrips demand, tests/conftest.py); every
    # row also checks that nothing was left in the scenario cache
    Case("import-routes-unknown-edge", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--routes",
                                        "{grid}/bad-edges.rou.xml"],
         message=r"the demand uses 1 edge that are not in the net \(e\.g\. 'Z9Z8', used by trip 'x'"),
    Case("import-sumocfg-file-missing", ["scenario", "build", "--sumocfg", "{grid}/missing.sumocfg"],
         message=r"missing\.sumocfg: route-files .*nofile\.rou\.xml does not exist"),
    Case("import-no-passenger-vehicle", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--routes",
                                         "{grid}/trucks.rou.xml", "--agents", "3"],
         message=r"the demand has no passenger vehicle departing between 5 s and 5 s"),
    Case("import-agent-share-above-one", ["scenario", "build", "--sumocfg", "{grid}/grid.sumocfg", "--agent-share",
                                          "1.5"], message=r"--agent-share must be in \(0, 1\], got 1\.5"),
    Case("import-agent-share-zero", ["scenario", "build", "--sumocfg", "{grid}/grid.sumocfg", "--agent-share", "0"],
         message=r"--agent-share must be in \(0, 1\], got 0"),
    Case("import-agent-share-generated", ["scenario", "build", "kouvola", "--agent-share", "0.5"],
         message=r"--agent-share picks agents from imported demand"),
    Case("import-background-routing-unknown", ["scenario", "build", "--sumocfg", "{grid}/grid.sumocfg",
                                               "--background-routing", "sometimes"],
         message=r"background_routing \(--background-routing\) must be one of insertion, fixed, got 'sometimes'"),
    Case("background-routing-generated", ["scenario", "build", "kouvola", "--background-routing", "fixed"],
         message=r"--background-routing is for imported demand"),
    Case("rerouting-settings-would-move-the-background", ["train", "-s", "{grid}/grid.sumocfg", "-m", "sumo-rerouting",
                                                          "--set", "env.rerouting_adaptation_steps=18", "--out",
                                                          "{tmp}/run"],
         message=r"would change how SUMO routes \d+ background vehicles of 'grid'.*--background-routing fixed",
         untouched="{tmp}/run"),
    Case("import-trips-unknown-edge", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                       "{grid}/unknown-edge.csv"],
         message=r"unknown-edge\.csv line 3: to edge 'NOPE' is not in the net"),
    Case("import-trips-bad-depart", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                     "{grid}/bad-depart.csv"],
         message=r"bad-depart\.csv line 3: depart must be a number of seconds >= 0, got 'soon'"),
    Case("import-trips-duplicate-id", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                       "{grid}/duplicate-id.csv"], message=r"duplicate-id\.csv line 3: duplicate id 'a'"),
    Case("import-routes-without-net", ["scenario", "build", "kouvola", "--routes", "{grid}/routes.rou.xml"],
         message=r"--routes needs --net"),
    Case("import-trips-without-net", ["scenario", "build", "--osm", "{file}", "--trips", "{grid}/unknown-edge.csv"],
         message=r"--trips needs --net or --sumocfg"),
    Case("import-too-many-agents", ["scenario", "build", "--sumocfg", "{grid}/grid.sumocfg", "--agents", "500"],
         message=r"--agents 500: the demand has only \d+ passenger vehicles departing between"),
    Case("simulate-more-agents-than-picked", ["simulate", "{grid}/grid.sumocfg", "--agents", "400"],
         message=r"400 agents requested but 50 were picked from scenario 'grid'.s demand when it was built"),
    # departures that are not seconds, or after the horizon; a spreadsheet's CSV; a disconnected route;
    # the .sumocfg this project writes (issue 26)
    Case("import-trips-epoch-ms", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                   "{grid}/epoch-ms.csv"], timeout=60,
         message=r"epoch-ms\.csv line 3: departure 1e\+12 s makes the simulation .* more than the 604800 s \(7 days\)"),
    Case("import-trips-after-horizon", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                        "{grid}/late.csv", "--horizon", "600"], timeout=60,
         message=r"late\.csv line 3: departure 5000 s is after the simulation's end 600 s \(begin 0 s \+ --horizon 600 s\)"),
    Case("import-trips-byte-order-mark", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--trips",
                                          "{grid}/bom-unknown-edge.csv"],
         message=r"bom-unknown-edge\.csv line 3: to edge 'NOPE' is not in the net"),
    Case("import-routes-disconnected", ["scenario", "build", "--net", "{grid}/grid.net.xml", "--routes",
                                        "{grid}/disconnected.rou.xml"],
         message=r"vehicle 'gap' in .*disconnected\.rou\.xml: the route is not connected: edge 'A0A1' does not lead "
                 r"to 'C2C3'"),
    Case("import-own-sumocfg", ["scenario", "build", "--sumocfg", "{kouvola}/scenario.sumocfg", "--agents", "5",
                                "--name", "kouvola-reimported"], code=0),
    Case("import-agents-zero-generated", ["scenario", "build", "kouvola", "--agents", "0"],
         message=r"--agents 0 \(a plain run of the given demand\) is for imported demand"),
    # -- LLM backends
    # unreachable or silent backends end the run with one line naming the backend and its URL, after the
    # retry budget, instead of free-flow fallback plans that look like expert demonstrations
    Case("demos-openai-closed-port", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--agents", "4",
                                      "--rounds", "1", "--rollouts", "2", "--out", "{tmp}/d"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"LLM backend 'openai:m' at http://127\.0\.0\.1:\d+/v1 is unusable: cannot connect",
         untouched="{tmp}/d"),
    Case("demos-ollama-nothing-listening", ["demos", "--scenario", "{kouvola}", "--llm", "ollama:m", "--agents",
                                            "4", "--rounds", "1", "--rollouts", "2", "--out", "{tmp}/d"],
         env={"OLLAMA_HOST": "{closed}"}, untouched="{tmp}/d",
         message=r"LLM backend 'ollama:m' at http://127\.0\.0\.1:\d+ is unusable: cannot connect"),
    Case("demos-openai-no-key", ["demos", "--scenario", "{kouvola}", "--llm", "openai", "--out", "{tmp}/d"],
         env={"OPENAI_API_KEY": ""}, message=r"needs OPENAI_API_KEY", untouched="{tmp}/d"),
    Case("demos-openai-url-malformed", ["demos", "--scenario", "{kouvola}", "--llm", "openai:m", "--out", "{tmp}/d"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "http//127.0.0.1:9/v1"}, untouched="{tmp}/d",
         message=r"OPENAI_BASE_URL: 'http//127\.0\.0\.1:9/v1' is not a URL"),
    Case("demos-unknown-backend", ["demos", "--scenario", "{kouvola}", "--llm", "gpt5", "--out", "{tmp}/d"],
         message=r"unknown LLM backend 'gpt5'", untouched="{tmp}/d"),
    Case("demos-request-timeout-zero", ["demos", "--scenario", "{kouvola}", "--request-timeout", "0",
                                        "--out", "{tmp}/d"],
         message=r"--request-timeout must be a positive number, got 0", untouched="{tmp}/d"),
    Case("demos-llm-threads", ["demos", "--scenario", "{kouvola}", "--set", "sed.threads=many", "--out", "{tmp}/d"],
         message=r"sed\.threads must be an integer or null, got 'many'", untouched="{tmp}/d"),
    Case("demos-max-concurrency-zero", ["demos", "--scenario", "{kouvola}", "--max-concurrency", "0",
                                        "--out", "{tmp}/d"],
         message=r"--max-concurrency must be a positive number, got 0", untouched="{tmp}/d"),
    Case("demos-rollout-workers-negative", ["demos", "--scenario", "{kouvola}", "--set", "sed.rollout_workers=-2",
                                            "--out", "{tmp}/d"],
         message=r"sed\.rollout_workers must be >= 0", untouched="{tmp}/d"),
    Case("bench-sed-unknown-scenario", ["bench", "sed", "--scenario", "atlantis"], message=r"atlantis"),
    # the on-demand demonstrations of `compare --methods reled` (cached under COSIM_HOME): the same error
    Case("compare-reled-llm-closed-port", ["compare", "-s", "{kouvola}", "--methods", "reled", "--seeds", "1",
                                           "--episodes", "1", "--agents", "4", "--llm", "openai:m",
                                           "--set", "sed.rounds=1", "--out", "{tmp}/cmp"],
         env={"OPENAI_API_KEY": "x", "OPENAI_BASE_URL": "{closed}/v1"},
         message=r"LLM backend 'openai:m' at http://127\.0\.0\.1:\d+/v1 is unusable: cannot connect"),
]
# ----------------------------------------------------------------------------------------------------


def _fill(text: str, ctx: dict) -> str:
    for k, v in ctx.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def _cache_listing(home: Path) -> set[str]:
    root = home / "scenarios"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, helsinki, kouvola, cosim_home, grid_demand):
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder\n")
    ctx = {"tmp": tmp_path, "helsinki": helsinki.path, "kouvola": kouvola.path, "home": cosim_home,
           "file": a_file, "closed": closed_port_url(), "grid": grid_demand}  # fmt: skip
    if case.setup is not None:
        case.setup(ctx)
    cache_before = _cache_listing(cosim_home)
    env = dict(os.environ, COSIM_HOME=str(cosim_home), WANDB_MODE="offline")
    env.update({k: _fill(v, ctx) for k, v in case.env.items()})
    p = subprocess.run(
        [sys.executable, "-m", "cosim", *[_fill(a, ctx) for a in case.args]],
        capture_output=True, text=True, env=env, timeout=case.timeout, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == case.code, (p.returncode, p.stderr[-3000:])
    if case.message:
        errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, p.stderr[-3000:]
        import re

        assert re.search(case.message, errors[0]), errors[0]
    if case.untouched:
        assert not Path(_fill(case.untouched, ctx)).exists()
    if case.after is not None:
        case.after(ctx)
    if case.code == 2 and case.args[:2] == ["scenario", "build"]:  # a refused build leaves no cache entry
        assert _cache_listing(cosim_home) == cache_before
