"""The ``detcore`` command line through real subprocesses: help, version,
``plugins`` (and ``--check``), ``config show|check``, plugin subcommands,
``-p`` and the no-torch-at-startup rule."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import detcore
from detcore.testing import run_detcore

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = FIXTURES / "good.toml"

pytestmark = pytest.mark.slow

# In tests/fixtures, where ``-p fx_components`` and the other fixture plugins are found.
detcore_cli = functools.partial(run_detcore, cwd=FIXTURES)


def test_help_lists_the_core_commands():
    proc = detcore_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "test", "predict", "plugins", "config"):
        assert f"\n    {command} " in proc.stdout
    assert "-p NAME" in proc.stdout


def test_no_command_prints_help():
    proc = detcore_cli()
    assert proc.returncode == 0 and "usage: detcore" in proc.stdout


def test_version_both_ways():
    proc = detcore_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"detcore {detcore.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "detcore", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"detcore {detcore.__version__}"


def test_unknown_command_is_a_usage_error():
    proc = detcore_cli("trian", "x.toml")
    assert proc.returncode == 2 and "invalid choice: 'trian'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugins_lists_builtins_with_distribution_and_components():
    proc = detcore_cli("plugins", "-p", "fx_components")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"detcore.data  (detcore {detcore.__version__})" in out
    assert f"detcore.commands  (detcore {detcore.__version__})" in out
    assert f"fx_components  (local module {FIXTURES / 'fx_components.py'})" in out
    block = out.split("fx_components  (", 1)[1].split("\n\n")[0]
    for line in (
        "backbones     fx_backbone",
        "necks         fx_neck",
        "heads         fx_head",
        "detectors     fx_detector",
        "datasets      fx_dataset",
        "metrics       fx_metric",
        "runner_hooks  fx_hook",
        "commands      fx-hello",
    ):
        assert line in block, (line, block)


def test_plugin_subcommand_runs_and_can_be_blocked():
    proc = detcore_cli("-p", "fx_components", "fx-hello", "--name", "tester")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "hello tester from fx_components"
    proc = detcore_cli("--help", "-p", "fx_components")
    assert "fx-hello" in proc.stdout and "say hello (fixture plugin command)" in proc.stdout
    blocked = detcore_cli("-p", "fx_components", "-p", "no:fx_components", "fx-hello")
    assert blocked.returncode == 2 and "invalid choice: 'fx-hello'" in blocked.stderr


def test_blocking_a_builtin_plugin():
    proc = detcore_cli("plugins", "-p", "no:detcore.data")
    assert proc.returncode == 0, proc.stderr
    assert "detcore.data" not in proc.stdout and "detcore.commands" in proc.stdout


def test_missing_plugin_module_is_reported():
    proc = detcore_cli("plugins", "-p", "fx_does_not_exist")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "plugin module 'fx_does_not_exist' not found" in proc.stderr


def test_config_check_ok_and_show():
    proc = detcore_cli("config", "check", GOOD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"{GOOD}: OK (detector 'fx_detector', data: train, val, 1 metric(s), 1 hook(s))"
    )
    proc = detcore_cli("config", "show", GOOD, "--set", "seed=5")
    assert proc.returncode == 0 and "seed = 5\n" in proc.stdout


def test_config_without_action_is_a_usage_error():
    proc = detcore_cli("config")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_plugins_check_passes_for_good_plugins():
    proc = detcore_cli("plugins", "--check", "-p", "fx_components")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all plugins check out" in proc.stdout


def test_plugins_check_reports_every_broken_plugin():
    proc = detcore_cli(
        "plugins",
        "--check",
        *("-p", "fx_typo_hook", "-p", "fx_wrong_args", "-p", "fx_broken"),
        *("-p", "fx_bad_runner_hook", "-p", "fx_components"),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    out = proc.stdout
    # The good plugin is still listed; each broken one has its own section.
    assert "fx_components  (local module" in out
    problems = out.split("\nproblems (", 1)[1]
    sections = {}
    for line in problems.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("    "):
            current = line.strip().split(" ", 1)[0]
            sections[current] = []
        elif line.startswith("    - "):
            sections[current].append(line[6:])
    assert set(sections) == {"fx_typo_hook", "fx_wrong_args", "fx_broken", "fx_bad_runner_hook"}
    (typo,) = sections["fx_typo_hook"]
    assert "unknown hook 'detcore_backbone'" in typo and "did you mean 'detcore_backbones'" in typo
    (wrong,) = sections["fx_wrong_args"]
    assert "detcore_before_run(runer)" in wrong and "{'runer'}" in wrong
    (broken,) = sections["fx_broken"]
    assert "RuntimeError: fx_broken cannot start" in broken
    bad = "\n".join(sections["fx_bad_runner_hook"])
    assert "unknown hook 'detcore_after_train_iteration'" in bad
    assert "did you mean 'detcore_after_train_iter'" in bad
    assert "'detcore_after_val_epoch' takes argument(s) metric" in bad
    assert "'detcore_before_run' lacks @detcore.hookimpl" in bad
    assert "backbone 'bad_backbone': parameter 'depth' is positional-only" in bad
    assert "metric 'bad_metric': the type hint of parameter 'thr' ('Threshold') cannot be evaluated" in bad


def test_a_broken_plugin_stops_other_commands_with_one_message():
    for module, needle in [
        ("fx_typo_hook", "implements unknown hook 'detcore_backbone' (did you mean 'detcore_backbones'?)"),
        ("fx_wrong_args", "plugin 'fx_wrong_args' (local module"),
    ]:
        proc = detcore_cli("config", "check", GOOD, "-p", module)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert needle in proc.stderr
        assert proc.stderr.count("\n") == 1  # one paragraph


def _modules_after(argv: list[str]) -> dict:
    code = (
        "import json, sys\n"
        "from detcore.cli.main import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:  # argparse's --help\n"
        "    rc = exc.code\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'pycocotools') if m in sys.modules)\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=FIXTURES, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_and_config_check_do_not_import_torch():
    # Installed plugins (detcore-coco, detcore-hooks, ...) are loaded too:
    # their registration modules must stay light as well.
    assert _modules_after(["--help"]) == {"rc": 0, "heavy": []}
    assert _modules_after(["config", "check", str(GOOD)]) == {"rc": 0, "heavy": []}
    assert _modules_after(["plugins", "--check"])["heavy"] == []
