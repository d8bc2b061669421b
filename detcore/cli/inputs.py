"""Turning command-line inputs (files, folders, globs) into image files."""

from __future__ import annotations

import glob
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def collect_inputs(inputs: list[str], *, recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand ``inputs`` into image files, in order and without duplicates.

    A folder gives its image files (by suffix; with ``recursive`` its
    sub-folders' too), a glob its matches (``**`` recurses), a file itself
    whatever its suffix. Returns ``(files, problems)``: an input that matches
    nothing is a problem ``(input, reason)``, not an exception, so the other
    inputs still run.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    problems: list[tuple[str, str]] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(q for q in p.glob(pattern) if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append((item, f"folder has no image files ({', '.join(IMAGE_SUFFIXES)})"))
            for q in found:
                add(q)
        elif p.is_file():
            add(p)
        elif has_magic(item):
            found = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not found:
                problems.append((item, "pattern matches no file"))
            for q in found:
                add(q)
        else:
            problems.append((item, "no such file or folder"))
    return files, problems


def unique_stems(files: list[Path]) -> list[str]:
    """Output names for ``files``: the file stem, with the parent folder's
    name prepended where two inputs share a stem."""
    stems = [f.stem for f in files]
    out = []
    for i, f in enumerate(files):
        if stems.count(f.stem) > 1:
            out.append(f"{f.parent.name}_{f.stem}" if f.parent.name else f"{f.stem}_{i}")
        else:
            out.append(f.stem)
    # Parents can clash too (a/x/img.jpg, b/x/img.jpg): fall back to an index.
    return [s if out.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(out)]
