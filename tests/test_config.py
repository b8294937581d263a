"""One configuration tree for every command: --config, --set, the shortcut flags, config.json, W&B.

The issue's yardstick: a contributor adds an env setting by editing one dataclass and reaches it from
`cosim train` and `cosim compare`. `env.reward_scale` stands in for it here: set through --set and
through --config, it must show in the run's config.json, in the W&B run's config and in the rewards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields

import pytest

from agents.config import TrainConfig
from core.settings import SettingsError, flatten, from_dict, paths, resolve, to_dict
from evaluation.config import ExperimentConfig
from tests.tools.wandb_records import offline_runs, read_run_records


def cosim(*args, cwd=None, timeout=300):
    env = dict(os.environ, WANDB_MODE="offline", COLUMNS="400")  # no wrapping of --help
    return subprocess.run([sys.executable, "-m", "cosim", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


# ------------------------------------------------------------------------------------ the tree
def test_the_tree_has_its_sections_and_each_default_once():
    tree = ExperimentConfig()
    assert [f.name for f in fields(tree)] == ["scenario", "env", "algorithm", "run", "sed"]
    d = to_dict(tree)
    assert d["env"]["reward_scale"] == 60.0 and d["algorithm"]["ppo"]["lr"] == 1e-3 and d["sed"]["rounds"] == 3
    assert from_dict(ExperimentConfig, d) == tree  # JSON round trip
    # a setting appears once in the tree: agents, horizon and seed are not repeated by SED or the runner
    leaves = [p.rsplit(".", 1)[-1] for p in paths(ExperimentConfig)]
    for name in ("n_agents", "horizon", "seed", "episodes", "lr", "w0", "rounds"):
        assert leaves.count(name) == 1, name


def test_precedence_defaults_file_flags_set(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('[env]\nreward_scale = 30.0\nn_agents = 7\n[algorithm.ppo]\nlr = 0.002\n[run]\nepisodes = 9\n')
    t = resolve(ExperimentConfig, f, ["run.episodes=11", "gamma=0.9"], {"env.n_agents": 8, "run.seed": None})
    assert (t.env.reward_scale, t.env.n_agents, t.algorithm.ppo.lr, t.run.episodes) == (30.0, 8, 0.002, 11)
    assert t.algorithm.ppo.gamma == 0.9 and t.run.seed == 0  # a bare key names its one setting; None = not given
    # a run's config.json is a --config too
    run = tmp_path / "config.json"
    run.write_text(json.dumps({"config": to_dict(t), "method": {}}))
    assert resolve(ExperimentConfig, run) == t


def test_the_example_configs_resolve_into_valid_trees():
    """The files under examples/ are what the docs tell users to run: each must resolve and pass the
    checks a run makes before it starts (ranges, workers against cores are left to the run)."""
    from pathlib import Path

    examples = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))
    assert examples
    for f in examples:
        t = resolve(ExperimentConfig, f)
        problems = t.algorithm.ppo.problems()
        assert not problems, (f.name, problems)
        assert t.env.n_agents and t.run.episodes, f.name
    city = resolve(ExperimentConfig, Path(__file__).parent.parent / "examples" / "adlershof-1000.toml")
    assert (city.scenario.name, city.env.n_agents, city.run.rollout_workers) == ("adlershof", 1000, 2)
    assert city.algorithm.ppo.action_prior > 0 and city.run.time_limit is not None


@pytest.mark.parametrize(
    "sets, message",
    [
        (["envv.reward_scale=1"], r"--set envv\.reward_scale: unknown setting"),
        (
            ["env.reward_scal=1"],
            r"--set env\.reward_scal: unknown key 'reward_scal' in env; known: backend, continuation, control",
        ),
        (["env.reward_scale=abc"], r"env\.reward_scale must be a number, got 'abc'"),
        (["env.n_agents=2.5"], r"env\.n_agents must be an integer or null, got 2\.5"),
        (["algorithm.ppo.shared=1"], r"algorithm\.ppo\.shared must be true or false, got 1"),
        (["reward_scale"], r"--set expects section\.key=value, got 'reward_scale'"),
    ],
)
def test_bad_overrides_name_the_key(sets, message):
    with pytest.raises(SettingsError, match=message):
        resolve(ExperimentConfig, sets=sets)


def test_bad_files(tmp_path):
    with pytest.raises(SettingsError, match=r"--config .*none\.toml does not exist"):
        resolve(ExperimentConfig, tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[env\nreward_scale = ")
    with pytest.raises(SettingsError, match=r"--config .*bad\.toml is not valid TOML"):
        resolve(ExperimentConfig, bad)
    bad.write_text("[nosuch]\nx = 1\n")
    with pytest.raises(SettingsError, match=r"unknown section 'nosuch'; known: scenario, env, algorithm, run, sed"):
        resolve(ExperimentConfig, bad)
    bad.write_text("[env]\nreward_scale = 'x'\n")
    with pytest.raises(SettingsError, match=r"env\.reward_scale must be a number, got 'x'"):
        resolve(ExperimentConfig, bad)


def test_identity_leaves_out_what_may_change_on_resume():
    a = TrainConfig.of(method="ippo", episodes=4, backend="libsumo")
    b = TrainConfig.of(method="ippo", episodes=9, backend="traci")
    assert a.identity() == b.identity() and a.identity() != TrainConfig.of(method="ippo", seed=1).identity()
    assert "episodes" not in a.identity()["run"] and "backend" not in a.identity()["env"]


# ------------------------------------------------------------------------ end to end, as a user
@pytest.mark.slow
def test_an_env_setting_reaches_train_and_compare_through_set_and_config(kouvola, tmp_path):
    base = ["--scenario", str(kouvola.path), "--agents", "6", "--horizon", "600"]
    # train with --set
    p = cosim("train", *base, "--method", "shortest", "--episodes", "1", "--eval-every", "0", "--quiet",
              "--set", "env.reward_scale=30", "--out", str(tmp_path / "a"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    # the same run, the setting from a file
    (tmp_path / "exp.toml").write_text("[env]\nreward_scale = 30.0\n")
    p = cosim("train", *base, "--method", "shortest", "--episodes", "1", "--eval-every", "0", "--quiet",
              "--config", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "b"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    # and the default, for contrast
    p = cosim("train", *base, "--method", "shortest", "--episodes", "1", "--eval-every", "0", "--quiet",
              "--out", str(tmp_path / "c"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    docs = {k: json.loads((tmp_path / k / "config.json").read_text())["config"] for k in "abc"}
    assert [docs[k]["run"].pop("out") for k in "abc"] == [str(tmp_path / k) for k in "abc"]
    assert docs["a"] == docs["b"] != docs["c"]
    assert docs["a"]["env"]["reward_scale"] == 30.0 and docs["c"]["env"]["reward_scale"] == 60.0
    assert set(docs["a"]) == {"scenario", "env", "algorithm", "run", "sed"}
    # it is really used: the same episode (same policy, same seed) costs more per second of travel
    rows = {k: json.loads((tmp_path / k / "metrics.jsonl").read_text().splitlines()[-1]) for k in "ac"}
    assert rows["a"]["mean_travel_time"] == rows["c"]["mean_travel_time"]
    assert rows["a"]["return"] < rows["c"]["return"] < 0

    # compare hands the tree to every run, and W&B records it (flattened)
    p = cosim("compare", *base, "--methods", "shortest,ippo", "--seeds", "1", "--episodes", "1",
              "--config", str(tmp_path / "exp.toml"), "--set", "algorithm.ppo.lr=0.0005", "--out", str(tmp_path / "cmp"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    for run in ("shortest-s0", "ippo-s0"):
        cfg = json.loads((tmp_path / "cmp" / "runs" / run / "config.json").read_text())["config"]
        assert cfg["env"]["reward_scale"] == 30.0 and cfg["algorithm"]["ppo"]["lr"] == 0.0005
        assert cfg["algorithm"]["method"] == run.split("-")[0]
        rec = read_run_records(offline_runs(tmp_path / "cmp" / "runs" / run)[-1])["config"]
        assert rec["env.reward_scale"] == 30.0 and rec["algorithm.ppo.lr"] == 0.0005
        assert {k: v for k, v in flatten(cfg).items() if not isinstance(v, list)}.items() <= rec.items()
    # the comparison's own tree repeats it
    shared = json.loads((tmp_path / "cmp" / "config.json").read_text())["config"]
    assert shared["env"]["reward_scale"] == 30.0


def test_help_shows_the_trees_defaults():
    p = cosim("train", "--help")
    assert p.returncode == 0
    assert "(default 50; --set run.episodes=…)" in p.stdout and '(default "ippo"; --set algorithm.method=…)' in p.stdout
    assert "(default 60.0" not in p.stdout  # not a second copy of env defaults: those are reached with --set
