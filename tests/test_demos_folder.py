"""The demonstrations folder (`cosim.demos`): what the writer puts there the readers get back, and every
kind of bad folder is one clear error before any training or comparison starts."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from core.errors import UserError
from cosim import demos as demofiles
from cosim.demos import Demonstrations, DemosError, Plan


def _set(n_agents=3, per_agent=4, obs_size=5, n_actions=3, seed=0) -> Demonstrations:
    rng = np.random.default_rng(seed)
    n = n_agents * per_agent
    mask = rng.random((n, n_actions)) < 0.6
    action = rng.integers(n_actions, size=n)
    mask[np.arange(n), action] = True  # every action is one the env could take
    agents = [f"veh{i}" for i in range(n_agents)]
    return Demonstrations(
        agents=agents, agent=np.repeat(np.arange(n_agents), per_agent), obs=rng.normal(size=(n, obs_size)).astype(np.float32),
        mask=mask, action=action, reward=-rng.random(n).astype(np.float32), done=np.tile([0, 0, 0, 1], n_agents).astype(bool),
        traces={a: np.array([[0.0, 10.0 * i, 0.0], [50.0, 10.0 * i, 7.5]]) for i, a in enumerate(agents)},
        plans={a: Plan([f"e{i}", "e9"], i % 2) for i, a in enumerate(agents)},
    )  # fmt: skip


def test_write_then_read_gives_the_same_set(tmp_path):
    d = _set()
    demofiles.write(tmp_path / "d", d)
    back = demofiles.read(tmp_path / "d")
    assert back.agents == d.agents and back.n == d.n == 12 and back.dropped == 0
    for k in ("agent", "obs", "mask", "action", "reward", "done"):
        np.testing.assert_array_equal(getattr(back, k), getattr(d, k))
        assert getattr(back, k).dtype == getattr(d, k).dtype, k
    assert back.traces.keys() == d.traces.keys() and all(np.array_equal(back.traces[a], d.traces[a]) for a in d.agents)
    np.testing.assert_array_equal(back.positions("veh1"), [[0.0, 10.0], [50.0, 10.0]])
    assert back.positions("nobody").shape == (0, 2)
    assert back.plans == d.plans == demofiles.read_plans(tmp_path / "d")
    assert back.folder == tmp_path / "d" and len(back.digest) == 16
    # the digest covers what shapes training, not the plans
    (tmp_path / "d" / demofiles.PLANS_JSON).write_text(json.dumps({"veh0": ["x"]}))
    assert demofiles.read(tmp_path / "d").digest == back.digest
    assert demofiles.read(tmp_path / "d").plans == {"veh0": Plan(["x"], None)}  # a bare edge list is a plan


def test_what_a_reader_leaves_out(tmp_path):
    d = _set()
    d.action[0] = 7  # outside the mask's width
    d.mask[1, :] = False  # the action is masked out
    demofiles.write(tmp_path / "d", d)
    # hand-made traces may lack the time; a training-only folder may lack plans.json
    (tmp_path / "d" / demofiles.TRACES_JSON).write_text(json.dumps({"veh0": [[1, 2], [3, 4]]}))
    (tmp_path / "d" / demofiles.PLANS_JSON).unlink()
    back = demofiles.read(tmp_path / "d")
    assert back.dropped == 2 and back.n == 10 and len(back.reward) == len(back.done) == 10
    assert back.plans == {} and np.isnan(back.traces["veh0"][:, 2]).all()
    np.testing.assert_array_equal(back.positions("veh0"), [[1, 2], [3, 4]])


def _bad(folder, name, content):
    p = folder / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(json.dumps(content))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda f: None, "does not exist"),
        (lambda f: (f / demofiles.TRACES_JSON).unlink(), "lacks expert_traces.json"),
        (lambda f: _bad(f, demofiles.DEMOS_NPZ, b"not a zip"), "are unreadable"),
        (lambda f: _bad(f, demofiles.AGENTS_JSON, ["veh0"]), r"are inconsistent \(array lengths or agent indices\)"),
        (lambda f: _bad(f, demofiles.TRACES_JSON, {"veh0": [[1]]}), r"must map agent ids to lists of \[x, y, t\]"),
        (lambda f: _bad(f, demofiles.PLANS_JSON, b"{"), "plans.json is not readable JSON"),
    ],
    ids=["missing", "incomplete", "unreadable", "inconsistent", "traces", "plans"],
)
def test_a_bad_folder_is_one_clear_error(tmp_path, spoil, message):
    folder = tmp_path / "d"
    if message != "does not exist":
        demofiles.write(folder, _set())
    spoil(folder)
    with pytest.raises(DemosError, match=message) as e:
        demofiles.read(folder)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_plans_summary_and_rounds_are_checked(tmp_path):
    tmp_path.joinpath("d").mkdir()
    folder = tmp_path / "d"
    for read, name in ((demofiles.read_plans, "plans.json"), (demofiles.read_summary, "summary.json"),
                       (demofiles.read_rounds, "rounds.json")):  # fmt: skip
        with pytest.raises(DemosError, match=re.escape(f"demonstrations folder {folder} has no {name}")):
            read(folder)
    _bad(folder, demofiles.PLANS_JSON, {"veh0": {"edges": [1, 2]}, "veh1": "e1"})
    with pytest.raises(DemosError, match="holds no plans"):
        demofiles.read_plans(folder)
    _bad(folder, demofiles.SUMMARY_JSON, [1])
    with pytest.raises(DemosError, match="is not a JSON object"):
        demofiles.read_summary(folder)
    _bad(folder, demofiles.ROUNDS_JSON, {"round": 1})
    with pytest.raises(DemosError, match="is not a list of rounds"):
        demofiles.read_rounds(folder)
    _bad(folder, demofiles.SUMMARY_JSON, {"agents": 3})
    _bad(folder, demofiles.ROUNDS_JSON, [{"round": 1, "bound": {"veh0": 0.5}}])
    assert demofiles.read_summary(folder) == {"agents": 3} and demofiles.read_rounds(folder)[0]["round"] == 1


def test_what_counts_as_an_earlier_output():
    assert demofiles.is_earlier_output({"summary.json", "demos.npz"})
    assert demofiles.is_earlier_output(set(demofiles.OUTPUT_NAMES))
    assert not demofiles.is_earlier_output({"demos.npz", "agents.json"})  # no summary: not a finished output
    assert not demofiles.is_earlier_output({"summary.json", "demos.npz", "notes.txt"})  # someone else's file
