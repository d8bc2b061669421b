"""detcore-coco's plugin module (entry point ``coco`` in the ``detcore`` group).

Light: registering costs no torch or pycocotools import.
"""

from __future__ import annotations

from detcore import Command, hookimpl


@hookimpl
def detcore_datasets():
    from detcore_coco.components import coco

    return {"coco": coco}


@hookimpl
def detcore_metrics():
    from detcore_coco.components import coco_metric

    return {"coco": coco_metric}


@hookimpl
def detcore_commands():
    from detcore_coco import cli

    return {"coco": Command("COCO tools: convert VIA/VOC/YOLO to COCO, check a COCO file, make demo data", cli.configure, cli.run)}
