"""Reading COCO annotation files with errors that name the file and the record.

Light (json only): ``detcore config check`` uses it to compare a run file's
``classes`` with the file's categories before anything heavy runs. Parsed
files are cached by path, size and modification time (the last
``_CACHE_SIZE`` files), so the check of a run file's train and val files and
the datasets built right after it read each file once.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from typing import Any

from detcore.errors import DetcoreError, shorten


class AnnotationError(DetcoreError):
    """An annotation file that cannot be used as it is."""

    exit_code = 2


# (abspath, size, mtime_ns) -> parsed file, oldest first. Three entries cover
# a run's train, val and test files; a COCO train file is hundreds of MB, so
# keep no more.
_CACHE_SIZE = 3
_CACHE: dict[tuple[str, int, int], dict] = {}


def read_json(path: str | os.PathLike, what: str = "annotation file") -> Any:
    """Parse the JSON file ``path``. Raises :class:`AnnotationError` naming
    ``what`` for a missing file, invalid JSON (with the line and column) and
    text that is not UTF-8."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(
            f"{what} not found: '{path}' (relative paths resolve against the current directory, "
            f"{os.getcwd()})"
        ) from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{what} '{path}' is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{what} '{path}' is not UTF-8 text: {exc}") from None


def load_coco_json(path: str | os.PathLike, *, what: str = "annotation file") -> dict:
    """Parse and structurally check a COCO annotation file.

    Raises :class:`AnnotationError` for a missing file, invalid JSON (with the
    line and column), a missing ``images``/``categories`` list, records without
    their required fields, duplicate ids, and annotations whose ``image_id`` or
    ``category_id`` is not defined in the file (naming the annotation).
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AnnotationError(
            f"{what} not found: '{path}' (relative paths resolve against the current directory, "
            f"{os.getcwd()})"
        ) from None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key in _CACHE:
        return _CACHE[key]
    data = read_json(path, what)
    validate_coco(data, path)
    while len(_CACHE) >= _CACHE_SIZE:
        del _CACHE[next(iter(_CACHE))]  # the oldest
    _CACHE[key] = data
    return data


def _need(record: Any, fields: tuple[str, ...], where: str, path: str) -> None:
    if not isinstance(record, dict):
        raise AnnotationError(f"{what_file(path)}: {where} is not an object: {shorten(record)}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise AnnotationError(
            f"{what_file(path)}: {where} lacks {', '.join(repr(m) for m in missing)}: {shorten(record)}"
        )


def what_file(path: str) -> str:
    return f"annotation file '{path}'"


def is_number(value: Any) -> bool:
    """A finite JSON number (not a boolean; JSON's NaN and Infinity are not numbers of pixels)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def bad_image_size(img: dict) -> str | None:
    """Which of an image record's ``width``/``height`` is not a positive
    number of pixels (``"width 0"``), or ``None``. A zero size divides by zero
    in aspect ratios and makes every box "outside the image"."""
    for key in ("width", "height"):
        value = img.get(key)
        if not is_number(value) or value <= 0:
            return f"{key} {shorten(repr(value), 40)}"
    return None


def is_bbox(bbox: Any) -> bool:
    """``[x, y, w, h]`` of four finite numbers."""
    return isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)


def validate_coco(data: Any, path: str) -> None:
    """The structural checks of :func:`load_coco_json` on parsed data."""
    if not isinstance(data, dict):
        raise AnnotationError(f"{what_file(path)}: the top level must be an object with 'images', 'annotations' and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(
                f"{what_file(path)}: missing the '{key}' list; is this a COCO detection file "
                f"(keys found: {', '.join(sorted(data)) or 'none'})?"
            )
    anns = data.setdefault("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError(f"{what_file(path)}: 'annotations' must be a list")
    image_ids: set = set()
    for i, img in enumerate(data["images"]):
        _need(img, ("id", "file_name", "width", "height"), f"images[{i}]", path)
        if img["id"] in image_ids:
            raise AnnotationError(f"{what_file(path)}: images[{i}] repeats image id {img['id']} ('{img['file_name']}')")
        image_ids.add(img["id"])
        bad = bad_image_size(img)
        if bad:
            raise AnnotationError(
                f"{what_file(path)}: images[{i}] (id {shorten(img['id'], 40)}, '{shorten(img['file_name'], 80)}') has "
                f"{bad}; 'width' and 'height' must be the image's size in pixels. Run 'detcore coco check "
                f"{path} IMG_DIR' to list every such record."
            )
    cat_ids: set = set()
    for i, cat in enumerate(data["categories"]):
        _need(cat, ("id", "name"), f"categories[{i}]", path)
        if cat["id"] in cat_ids:
            raise AnnotationError(f"{what_file(path)}: categories[{i}] repeats category id {cat['id']} ('{cat['name']}')")
        cat_ids.add(cat["id"])
    ann_ids: set = set()
    for i, ann in enumerate(anns):
        _need(ann, ("id", "image_id", "category_id", "bbox"), f"annotations[{i}]", path)
        aid = ann["id"]
        label = f"annotations[{i}] (id {shorten(aid, 40)})"
        if aid in ann_ids:
            raise AnnotationError(f"{what_file(path)}: {label} repeats the id of an earlier annotation")
        ann_ids.add(aid)
        if ann["image_id"] not in image_ids:
            raise AnnotationError(
                f"{what_file(path)}: {label} references image_id {ann['image_id']}, which is not in 'images'"
            )
        if ann["category_id"] not in cat_ids:
            raise AnnotationError(
                f"{what_file(path)}: {label} references category_id {ann['category_id']}, which is not "
                f"in 'categories' (ids: {sorted(cat_ids)[:20]})"
            )
        bbox = ann["bbox"]
        if not is_bbox(bbox):
            raise AnnotationError(
                f"{what_file(path)}: {label} has a malformed bbox {shorten(repr(bbox))}; expected [x, y, w, h] of "
                f"finite numbers (NaN and Infinity are not pixel positions). Fix or remove the annotation."
            )


def category_ids_for(data: dict, classes: list[str] | None, path: str) -> tuple[list[int], list[str]]:
    """``(cat_ids, class_names)``: label i is ``class_names[i]`` with COCO id
    ``cat_ids[i]``. All categories sorted by id when ``classes`` is None;
    otherwise the listed names, in the listed order."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    if classes is None:
        return [c["id"] for c in cats], [str(c["name"]) for c in cats]
    by_name: dict[str, list[int]] = {}
    for c in cats:
        by_name.setdefault(str(c["name"]), []).append(c["id"])
    ids = []
    for name in classes:
        found = by_name.get(name)
        if not found:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.0)
            near = f"; the closest category is '{close[0]}'" if close else ""
            raise ClassNameError(
                f"class '{name}' is not a category of annotation file '{path}'{near}. Its categories "
                f"are: {', '.join(by_name)}."
            )
        if len(found) > 1:
            raise ClassNameError(f"class '{name}' names {len(found)} categories of '{path}' (ids {found}); names must be unique")
        ids.append(found[0])
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise ClassNameError(f"classes lists {', '.join(dup)} more than once")
    return ids, list(classes)


class ClassNameError(AnnotationError):
    """A ``classes`` entry that does not match the annotation file."""


def annotated_image_count(data: dict, cat_ids: list[int]) -> int:
    """How many images have at least one non-crowd annotation of ``cat_ids``."""
    wanted = set(cat_ids)
    return len({a["image_id"] for a in data["annotations"] if a["category_id"] in wanted and not a.get("iscrowd", 0)})


def empty_categories(data: dict) -> tuple[list[dict], list[str]]:
    """``(categories without any annotation, names of those with one)``:
    an export's supercategory (Roboflow's id 0, e.g. "pieces") is listed as
    a category but never annotated, and would become a class the model is
    trained to never predict."""
    used = {a.get("category_id") for a in data.get("annotations", []) if isinstance(a, dict)}
    cats = [c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c]
    return [c for c in cats if c["id"] not in used], [str(c.get("name")) for c in cats if c["id"] in used]


def classes_setting(names: list[str]) -> str:
    """The ``classes`` line of a dataset table that selects ``names``."""
    import json

    return f"classes = {json.dumps(names)}"
