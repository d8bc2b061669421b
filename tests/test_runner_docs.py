"""docs/runfile.md documents every run-file key of the schema."""

from __future__ import annotations

import typing
from pathlib import Path

import attrs

from detcore.runfile.schema import RunConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "runfile.md"


def keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        if attrs.has(hints[f.name]):
            yield from keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f.metadata.get("doc", "")


def test_every_key_is_documented():
    text = DOC.read_text()
    missing = [k for k, doc in keys(RunConfig) if f"| `{k}` |" not in text or doc not in text]
    assert not missing, f"docs/runfile.md lacks (or has a stale description of) {missing}; regenerate the key tables"
