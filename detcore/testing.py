"""Testing plugins: register a plugin in-process on a fresh plugin manager,
write a run file from a dict, validate it, train a few iterations on tiny
synthetic data, and assert what was built and which hooks ran.

pytest's ``pytester`` is the model. In a plugin's ``conftest.py``::

    pytest_plugins = ["detcore.testing"]

and in its tests::

    from detcore_foo import plugin

    def test_backbone_trains(detcore_tester):
        detcore_tester.register(plugin, "foo")
        result = detcore_tester.train(
            detcore_tester.tiny_run(model={"backbone": {"type": "foo_backbone"}}), iters=2
        )
        result.assert_built("backbone", "foo_backbone")

Nothing here imports torch until :meth:`DetcoreTester.train` runs; the
plugin under test is registered exactly as an entry point would register it
(same names, same validation), but without installing anything.

The module is also a detcore plugin with the pieces detcore's own tests use
to drive a run (:meth:`DetcoreTester.register_test_components`, or
``-p detcore.testing`` / ``plugins = ["detcore.testing"]``): the runner hooks
``stop_at`` (:class:`StopAt`), ``signal_at`` (:class:`SignalAt`) and
``nan_at`` (:class:`NanAt`), and the metric ``scripted``
(:class:`ScriptedMetric`)::

    detcore_tester.register_test_components()
    result = detcore_tester.train(tiny_run(
        hooks=[{"type": "stop_at", "at_iter": 1}], train={"max_iters": 5}))
    assert result.runner.iter == 1
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from detcore import hookimpl
from detcore.catalog import Catalog, Component
from detcore.errors import RunFileError
from detcore.runfile.loader import merge

__all__ = [
    "CliResult",
    "DetcoreTester",
    "NanAt",
    "RecordingCatalog",
    "ScriptedMetric",
    "SignalAt",
    "StopAt",
    "TrainResult",
    "assert_user_error",
    "detcore_tester",
    "read_scalars",
    "run_detcore",
    "start_detcore",
    "tiny_run",
    "write_runfile",
]


class RecordingCatalog(Catalog):
    """A catalog that remembers every component it builds, in order:
    ``built`` holds ``(kind, name, plugin, key path, object)``."""

    def __init__(self, components: list[Component]):
        super().__init__(components)
        self.built: list[tuple[str, str, str, str, Any]] = []

    def _build(self, kind: str, table: dict, path: str, extra: dict, sources: dict[str, str]) -> Any:
        # Every build goes through here: Catalog.build and nested Spec calls.
        obj = super()._build(kind, table, path, extra, sources)
        comp = self.get(kind, table["type"])
        self.built.append((kind, comp.name, comp.plugin, path, obj))
        return obj


def tiny_run(*layers: Mapping[str, Any], **changes: Any) -> dict:
    """A run-file dict that trains in seconds on CPU: the built-in ``fcos``
    detector with the ``tiny`` backbone, the built-in ``synthetic`` dataset
    of 64-pixel images, batch 2, no workers, 2 iterations, no
    checkpoints kept beyond the last. ``layers`` (dicts) and then
    ``changes`` (top-level keys) are deep-merged into it, as ``extends``
    would: a table whose ``type`` changes replaces the default one."""
    run = {
        "seed": 0,
        "device": "cpu",
        "model": {
            "type": "fcos",
            "num_classes": 3,
            "backbone": {"type": "tiny"},
            "min_size": 64,
            "max_size": 64,
        },
        "data": {
            "batch_size": 2,
            "workers": 0,
            "train": {"type": "synthetic", "num_images": 4, "image_size": 64, "num_classes": 3},
        },
        "optimizer": {"type": "sgd", "lr": 0.001},
        "lr_schedule": {"type": "constant"},
        "train": {"max_iters": 2, "log_interval": 1, "val_interval": 1000},
        "checkpoint": {"interval": 1000, "keep": 1},
    }
    for layer in [*layers, changes]:
        merge(run, copy.deepcopy(dict(layer)))
    return run


@attrs.define
class TrainResult:
    """What a :meth:`DetcoreTester.train` run left behind."""

    run: Any  # detcore.runfile.Run
    work_dir: Path
    built: list[tuple[str, str, str, str, Any]]
    hook_calls: list[tuple[str, tuple[str, ...]]]
    runner: Any = None

    def components(self, kind: str) -> list[str]:
        """Names of the components of ``kind`` that were built, in order."""
        return [name for k, name, *_ in self.built if k == kind]

    def objects(self, kind: str, name: str | None = None) -> list[Any]:
        """The built objects of ``kind`` (and ``name``)."""
        return [obj for k, n, _, _, obj in self.built if k == kind and name in (None, n)]

    def assert_built(self, kind: str, name: str) -> Any:
        """Assert a ``kind`` component named ``name`` (or ``plugin:name``) was
        built during the run; return the (first) built object."""
        plugin, _, short = name.rpartition(":")
        for k, n, p, _, obj in self.built:
            if k == kind and n == short and plugin in ("", p):
                return obj
        seen = ", ".join(f"{k} {p}:{n}" for k, n, p, _, _ in self.built) or "nothing"
        raise AssertionError(f"no {kind} '{name}' was built; built: {seen}")

    def hooks_called(self, plugin: str | None = None) -> list[str]:
        """Names of the hooks called during the run (in order, repeated),
        only those that reached an implementation of ``plugin`` if given."""
        return [h for h, plugins in self.hook_calls if plugin is None or plugin in plugins]

    def assert_hook_called(self, hook_name: str, plugin: str | None = None) -> int:
        """Assert ``hook_name`` was called (reaching ``plugin``'s
        implementation, if given; a runner hook from ``[[hooks]]`` is the
        plugin ``runner-hook:<index>:<type>``); return how many times."""
        count = self.hooks_called(plugin).count(hook_name)
        if not count:
            who = f" reaching plugin '{plugin}'" if plugin else ""
            called = sorted(set(self.hooks_called()))
            raise AssertionError(f"hook {hook_name} was never called{who}; called: {', '.join(called)}")
        return count

    def scalars(self, mode: str | None = None) -> list[dict]:
        """The lines of the run's ``scalars.jsonl`` (``[]`` before it is
        written), only ``mode``'s if given (:func:`read_scalars`)."""
        return read_scalars(self.work_dir, mode)


class DetcoreTester:
    """A fresh plugin manager with detcore's built-in plugins, a scratch
    directory, and helpers to validate and train run files there.

    Installed entry points are not loaded unless ``entrypoints=True``: a
    test sees detcore's built-ins plus the plugins it registers, whatever
    else is installed.
    """

    def __init__(self, path: str | os.PathLike, *, entrypoints: bool = False, plugin_args: Sequence[str] = ()):
        from detcore.plugins import get_plugin_manager

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.pm = get_plugin_manager(plugin_args, entrypoints=entrypoints)
        self._last_work_dir: Path | None = None  # what resume="auto" continues

    # -- plugins ----------------------------------------------------------

    def register(self, plugin: Any, name: str | None = None, *, distribution: str = "(test)", version: str = "") -> Any:
        """Register ``plugin`` (a module or object with ``@detcore.hookimpl``
        functions) as an entry point named ``name`` would be: hook
        implementations are validated against the specs, and a misspelled
        hook name raises :class:`detcore.errors.PluginError`."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        self.pm.register_origin(plugin, name, distribution, version)
        self.pm.check_hooks()
        return plugin

    def register_test_components(self) -> None:
        """Register this module's test components (runner hooks
        ``stop_at``, ``signal_at``, ``nan_at``; metric ``scripted``) as the
        plugin ``detcore.testing``."""
        self.register(sys.modules[__name__], "detcore.testing")

    @property
    def catalog(self) -> RecordingCatalog:
        """The components of the registered plugins (built afresh)."""
        return RecordingCatalog.from_plugin_manager(self.pm)

    # -- run files --------------------------------------------------------

    def write_runfile(self, data: Mapping[str, Any] | str, name: str = "run.toml") -> Path:
        """Write ``data`` (a dict, or TOML text) as ``name`` in the scratch
        directory and return its path (:func:`write_runfile`)."""
        return write_runfile(self.path / name, data)

    def load(self, data: Mapping[str, Any] | str | os.PathLike, overrides: Iterable[str] = ()):
        """Validate a run file (a dict, or a path) against the registered
        plugins; return the :class:`detcore.runfile.Run` (whose catalog
        records what gets built). Raises :class:`RunFileError` as the CLI
        would report it."""
        from detcore.runfile import load_run

        path = Path(data) if isinstance(data, (str, os.PathLike)) else self.write_runfile(data)
        run = load_run(path, list(overrides), pm=self.pm)
        return attrs.evolve(run, catalog=RecordingCatalog.from_plugin_manager(run.pm))

    def check_error(self, data: Mapping[str, Any] | str | os.PathLike, overrides: Iterable[str] = ()) -> RunFileError:
        """Assert the run file is rejected; return the error (``.key``,
        ``.file``, ``str(err)``) for further assertions."""
        try:
            self.load(data, overrides)
        except RunFileError as exc:
            return exc
        raise AssertionError("the run file was accepted, expected a RunFileError")

    # -- training ---------------------------------------------------------

    def train(
        self,
        data: Mapping[str, Any] | str | os.PathLike,
        overrides: Iterable[str] = (),
        *,
        iters: int | None = None,
        resume: str | None = None,
    ) -> TrainResult:
        """Validate and train a run file in-process (CPU, one thread is
        enough), with ``work_dir`` inside the scratch directory unless the
        run file sets it (``work_dir``; a later call that does not resume gets
        ``work_dir_2``, ... since detcore refuses a new run over one that
        trained); ``iters`` overrides ``train.max_iters``, ``resume`` is
        ``detcore train --resume`` (a checkpoint path or ``"auto"``, which
        continues the last run).
        Returns a :class:`TrainResult` with the components built and hooks
        called."""
        overrides = list(overrides)
        if iters is not None:
            overrides += [f"train.max_iters={int(iters)}"]
        run = self.load(data, overrides)
        if run.cfg.work_dir is None:
            run = self.load(data, [*overrides, f"work_dir={_toml_str(self._work_dir(resume))}"])
        calls: list[tuple[str, tuple[str, ...]]] = []

        def before(hook_name, hook_impls, kwargs):
            calls.append((hook_name, tuple(impl.plugin_name for impl in hook_impls)))

        undo = self.pm.add_hookcall_monitoring(before, lambda *a: None)
        try:
            runner = _train(run, resume)
        finally:
            undo()
        return TrainResult(run, Path(run.work_dir), list(run.catalog.built), calls, runner)

    def _work_dir(self, resume: str | None) -> Path:
        from detcore.engine.workdir import previous_run

        if resume:
            inside = Path(resume).parent if resume != "auto" else None
            chosen = inside if inside is not None and inside.parent == self.path else (
                self._last_work_dir or self.path / "work_dir"
            )
        else:
            n = 1
            chosen = self.path / "work_dir"
            while previous_run(chosen) is not None:
                n += 1
                chosen = self.path / f"work_dir_{n}"
        self._last_work_dir = chosen
        return chosen

    # -- the command line -------------------------------------------------

    def main(self, *argv: str) -> CliResult:
        """Run a ``detcore`` command in-process on this tester's plugin
        manager (so in-process registered plugins' subcommands and
        components are there), in the scratch directory; output captured."""
        import contextlib
        import io

        from detcore.cli.main import build_parser
        from detcore.errors import DetcoreError

        out, err = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(self.path)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    catalog = self.catalog
                    args = build_parser(catalog).parse_args(list(argv))
                    args.plugin_args, args.pm, args.catalog = [], self.pm, catalog
                    ret = int(args._run(args) or 0) if getattr(args, "_run", None) else 0
                except DetcoreError as exc:
                    print(f"detcore: error: {exc}", file=sys.stderr)
                    ret = exc.exit_code
                except SystemExit as exc:  # argparse: --help, usage errors
                    ret = exc.code if isinstance(exc.code, int) else 1
        finally:
            os.chdir(cwd)
        return CliResult(ret, out.getvalue(), err.getvalue())

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
        plugin_paths: Sequence[str | os.PathLike] = (),
        terminal: bool = False,
    ) -> subprocess.CompletedProcess:
        """Run the real ``detcore`` command (of this Python environment) in
        the scratch directory: :func:`run_detcore` with ``cwd`` set. Plugins
        registered in-process are not seen by it: use ``-p MODULE`` (with
        ``plugin_paths``) or install the distribution."""
        return run_detcore(
            *args, cwd=self.path, env=env, timeout=timeout, plugin_paths=plugin_paths, terminal=terminal
        )


def write_runfile(path: str | os.PathLike, data: Mapping[str, Any] | str) -> Path:
    """Write ``data`` (a run-file dict, e.g. from :func:`tiny_run`, or TOML
    text) to ``path`` as a run file (parent folders made); return the path.
    A ``None`` value is left out (TOML has no null), so ``tiny_run(train=
    {"max_iters": None, "max_epochs": 1})`` drops the default ``max_iters``."""
    from detcore.runfile.toml_writer import dumps

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else dumps(dict(data)), encoding="utf-8")
    return path


def read_scalars(work_dir: str | os.PathLike, mode: str | None = None) -> list[dict]:
    """The records of ``WORK_DIR/scalars.jsonl`` in order (``[]`` before it
    is written), only those whose ``mode`` is ``mode`` (``"train"``,
    ``"val"``) if given."""
    from detcore.cli.analyze import read_scalars as read

    if not (Path(work_dir) / "scalars.jsonl").is_file():
        return []
    return [r for r in read(work_dir) if mode is None or r.get("mode") == mode]


def run_detcore(
    *args: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    plugin_paths: Sequence[str | os.PathLike] = (),
    env: Mapping[str, str | None] | None = None,
    timeout: float = 300,
    terminal: bool = False,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Run the real ``detcore ARGS`` of this Python environment in a
    subprocess, output captured as text; the exit status is ``returncode``
    (``check=True``: an ``AssertionError`` with the output's end unless it
    is 0).

    ``plugin_paths`` go first on the child's ``PYTHONPATH`` (for ``-p
    MODULE`` plugins that are not installed); ``env`` is added to this
    process's environment (a value ``None`` removes that variable). Torch is
    pinned to one thread (``OMP_NUM_THREADS=1``) unless ``env`` says
    otherwise: several torch processes on few cores otherwise run many times
    slower. The variables by which torchrun, Slurm or MPI make a process a
    rank of a job are not passed on unless ``env`` sets them: the command
    runs on its own even when the tests run inside such a job. With
    ``terminal=True`` stdout and stderr are one pseudo-terminal (what a user
    at a console sees: progress bars, colours), returned as ``stdout``."""
    cmd, full_env = _detcore_command(args, plugin_paths, env)
    if terminal:
        proc = _run_on_terminal(cmd, cwd, full_env, timeout)
    else:
        proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"detcore {' '.join(map(str, args))} exited with {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        )
    return proc


def assert_user_error(proc: subprocess.CompletedProcess, exit_code: int | None = None) -> str:
    """Assert a finished ``detcore`` command failed the way bad input must:
    a non-zero exit status (``exit_code`` if given: 2 for a run-file or
    usage error, 1 otherwise), exactly one ``detcore: error:`` paragraph on
    stderr and no Python traceback. Returns stderr for further checks (that
    it names the file, key or record, and the fix)."""
    out = f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    if exit_code is None:
        assert proc.returncode != 0, f"the command succeeded, expected an error:\n{out}"
    else:
        assert proc.returncode == exit_code, f"exit status {proc.returncode}, expected {exit_code}:\n{out}"
    assert "Traceback (most recent call last)" not in proc.stderr, f"a traceback, not a user error:\n{out}"
    count = proc.stderr.count("detcore: error:")
    assert count == 1, f"{count} 'detcore: error:' messages, expected one:\n{out}"
    return proc.stderr


def start_detcore(
    *args: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
    plugin_paths: Sequence[str | os.PathLike] = (),
    env: Mapping[str, str | None] | None = None,
) -> subprocess.Popen:
    """Start ``detcore ARGS`` as :func:`run_detcore` runs it (same command
    and environment) without waiting for it, stdout and stderr text pipes:
    for a test that acts while a run is alive (a second run in the same work
    dir, two jobs at once). ``proc.communicate(timeout=...)`` collects it."""
    cmd, full_env = _detcore_command(args, plugin_paths, env)
    return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _detcore_command(
    args: Sequence[str | os.PathLike], plugin_paths: Sequence[str | os.PathLike], env: Mapping[str, str | None] | None
) -> tuple[list[str], dict[str, str]]:
    from detcore.engine.dist_env import launcher_variable

    exe = Path(sys.executable).with_name("detcore")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "detcore"]
    cmd += [str(a) for a in args]
    # Not a rank of a job this process may run in (a test suite under srun or torchrun).
    inherited = {k: v for k, v in os.environ.items() if not launcher_variable(k)}
    full_env = {**inherited, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    if plugin_paths:
        paths = [str(p) for p in plugin_paths] + [full_env.get("PYTHONPATH") or ""]
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return cmd, {k: v for k, v in full_env.items() if v is not None}


def _run_on_terminal(cmd: list[str], cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise subprocess.TimeoutExpired(cmd, timeout, output=b"".join(chunks))
            if not select.select([master], [], [], min(left, 1.0))[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    returncode = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    return subprocess.CompletedProcess(cmd, returncode, b"".join(chunks).decode(errors="replace"), "")


def _toml_str(value: Any) -> str:
    import json

    return json.dumps(str(value))


def _train(run, resume: str | None = None):
    """Train a validated run in this process with the runner ``detcore
    train`` uses."""
    from detcore.engine.runner import Runner

    runner = Runner(run, resume=resume)
    status = runner.train()
    if status:
        raise AssertionError(f"training ended with status {status}")
    return runner


# ----------------------------------------------------------------------
# components that drive a run (the plugin ``detcore.testing``)
# ----------------------------------------------------------------------


class StopAt:
    """Runner hook ``stop_at``: sets ``runner.stop_training`` once
    ``runner.iter`` reaches ``at_iter`` (on every rank alike), so the run
    saves a checkpoint and ends there, as an early stop would."""

    def __init__(self, at_iter: int):
        self.at_iter = at_iter

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        if runner.iter >= self.at_iter:
            runner.stop_training = True


class SignalAt:
    """Runner hook ``signal_at``: sends ``signal`` (``"SIGTERM"`` or
    ``"SIGINT"``) to this process right after optimizer step ``at_iter``
    (on rank ``rank`` only; ``-1``: every rank), to test what an interrupted
    run saves and prints."""

    def __init__(self, at_iter: int, signal: str = "SIGTERM", rank: int = -1):
        self.at_iter = at_iter
        self.signal = signal
        self.rank = rank

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        import signal

        if runner.iter == self.at_iter and self.rank in (-1, runner.rank):
            os.kill(os.getpid(), getattr(signal, self.signal))


class NanAt:
    """Runner hook ``nan_at``: fills the model's first parameter with NaN
    before iteration ``at_iter`` (on rank ``rank`` only; ``-1``: every rank),
    so the loss of that iteration is not finite."""

    def __init__(self, at_iter: int, rank: int = -1):
        self.at_iter = at_iter
        self.rank = rank

    @hookimpl
    def detcore_before_train_iter(self, runner, iteration, batch):
        if iteration == self.at_iter and self.rank in (-1, runner.rank):
            import torch

            with torch.no_grad():
                next(runner.model.parameters()).fill_(float("nan"))


class ScriptedMetric:
    """Metric ``scripted``: returns ``values[k]`` as ``name`` at its k-th
    evaluation (:meth:`index`; the last value repeats), to test what a run
    does with a known metric sequence (``checkpoint.save_best``, early
    stopping), and what it was given: ``images`` (predictions),
    ``distinct_images`` (distinct ``image_id``), ``checksum`` (the sum of all
    boxes and scores, to compare single- and multi-process evaluation) and
    ``max_x`` (the largest box x2). It asserts the metric contract's CPU
    tensors."""

    def __init__(self, values: list[float] = (), name: str = "score"):
        self.values = list(values)
        self.name = name
        self.calls = 0

    def index(self) -> int:
        """Which value the current evaluation returns (override to script by
        something else, e.g. the epoch of a resumed run)."""
        return self.calls

    def evaluate(self, predictions, dataset) -> dict[str, float]:
        import torch

        k = min(self.index(), len(self.values) - 1)
        value = self.values[k] if self.values else 0.0
        self.calls += 1
        ids = [int(p["image_id"]) for p in predictions]
        tensors = [t for p in predictions for t in (p["boxes"], p["scores"])]
        assert all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tensors), (
            "predictions must hold CPU tensors"
        )
        return {
            self.name: float(value),
            "images": float(len(ids)),
            "distinct_images": float(len(set(ids))),
            "checksum": sum(float(p["boxes"].double().sum()) + float(p["scores"].double().sum()) for p in predictions),
            "max_x": max((float(p["boxes"][:, 2].max()) for p in predictions if len(p["boxes"])), default=0.0),
        }


@hookimpl
def detcore_runner_hooks():
    return {"stop_at": StopAt, "signal_at": SignalAt, "nan_at": NanAt}


@hookimpl
def detcore_metrics():
    return {"scripted": ScriptedMetric}


@attrs.frozen
class CliResult:
    """Exit status and captured output of :meth:`DetcoreTester.main`."""

    ret: int
    out: str
    err: str


try:  # the fixture, when pytest is there (``pytest_plugins = ["detcore.testing"]``)
    import pytest
except ImportError:  # pragma: no cover - detcore itself does not need pytest
    pass
else:

    @pytest.fixture()
    def detcore_tester(tmp_path) -> DetcoreTester:
        """A :class:`DetcoreTester` in a fresh ``tmp_path`` with a fresh
        plugin manager (detcore's built-ins only), torch on one thread."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield DetcoreTester(tmp_path / "detcore")
        finally:
            torch.set_num_threads(threads)
