"""The names of the COCO metric's numbers. Light (no numpy): `config check`
reads them to check `checkpoint.save_best` without importing the metric."""

from __future__ import annotations

# The 12 numbers COCOeval.summarize() computes, named as MMDetection names them.
STAT_NAMES = (
    "mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l",
    "AR@1", "AR@10", "AR@100", "AR_s@100", "AR_m@100", "AR_l@100",
)


def stat_keys(iou_type: str) -> list[str]:
    """The keys the coco metric returns for one IoU type (``bbox_mAP``, ...)."""
    return [f"{iou_type}_{n}" for n in STAT_NAMES]
