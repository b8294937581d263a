"""COSIM_HOME: one resolver for every path under it, and one clear error when it cannot be used."""

from __future__ import annotations

import os

import pytest

from core.paths import HomeError, cosim_home, home_dir


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME is a fresh folder and the current folder another one, so a path that lands in either shows."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_is_the_default(home, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("COSIM_HOME", raising=False)
    else:
        monkeypatch.setenv("COSIM_HOME", value)
    assert cosim_home() == home / "user" / ".cache" / "cosim"


def test_tilde_is_the_users_home(home, monkeypatch):
    monkeypatch.setenv("COSIM_HOME", "~/x")
    assert home_dir("demos") == home / "user" / "x" / "demos"
    assert (home / "user" / "x" / "demos").is_dir() and not (home / "work" / "~").exists()


def test_relative_is_taken_from_the_current_folder_once(home, monkeypatch):
    monkeypatch.setenv("COSIM_HOME", "rel")
    assert cosim_home() == home / "work" / "rel"
    assert os.environ["COSIM_HOME"] == str(home / "work" / "rel")  # child processes started elsewhere agree
    monkeypatch.chdir(home)
    assert cosim_home() == home / "work" / "rel"


def test_llm_cache_and_demonstrations_follow_cosim_home(home, monkeypatch):
    from evaluation.demos_provider import demos_root
    from llm.config import SEDSettings

    monkeypatch.setenv("COSIM_HOME", "")
    assert SEDSettings().cache_location() == str(home / "user" / ".cache" / "cosim" / "llm-cache.sqlite")
    assert SEDSettings(cache_file="/x.sqlite").cache_location() == "/x.sqlite"
    assert SEDSettings(cache=False).cache_location() is None
    monkeypatch.setenv("COSIM_HOME", "~/x")
    assert demos_root() == home / "user" / "x" / "demos"
    assert list((home / "work").iterdir()) == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("{file}", r"^COSIM_HOME=.*a-file: .*a-file is a file, not a folder; set COSIM_HOME to a folder you "
                   r"can write$"),
        ("{file}/sub", r"^COSIM_HOME=.*a-file/sub: .*a-file is a file, not a folder"),
        ("/proc/cosim-test", r"^COSIM_HOME=/proc/cosim-test: cannot create /proc/cosim-test/scenarios \("),
        ("~no-such-user-cosim/x", r"^COSIM_HOME='~no-such-user-cosim/x': cannot expand '~no-such-user-cosim'"),
    ],
)
def test_unusable_home_is_one_clear_error(home, monkeypatch, value, message):
    (home / "a-file").write_text("not a folder\n")
    monkeypatch.setenv("COSIM_HOME", value.replace("{file}", str(home / "a-file")))
    with pytest.raises(HomeError, match=message):
        home_dir("scenarios")
