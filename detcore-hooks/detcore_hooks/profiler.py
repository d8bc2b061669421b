"""``profiler``: a torch.profiler trace of a window of training iterations."""

from __future__ import annotations

from pathlib import Path

from detcore import hookimpl


class ProfilerHook:
    """See :func:`detcore_hooks.plugin.profiler`.

    The window is counted in optimizer steps from the start of this process
    (a resumed run profiles its own first steps). Only the main process
    profiles. The trace is ``<work_dir>/<out_dir>/trace_iter<N>.json`` where
    ``N`` is the global iteration that ended the window.
    """

    name = "profiler"

    def __init__(
        self,
        *,
        wait: int,
        warmup: int,
        active: int,
        out_dir: str,
        record_shapes: bool,
        profile_memory: bool,
        with_stack: bool,
    ):
        self.wait, self.warmup, self.active = wait, warmup, active
        self.out_dir = out_dir
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.prof = None
        self.trace_path: Path | None = None
        self._seen_iter: int | None = None
        self._runner = None

    def _on_trace_ready(self, prof) -> None:
        folder = Path(self._runner.work_dir) / self.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        self.trace_path = folder / f"trace_iter{self._runner.iter}.json"
        prof.export_chrome_trace(str(self.trace_path))
        self._runner.logger.info("profiler: wrote a Chrome trace to %s", self.trace_path)

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        if not runner.is_main:
            return
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU]
        if runner.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._runner = runner
        self._seen_iter = runner.iter
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
            on_trace_ready=self._on_trace_ready,
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
        )
        self.prof.start()

    # trylast: the profiled step includes the other hooks' after_train_iter work.
    @hookimpl(trylast=True)
    def detcore_after_train_iter(self, runner, iteration: int, losses: dict) -> None:
        if self.prof is None or runner.iter == self._seen_iter:
            return
        self._seen_iter = runner.iter
        self.prof.step()
        if self.trace_path is not None:
            self._stop()

    def _stop(self) -> None:
        if self.prof is not None:
            prof, self.prof = self.prof, None
            prof.stop()

    @hookimpl
    def detcore_after_run(self, runner) -> None:
        if self.prof is None:
            return
        # Stopping inside the active window still writes what was recorded.
        self._stop()
        if self.trace_path is None:
            runner.logger.warning(
                "profiler: the run ended before the profiling window (wait %d + warmup %d + "
                "active %d steps) began recording; no trace written",
                self.wait, self.warmup, self.active,
            )
