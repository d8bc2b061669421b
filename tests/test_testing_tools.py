"""The subprocess tools ``detcore.testing`` ships fail loudly when a command
does not do what the test expects: ``run_detcore(check=True)`` on a failed
command, ``assert_user_error`` on a success, a wrong exit status or a
traceback; and the child runs outside any job the tests run in."""

from __future__ import annotations

import subprocess

import pytest

from detcore.testing import assert_user_error, run_detcore


def test_a_bad_run_file_is_one_user_error(tmp_path):
    proc = run_detcore("config", "check", tmp_path / "missing.toml", cwd=tmp_path)
    err = assert_user_error(proc, exit_code=2)
    assert "missing.toml: file not found" in err
    with pytest.raises(AssertionError, match="exit status 2, expected 1"):
        assert_user_error(proc, exit_code=1)
    with pytest.raises(AssertionError, match="(?s)exited with 2:.*file not found"):
        run_detcore("config", "check", tmp_path / "missing.toml", cwd=tmp_path, check=True)


def test_assert_user_error_refuses_success_and_tracebacks():
    ok = run_detcore("--version", check=True)
    with pytest.raises(AssertionError, match="the command succeeded"):
        assert_user_error(ok)
    crash = subprocess.CompletedProcess([], 1, "", 'Traceback (most recent call last):\n  File "x"\nValueError\n')
    with pytest.raises(AssertionError, match="a traceback, not a user error"):
        assert_user_error(crash)
    twice = subprocess.CompletedProcess([], 1, "", "detcore: error: one\ndetcore: error: two\n")
    with pytest.raises(AssertionError, match="2 'detcore: error:' messages"):
        assert_user_error(twice)


def test_the_child_is_not_a_rank_of_the_tests_job(monkeypatch):
    # As under `srun pytest` or `torchrun ... pytest`: a child that inherited
    # these would wait for ranks that never come. What env sets is kept.
    from detcore.testing import _detcore_command

    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "OMPI_COMM_WORLD_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    _, env = _detcore_command(["--version"], [], {"WORLD_SIZE": "4"})
    assert not {"RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"} & set(env)
    assert env["WORLD_SIZE"] == "4" and env["OMP_NUM_THREADS"] == "1"
