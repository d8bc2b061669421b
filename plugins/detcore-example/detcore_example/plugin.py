"""The module the ``example`` entry point names: hook implementations and the
component factories, whose signatures are the run-file interface.

Kept light on purpose: ``detcore --help`` and ``detcore config check`` load
it, so torch is imported inside the factories, never at the top.
"""

from __future__ import annotations

from typing import Literal

from detcore import Command, ConfigCheckError, Sub, check_with, hookimpl

# An alias, not Sub["transform"] inline in the signature: linters would read
# the quoted subscript as a forward reference.
TransformSpec = Sub["transform"]


# -- backbone -------------------------------------------------------------


def _check_widths(args: dict, ctx) -> None:
    widths = args.get("widths", [16, 32, 64])
    if isinstance(widths, list) and (len(widths) < 1 or any(w < 1 for w in widths)):
        raise ConfigCheckError(f"widths must be one or more positive channel counts, got {widths}", key="widths")


@check_with(_check_widths)
def example_convnet(widths: list[int] = [16, 32, 64], norm: Literal["bn", "none"] = "bn"):  # noqa: B006
    """A plain strided CNN: a stride-2 stem, then one stride-2 stage per
    entry of ``widths``; returns the feature map of every stage."""
    from detcore_example.backbone import ConvNet

    return ConvNet(widths, norm)


# -- head -----------------------------------------------------------------


def shared_tower_fcos_head(in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 2):
    """An FCOS head whose classification and box branches share one conv
    tower (half the tower parameters of torchvision's FCOSHead). Drop-in for
    the ``head`` slot of the built-in ``fcos`` detector."""
    from detcore_example.head import SharedTowerFCOSHead

    if in_channels % 32:
        raise ConfigCheckError(
            f"GroupNorm(32) in the tower needs in_channels divisible by 32, got {in_channels}", key="in_channels"
        )
    return SharedTowerFCOSHead(in_channels, num_anchors, num_classes, num_convs)


# -- dataset --------------------------------------------------------------


def _check_csv(args: dict, ctx) -> None:
    from detcore_example.csv_format import CsvFormatError, read_csv_boxes

    csv_file, img_dir = args.get("csv_file"), args.get("img_dir")
    if isinstance(img_dir, str):
        import os

        if not os.path.isdir(img_dir):
            raise ConfigCheckError(f"image folder '{img_dir}' not found", key="img_dir")
    if isinstance(csv_file, str):
        try:
            table = read_csv_boxes(csv_file)
        except CsvFormatError as exc:
            raise ConfigCheckError(str(exc), key="csv_file") from None
        classes = args.get("classes")
        if isinstance(classes, list):
            unknown = sorted(set(table.class_names) - set(classes))
            if unknown:
                raise ConfigCheckError(
                    f"'{csv_file}' has labels {unknown} that are not in classes {classes}", key="classes"
                )


@check_with(_check_csv)
def csv_boxes(
    csv_file: str,
    img_dir: str,
    classes: list[str] | None = None,
    transforms: list[TransformSpec] = [],  # noqa: B006 - never mutated
):
    """Boxes from a CSV file with the header ``image,x1,y1,x2,y2,label``
    (pixels, xyxy; a row with empty box fields lists an image without
    objects). ``classes`` default to the labels found, sorted."""
    from detcore_example.csv_dataset import CsvBoxesDataset

    return CsvBoxesDataset(csv_file, img_dir, classes=classes, transforms=transforms)


# -- transform ------------------------------------------------------------


def _check_noise(args: dict, ctx) -> None:
    p, std = args.get("p", 0.5), args.get("std", 8.0)
    if isinstance(p, (int, float)) and not 0 <= p <= 1:
        raise ConfigCheckError(f"p must be in [0, 1], got {p}", key="p")
    if isinstance(std, (int, float)) and std < 0:
        raise ConfigCheckError(f"std must be >= 0, got {std}", key="std")


@check_with(_check_noise)
def gaussian_noise(std: float = 8.0, p: float = 0.5):
    """Add Gaussian noise of ``std`` (in 0..255 units) to the image with
    probability ``p``; boxes are unchanged."""
    from detcore_example.transforms import GaussianNoise

    return GaussianNoise(std, p)


# -- metric ---------------------------------------------------------------


def box_recall(iou_thr: float = 0.5, score_thr: float = 0.05):
    """The fraction of ground-truth boxes found by a prediction of the same
    class with ``score >= score_thr`` and IoU >= ``iou_thr``: ``recall``."""
    from detcore_example.metric import BoxRecall

    return BoxRecall(iou_thr, score_thr)


# -- runner hook ----------------------------------------------------------


def loss_history(every: int = 1, file: str = "loss_history.jsonl"):
    """Record the total loss every ``every`` iterations and write it to
    ``work_dir/file`` when training ends; the record survives resuming
    (it is saved in checkpoints)."""
    from detcore_example.hooks import LossHistory

    if every < 1:
        raise ConfigCheckError(f"every must be >= 1, got {every}", key="every")
    return LossHistory(every, file)


# -- registration ---------------------------------------------------------


@hookimpl
def detcore_backbones():
    return {"example_convnet": example_convnet}


@hookimpl
def detcore_heads():
    return {"shared_tower_fcos_head": shared_tower_fcos_head}


@hookimpl
def detcore_datasets():
    return {"csv_boxes": csv_boxes}


@hookimpl
def detcore_transforms():
    return {"gaussian_noise": gaussian_noise}


@hookimpl
def detcore_metrics():
    return {"box_recall": box_recall}


@hookimpl
def detcore_runner_hooks():
    return {"loss_history": loss_history}


@hookimpl
def detcore_commands():
    from detcore_example import cli

    return {
        "example-csv": Command(
            "CSV box files (detcore-example): summarise one, or write a tiny demo set",
            cli.configure,
            cli.run,
        )
    }
