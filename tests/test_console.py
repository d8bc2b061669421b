"""The training console without a [[hooks]] table: a progress bar on a real
pseudo-terminal, plain lines through a pipe; never two lines for one
iteration, each validation's metrics once, the environment report in the log
file only; a ``progress`` table changes the mode and interval."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import PLUGINS_DIR, train, write_run  # noqa: E402

from detcore.testing import run_detcore, write_runfile  # noqa: E402

pytestmark = pytest.mark.slow

TERMS = ("classification", "bbox_regression", "bbox_ctrness")  # FCOS's loss terms
NUMBER = r"\d+\.\d{4}"
# 8 images, batch 4: 2 iterations per epoch, 2 epochs; the runner logs every 3.
SCHEDULE = {"max_epochs": 2, "log_interval": 3}


def iteration_lines(text: str) -> list[int]:
    """The iteration of every console line that reports one."""
    return [int(m) for m in re.findall(r"^\S+ \S+ I epoch \d/2 iter (\d+)/4 ", text, re.M)]


def log_file(work: Path) -> str:
    (path,) = work.glob("*.log")
    return path.read_text()


def test_plain_lines_when_stdout_is_not_a_terminal(tmp_path):
    path = write_run(tmp_path, [], train=SCHEDULE)
    proc = run_detcore("train", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\r" not in out and "it/s" not in out  # no bar
    # A line after the first iteration (log_interval is 3), then the runner's
    # lines at 3 and at the end: each iteration at most once.
    assert iteration_lines(out) == [1, 3, 4]
    first = re.search(r"^.* I epoch 1/2 iter 1/4 lr 0\.02 loss (\S+) \((.*)\) eta (\S+) \(then every 3 iterations\)$",
                      out, re.M)
    assert first, out
    assert re.fullmatch(NUMBER, first.group(1))
    assert all(f"{t} " in first.group(2) for t in TERMS) and re.fullmatch(r"\d+:\d\d:\d\d", first.group(3))
    assert re.search(rf"I epoch 2/2 iter 3/4 lr 0\.02 loss {NUMBER} \(.*\) time .* eta \d+:\d\d:\d\d mem ", out)
    # Validation progress, then its metrics: once per validation, never repeated at the end.
    assert len(re.findall(r"I val batch 1/1 eta ", out)) == 2
    assert len(re.findall(r"score +0\.1000", out)) == 1 and len(re.findall(r"score +0\.2000", out)) == 1
    assert "final metrics" not in out and out.count("training done: 4 iterations") == 1
    # The environment: one line here, the whole report in the log file.
    assert len(re.findall(r"^.* I environment: python \S+, torch \S+, torchvision \S+, device cpu", out, re.M)) == 1
    assert "  torchvision:" not in out and "  plugins:" not in out
    log = log_file(tmp_path / "run")
    assert "environment:\n  python: " in log and "  torchvision: " in log and "  plugins:" in log
    assert iteration_lines(log) == [1, 3, 4]


def test_progress_bar_on_a_terminal(tmp_path):
    path = write_run(tmp_path, [], train=SCHEDULE)
    proc = run_detcore("train", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR], terminal=True)
    out = proc.stdout
    assert proc.returncode == 0, out
    # A bar per epoch with the loss, lr and ETA, and one per validation.
    for epoch in (1, 2):
        assert re.search(rf"\repoch {epoch}/2: +100%\|[^\r]*\| 2/2 \[[^\r]*loss {NUMBER} lr 0\.02 eta \d+:\d\d:\d\d\]", out), out
    first, second = out.split("validation after epoch 1", 1)
    for before in (first, second.split("validation after epoch 2", 1)[0]):
        assert re.search(r"\rval: +100%\|[^\r]*\| 1/1 ", before), out
    # The bar replaces the iteration lines on the console; the log file keeps them.
    assert iteration_lines(out.replace("\r\n", "\n")) == []
    assert iteration_lines(log_file(tmp_path / "run")) == [3, 4]
    # Validation results and checkpoints are written above the bar, once each.
    assert len(re.findall(r"score +0\.1000", out)) == 1 and len(re.findall(r"score +0\.2000", out)) == 1
    assert out.count("checkpoint saved:") == 2 and out.count("training done: 4 iterations") == 1
    assert out.count("I environment: python") == 1 and "  torchvision:" not in out


def test_a_progress_table_sets_mode_and_interval(tmp_path, capsys):
    # Lines on a terminal, one every iteration: the runner's lines at 3 and 4,
    # the progress lines at 1 and 2, none twice.
    path = write_run(tmp_path, [{"type": "progress", "mode": "lines", "interval": 1}], name="lines", train=SCHEDULE)
    proc = run_detcore("train", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR], terminal=True)
    assert proc.returncode == 0, proc.stdout
    out = proc.stdout.replace("\r\n", "\n")
    assert "it/s" not in out and iteration_lines(out) == [1, 2, 3, 4]
    # A bar into a pipe when asked for (here: pytest's captured stdout).
    path = write_run(tmp_path, [{"type": "progress", "mode": "bar"}], name="bar", train={"max_epochs": 1})
    assert train(path) == 0
    captured = capsys.readouterr().out
    assert re.search(rf"epoch 1/1: +100%\|[^\r]*\| 2/2 \[[^\r]*loss {NUMBER} lr 0\.02 eta ", captured), captured
    assert re.search(r"val: +100%\|[^\r]*\| 1/1 ", captured)


def test_progress_table_is_checked(tmp_path):
    path = write_run(tmp_path, [{"type": "progress", "interval": 0}], train=SCHEDULE)
    proc = run_detcore("config", "check", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert proc.returncode == 2
    assert "hooks[0].interval" in proc.stderr and "positive integer" in proc.stderr


def test_docs_console_table_is_a_valid_run_file_table(tmp_path):
    """docs/training.md's `progress` table, as written, in a run file."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = doc.split("## The console", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    assert 'type = "progress"' in block
    path = write_run(tmp_path, None, train=SCHEDULE)  # the block's [[hooks]] only
    write_runfile(path, path.read_text() + "\n" + block)
    proc = run_detcore("config", "check", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert proc.returncode == 0, proc.stderr
    assert "1 hook(s)" in proc.stdout


def test_detcore_test_shows_its_progress(tmp_path):
    """``detcore test`` is not silent while it predicts: a bar on a terminal
    (cleared before the results), ``test batch k/N eta`` lines elsewhere."""
    path = write_run(tmp_path, [], train={"max_iters": 1, "log_interval": 1, "_replace_": True})
    trained = run_detcore("train", path, cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert trained.returncode == 0, trained.stderr[-3000:]
    (ckpt,) = (tmp_path / "run").glob("iter_*.pth")
    test = ("test", path, "--checkpoint", ckpt, "--batch-size", "1")  # 4 val images: 4 batches

    piped = run_detcore(*test, cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert piped.returncode == 0, piped.stderr[-3000:]
    lines = re.findall(r"^test batch (\d)/4 eta \d+:\d\d:\d\d$", piped.stdout, re.M)
    assert lines == ["1", "2", "3", "4"], piped.stdout
    assert "\r" not in piped.stdout
    assert piped.stdout.index("test batch 4/4") < piped.stdout.index("evaluated in")

    term = run_detcore(*test, cwd=tmp_path, plugin_paths=[PLUGINS_DIR], terminal=True)
    assert term.returncode == 0, term.stdout[-3000:]
    assert re.search(r"\rtest: +100%\|[^\r]*\| 4/4 ", term.stdout), term.stdout
    assert "test batch" not in term.stdout
    assert term.stdout.rindex("4/4") < term.stdout.index("evaluated in")
