"""Converters to COCO: VIA polygons (the balloon example), Pascal VOC XML, YOLO txt.

Each returns ``(coco_dict, report)``; the report counts what was dropped or
fixed (zero-area boxes, boxes clipped to the image, unreadable records) so
that nothing is lost silently. Image sizes are read from the image headers
(EXIF orientation applied), except for VOC, whose XML carries them.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import attrs

from detcore import ImageReadError, image_size
from detcore.errors import DetcoreError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ConvertError(DetcoreError):
    """Input that a converter cannot turn into COCO."""


@attrs.define
class Report:
    images: int = 0
    annotations: int = 0
    zero_area: list[str] = attrs.field(factory=list)
    clipped: int = 0
    problems: list[str] = attrs.field(factory=list)

    def lines(self) -> list[str]:
        out = [f"{self.images} images, {self.annotations} annotations"]
        if self.zero_area:
            out.append(f"dropped {len(self.zero_area)} zero-area box(es):")
            out += [f"  {z}" for z in self.zero_area]
        if self.clipped:
            out.append(f"clipped {self.clipped} box(es) that reached outside their image")
        if self.problems:
            out.append(f"{len(self.problems)} problem(s):")
            out += [f"  {p}" for p in self.problems]
        return out


class _Builder:
    """Accumulates COCO records with consecutive ids."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.report = Report()

    def category_id(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name) + 1

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        return image_id

    def add_box(self, image_id: int, name: str, x1, y1, x2, y2, *, where: str, iscrowd: int = 0,
                segmentation: list | None = None, area: float | None = None) -> None:
        img = self.images[image_id - 1]
        if x2 <= x1 or y2 <= y1:
            self.report.zero_area.append(f"{where}: {name} [{x1}, {y1}, {x2}, {y2}]")
            return
        cx1, cy1 = max(0.0, float(x1)), max(0.0, float(y1))
        cx2, cy2 = min(float(img["width"]), float(x2)), min(float(img["height"]), float(y2))
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.report.clipped += 1
        if cx2 <= cx1 or cy2 <= cy1:
            self.report.zero_area.append(f"{where}: {name} [{x1}, {y1}, {x2}, {y2}] (outside the image)")
            return
        w, h = cx2 - cx1, cy2 - cy1
        ann = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": self.category_id(name),
            "bbox": [round(cx1, 3), round(cy1, 3), round(w, 3), round(h, 3)],
            "area": round(float(area if area is not None else w * h), 3),
            "iscrowd": int(iscrowd),
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        self.annotations.append(ann)

    def result(self) -> tuple[dict, Report]:
        self.report.images = len(self.images)
        self.report.annotations = len(self.annotations)
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(self.names)]
        return {"images": self.images, "annotations": self.annotations, "categories": cats}, self.report


def _size(img_dir: str, file_name: str, report: Report, where: str) -> tuple[int, int] | None:
    try:
        return image_size(os.path.join(img_dir, file_name))
    except ImageReadError as exc:
        report.problems.append(f"{where}: {exc}; image left out")
        return None


def read_names(path: str) -> list[str]:
    """Class names from a .txt file (one per line) or a YOLO .yaml (``names:``
    as a list or an ``{index: name}`` mapping, block or flow style)."""
    import yaml

    if not os.path.isfile(path):
        raise ConvertError(f"names file not found: '{path}'")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not path.endswith((".yaml", ".yml")):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConvertError(f"cannot parse YAML names file '{path}': {exc}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        # Integer keys in numeric order (10 after 9), anything else after them.
        keys = sorted(names, key=lambda k: (0, k, "") if isinstance(k, int) else (1, 0, str(k)))
        if keys != list(range(len(keys))):
            raise ConvertError(
                f"'{path}': names must map the class indices 0, 1, ..., {len(keys) - 1} to names; "
                f"got the keys {keys}"
            )
        names = [names[k] for k in keys]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise ConvertError(
        f"'{path}' has no 'names:' list or mapping (e.g. 'names: [cat, dog]' or 'names: {{0: cat, 1: dog}}')"
    )


# ----------------------------------------------------------------------
# VIA (VGG Image Annotator), as in the balloon example
# ----------------------------------------------------------------------


def _via_regions(entry: dict) -> list[dict]:
    regions = entry.get("regions", [])
    return list(regions.values()) if isinstance(regions, dict) else list(regions)


def _via_shape(shape: dict) -> tuple[list[float], list[float]] | None:
    import math

    kind = shape.get("name")
    if kind in ("polygon", "polyline"):
        return list(shape["all_points_x"]), list(shape["all_points_y"])
    if kind == "rect":
        x, y, w, h = shape["x"], shape["y"], shape["width"], shape["height"]
        return [x, x + w, x + w, x], [y, y, y + h, y + h]
    if kind in ("ellipse", "circle"):
        cx, cy = shape["cx"], shape["cy"]
        rx = shape.get("rx", shape.get("r"))
        ry = shape.get("ry", shape.get("r"))
        ts = [2 * math.pi * k / 32 for k in range(32)]
        return [cx + rx * math.cos(t) for t in ts], [cy + ry * math.sin(t) for t in ts]
    return None


def via_to_coco(src: str, img_dir: str, *, category: str | None = None, attribute: str | None = None,
                names: list[str] | None = None) -> tuple[dict, Report]:
    """VIA project or region export (``via_region_data.json``) to COCO.

    Polygons become ``segmentation`` (vertices shifted by half a pixel, as in
    MMDetection's balloon conversion) with their bounding box. The category
    is ``region_attributes[attribute]`` when ``attribute`` is given (or when a
    region has exactly one attribute), else ``category`` (default "object").
    """
    from detcore_coco.annfile import AnnotationError, read_json

    try:
        data = read_json(src, "VIA file")
    except AnnotationError as exc:
        raise ConvertError(str(exc)) from None
    if isinstance(data, dict) and "_via_img_metadata" in data:
        data = data["_via_img_metadata"]
    if not isinstance(data, dict):
        raise ConvertError(f"'{src}' is not a VIA export: expected an object of image entries")
    b = _Builder(names or [])
    for key, entry in data.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            b.report.problems.append(f"{src}: entry '{key}' has no 'filename'; skipped")
            continue
        size = _size(img_dir, entry["filename"], b.report, f"{src}: '{key}'")
        if size is None:
            continue
        h, w = size
        image_id = b.add_image(entry["filename"], w, h)
        for r, region in enumerate(_via_regions(entry)):
            where = f"{entry['filename']} region {r}"
            shape = _via_shape(region.get("shape_attributes", {}))
            if shape is None:
                b.report.problems.append(f"{where}: unsupported shape {region.get('shape_attributes', {}).get('name')!r}; skipped")
                continue
            attrs_ = region.get("region_attributes", {}) or {}
            name = category or "object"
            if attribute is not None:
                if attribute not in attrs_:
                    b.report.problems.append(f"{where}: no region attribute '{attribute}'; skipped")
                    continue
                name = str(attrs_[attribute])
            elif category is None and len(attrs_) == 1 and isinstance(next(iter(attrs_.values())), str):
                name = next(iter(attrs_.values())) or name
            px, py = shape
            poly = [v for x, y in zip(px, py) for v in (x + 0.5, y + 0.5)]
            area = 0.5 * abs(sum(px[i] * py[i - 1] - px[i - 1] * py[i] for i in range(len(px))))
            b.add_box(image_id, name, min(px), min(py), max(px), max(py), where=where,
                      segmentation=[poly], area=area)
    return b.result()


# ----------------------------------------------------------------------
# Pascal VOC XML
# ----------------------------------------------------------------------


def _xml_files(src: str, ids_file: str | None) -> list[str]:
    if not os.path.isdir(src):
        raise ConvertError(f"VOC annotation directory not found: '{src}'")
    if ids_file is None:
        return sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".xml"))
    if not os.path.isfile(ids_file):
        raise ConvertError(f"image-id list not found: '{ids_file}'")
    with open(ids_file) as f:
        return [os.path.join(src, line.split()[0] + ".xml") for line in f if line.strip()]


def _find_image(img_dir: str, file_name: str | None, stem: str) -> str | None:
    if file_name and os.path.exists(os.path.join(img_dir, file_name)):
        return file_name
    base = os.path.splitext(file_name)[0] if file_name else stem
    for cand in (base, stem):
        for ext in IMAGE_EXTENSIONS:
            if os.path.exists(os.path.join(img_dir, cand + ext)):
                return cand + ext
    return None


def voc_to_coco(src: str, img_dir: str, *, names: list[str] | None = None, ids_file: str | None = None) -> tuple[dict, Report]:
    """Pascal VOC XML files (a directory, optionally restricted by an
    ImageSets id list) to COCO. VOC pixel coordinates are 1-based and
    inclusive, so ``[xmin, ymin, xmax, ymax]`` becomes ``[xmin - 1, ymin - 1,
    xmax, ymax]``; boxes with ``xmax <= xmin`` or ``ymax <= ymin`` are
    zero-area and dropped; ``difficult`` objects become crowd (ignore) regions
    as in MMDetection's converter. With ``names`` the categories (and their
    order) are fixed and other names are reported; without, they are the
    names found, sorted."""
    files = _xml_files(src, ids_file)
    if not files:
        raise ConvertError(f"no .xml files in '{src}'")
    parsed = []
    for path in files:
        try:
            parsed.append((path, ET.parse(path).getroot()))
        except FileNotFoundError:
            raise ConvertError(f"'{path}' (listed in '{ids_file}') does not exist") from None
        except ET.ParseError as exc:
            raise ConvertError(f"'{path}' is not valid XML: {exc}") from None
    found = sorted({(o.findtext("name") or "").strip() for _, root in parsed for o in root.iter("object")})
    fixed = names is not None
    b = _Builder(list(names) if fixed else found)
    for path, root in parsed:
        stem = os.path.splitext(os.path.basename(path))[0]
        file_name = _find_image(img_dir, (root.findtext("filename") or "").strip() or None, stem)
        if file_name is None:
            b.report.problems.append(f"{path}: image '{root.findtext('filename')}' not found in '{img_dir}'; left out")
            continue
        w = int(float(root.findtext("size/width") or 0))
        h = int(float(root.findtext("size/height") or 0))
        if w <= 0 or h <= 0:
            size = _size(img_dir, file_name, b.report, path)
            if size is None:
                continue
            h, w = size
        image_id = b.add_image(file_name, w, h)
        for k, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"{os.path.basename(path)} object {k}"
            if fixed and name not in b.names:
                b.report.problems.append(f"{where}: class '{name}' is not in the names list; skipped")
                continue
            box = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                b.report.problems.append(f"{where}: missing or malformed <bndbox>; skipped")
                continue
            if xmax <= xmin or ymax <= ymin:
                b.report.zero_area.append(f"{where}: {name} [{xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}]")
                continue
            difficult = int(float(obj.findtext("difficult") or 0))
            b.add_box(image_id, name, xmin - 1, ymin - 1, xmax, ymax, where=where, iscrowd=difficult)
    return b.result()


# ----------------------------------------------------------------------
# YOLO txt
# ----------------------------------------------------------------------


def _images_in(img_dir: str) -> list[str]:
    if not os.path.isdir(img_dir):
        raise ConvertError(f"image directory not found: '{img_dir}'")
    return sorted(f for f in os.listdir(img_dir) if f.lower().endswith(IMAGE_EXTENSIONS))


def yolo_to_coco(src: str, img_dir: str, *, names: list[str]) -> tuple[dict, Report]:
    """YOLO labels (``SRC/<image stem>.txt``, lines ``class cx cy w h``
    normalised, or ``class x1 y1 x2 y2 ...`` polygons) to COCO. Every image in
    ``img_dir`` is listed; one without a label file has no objects. Class
    ``i`` is category id ``i + 1`` named ``names[i]``."""
    if not os.path.isdir(src):
        raise ConvertError(f"YOLO label directory not found: '{src}'")
    if not names:
        raise ConvertError("YOLO labels carry class indices only: give the class names with --names FILE")
    b = _Builder(list(names))
    images = _images_in(img_dir)
    if not images:
        raise ConvertError(f"no images in '{img_dir}'")
    labelled = {os.path.splitext(f)[0] for f in os.listdir(src) if f.endswith(".txt")}
    stems = {os.path.splitext(f)[0] for f in images}
    for orphan in sorted(labelled - stems):
        b.report.problems.append(f"{os.path.join(src, orphan + '.txt')}: no image '{orphan}.*' in '{img_dir}'; left out")
    for file_name in images:
        size = _size(img_dir, file_name, b.report, file_name)
        if size is None:
            continue
        h, w = size
        image_id = b.add_image(file_name, w, h)
        label_path = os.path.join(src, os.path.splitext(file_name)[0] + ".txt")
        if not os.path.exists(label_path):
            continue
        with open(label_path) as f:
            lines = [line.split() for line in f if line.strip()]
        for n, parts in enumerate(lines, start=1):
            where = f"{os.path.basename(label_path)} line {n}"
            try:
                cls = int(float(parts[0]))
                vals = [float(v) for v in parts[1:]]
            except (ValueError, IndexError):
                b.report.problems.append(f"{where}: not numbers: {' '.join(parts)!r}; skipped")
                continue
            if not 0 <= cls < len(names):
                b.report.problems.append(f"{where}: class {cls} is outside the {len(names)} names; skipped")
                continue
            name = names[cls]
            if len(vals) == 4:
                cx, cy, bw, bh = vals
                b.add_box(image_id, name, (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                          (cy + bh / 2) * h, where=where)
            elif len(vals) >= 6 and len(vals) % 2 == 0:
                xs, ys = [v * w for v in vals[0::2]], [v * h for v in vals[1::2]]
                poly = [round(v, 2) for x, y in zip(xs, ys) for v in (x, y)]
                area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
                b.add_box(image_id, name, min(xs), min(ys), max(xs), max(ys), where=where,
                          segmentation=[poly], area=area)
            else:
                b.report.problems.append(f"{where}: expected 'class cx cy w h' or a polygon, got {len(vals)} numbers; skipped")
    return b.result()


def write_coco(data: dict, out: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(data, f)

