"""Reading CSV box files (standard library only: the run-file check and the
``example-csv`` command use it without torch).

::

    image,x1,y1,x2,y2,label
    img0.png,4,6,20,30,circle
    img1.png,,,,,            <- an image without objects
"""

from __future__ import annotations

import csv
import os

import attrs

from detcore import DetcoreError

HEADER = ["image", "x1", "y1", "x2", "y2", "label"]


class CsvFormatError(DetcoreError):
    exit_code = 2


@attrs.frozen
class CsvBoxes:
    images: list[str]  # in order of first appearance
    boxes: dict[str, list[tuple[float, float, float, float, str]]]

    @property
    def class_names(self) -> list[str]:
        return sorted({b[4] for rows in self.boxes.values() for b in rows})


def read_csv_boxes(path: str | os.PathLike) -> CsvBoxes:
    """Parse a CSV box file; errors name the file and the line."""
    path = os.fspath(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise CsvFormatError(f"CSV file '{path}' not found") from None
    images: list[str] = []
    boxes: dict[str, list] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if [h.strip() for h in header or []] != HEADER:
            raise CsvFormatError(f"{path}:1: expected the header {','.join(HEADER)}, got {header}")
        for line, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 6:
                raise CsvFormatError(f"{path}:{line}: expected 6 fields, got {len(row)}")
            image, *coords, label = (v.strip() for v in row)
            if image not in boxes:
                images.append(image)
                boxes[image] = []
            if not any(coords) and not label:
                continue
            try:
                x1, y1, x2, y2 = (float(c) for c in coords)
            except ValueError:
                raise CsvFormatError(f"{path}:{line}: box coordinates must be numbers, got {coords}") from None
            if x2 <= x1 or y2 <= y1:
                raise CsvFormatError(f"{path}:{line}: expected x2 > x1 and y2 > y1, got {coords}")
            if not label:
                raise CsvFormatError(f"{path}:{line}: a box needs a label")
            boxes[image].append((x1, y1, x2, y2, label))
    if not images:
        raise CsvFormatError(f"{path}: no rows below the header")
    return CsvBoxes(images, boxes)
