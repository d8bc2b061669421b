"""Reading Pascal VOC XML annotations (standard library only, no torch).

VOC pixel coordinates are 1-based and inclusive: a box from ``xmin`` to
``xmax`` covers ``xmax - xmin + 1`` pixels. They are converted to detcore's
continuous 0-based xyxy (``x1 = xmin - 1``, ``x2 = xmax``), as Detectron2 and
torchvision's references do.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs

from detcore.errors import DetcoreError

# The 20 classes of VOC2007/2012 in the devkit's order.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


class VocFormatError(DetcoreError):
    """A VOC folder or XML file that cannot be read as written."""

    exit_code = 2


@attrs.frozen
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # continuous xyxy, 0-based pixels
    difficult: bool


@attrs.frozen
class VocRecord:
    image_id: str  # the file stem listed in ImageSets/Main/<split>.txt
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]
    degenerate: int = 0  # boxes dropped because xmax < xmin or ymax < ymin


def split_ids(root: str | os.PathLike, split: str) -> list[str]:
    path = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        found = sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt"))
        raise VocFormatError(
            f"split file '{path}' not found; splits in this folder: {', '.join(found) or 'none'}"
        )
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _text(node: ET.Element, tag: str, path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise VocFormatError(f"{path}: <{node.tag}> has no <{tag}>")
    return child.text.strip()


def read_xml(path: str | os.PathLike, image_id: str | None = None) -> VocRecord:
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise VocFormatError(f"annotation file '{path}' not found") from None
    except ET.ParseError as exc:
        raise VocFormatError(f"{path}: not valid XML ({exc})") from None
    size = root.find("size")
    if size is None:
        raise VocFormatError(f"{path}: no <size> element")
    width, height = int(float(_text(size, "width", path))), int(float(_text(size, "height", path)))
    objects, degenerate = [], 0
    for obj in root.findall("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            raise VocFormatError(f"{path}: an <object> has no <bndbox>")
        xmin, ymin, xmax, ymax = (float(_text(bnd, k, path)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin or (xmax == xmin and ymax == ymin):
            # Real data has these (BCCD has two single-point boxes): they mark no object.
            degenerate += 1
            continue
        diff = obj.find("difficult")
        difficult = diff is not None and (diff.text or "0").strip() == "1"
        objects.append(
            VocObject(_text(obj, "name", path), (xmin - 1.0, ymin - 1.0, xmax, ymax), difficult)
        )
    filename = root.findtext("filename") or f"{path.stem}.jpg"
    return VocRecord(image_id or path.stem, filename.strip(), width, height, tuple(objects), degenerate)


def read_split(root: str | os.PathLike, split: str) -> list[VocRecord]:
    """The records of ``ImageSets/Main/<split>.txt``, in the file's order."""
    ann_dir = Path(root) / "Annotations"
    return [read_xml(ann_dir / f"{i}.xml", i) for i in split_ids(root, split)]


def default_classes(root: str | os.PathLike) -> list[str]:
    """Class names when a run file gives none: VOC's 20 in the devkit order if
    every name in ``Annotations/`` is one of them, else the names found,
    sorted (read from all XML files, so that every split agrees)."""
    names: set[str] = set()
    for path in sorted((Path(root) / "Annotations").glob("*.xml")):
        try:
            tree = ET.parse(path)
        except ET.ParseError as exc:
            raise VocFormatError(f"{path}: not valid XML ({exc})") from None
        # object/name only: <owner> and person-layout <part>s have names too.
        names.update((n.text or "").strip() for n in tree.getroot().findall("object/name"))
    names.discard("")
    if names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)
