"""detcore's everyday tools as CLI subcommands, contributed through the same
``detcore_commands`` hook as plugins' commands (block them with
``-p no:detcore.tools``)."""

from __future__ import annotations

from detcore import hookimpl
from detcore.catalog import Command


@hookimpl
def detcore_commands():
    # The command modules import torch only inside run(): building the
    # parser (``detcore --help``) stays light.
    from detcore.cli import analyze, benchmark, browse, export, plot

    return {
        "plot": Command("plot loss, lr and metric curves of one or more runs", plot.configure, plot.run),
        "analyze": Command(
            "summarise a run: best metric and epoch, time per iteration, data-time share",
            analyze.configure,
            analyze.run,
        ),
        "browse-dataset": Command(
            "write dataset images after the configured transforms with their ground truth drawn",
            browse.configure,
            browse.run,
        ),
        "benchmark": Command(
            "measure inference images/s and latency percentiles, and the training step time",
            benchmark.configure,
            benchmark.run,
        ),
        "export": Command(
            "export a checkpoint to TorchScript or ONNX and check it against eager mode",
            export.configure,
            export.run,
        ),
    }
