"""detcore's own CLI subcommands, contributed through the same hook as plugins'."""

from __future__ import annotations

from detcore import hookimpl
from detcore.catalog import Command


@hookimpl
def detcore_commands():
    from detcore.cli import config, plugins, predict, train
    from detcore.cli import test as test_cmd

    return {
        "train": Command("train a detector from a run file", train.configure, train.run),
        "test": Command(
            "evaluate a checkpoint on the test (or val) split", test_cmd.configure, test_cmd.run
        ),
        "predict": Command(
            "run a checkpoint on images and write drawn images and JSON",
            predict.configure,
            predict.run,
        ),
        "plugins": Command("list installed plugins and their components", plugins.configure, plugins.run),
        "config": Command("show or check a resolved run file", config.configure, config.run),
    }
