"""The user docs point at the public API only: no page tells a reader to
import or call a name inside one of detcore's private modules (those can
change in any release; docs/plugins.md lists what is public). Naming a
private module as where a generated table comes from, or a built-in
plugin's name (``detcore.data`` in ``detcore plugins``), is fine: neither is
an attribute path a reader would import."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
# ``detcore.<private package>.<module>.<name>`` or ``detcore.<private module>.<name>``
PRIVATE = ("catalog", "cli", "data", "engine", "models", "builtin", "runfile", "weights", "visualize", "plugins")
PATTERN = re.compile(r"\bdetcore\.(" + "|".join(PRIVATE) + r")\.[A-Za-z_][\w.]*")
# Where a page shows what an old path does (kept working, deprecated), it says so.
ALLOWED_CONTEXT = re.compile(r"deprecat|old path|earlier versions|keep working", re.I)


def private_mentions(text: str) -> list[str]:
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        if ALLOWED_CONTEXT.search(paragraph):
            continue
        found += [m.group(0) for m in PATTERN.finditer(paragraph)]
    return found


def test_docs_name_no_private_module_attribute():
    bad = {page.name: private_mentions(page.read_text(encoding="utf-8")) for page in PAGES}
    bad = {name: hits for name, hits in bad.items() if hits}
    assert not bad, f"docs name private detcore internals (use the public API, docs/plugins.md): {bad}"


def test_the_check_finds_a_private_path():
    assert private_mentions("Call `detcore.engine.checkpoint.check_checkpoint_classes`.") == [
        "detcore.engine.checkpoint.check_checkpoint_classes"
    ]
    assert private_mentions("The plugin `detcore.data` registers `resize`.") == []


def test_a_stale_generated_section_fails_and_is_rewritten(tmp_path, capsys):
    import pytest
    from generated_docs import GeneratedSection

    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- b -->\nold\n<!-- e -->\nrest\n")
    section = GeneratedSection(page, "<!-- b -->", "<!-- e -->", lambda: "<!-- b -->\nnew\n<!-- e -->", "make docs")
    with pytest.raises(AssertionError, match="run `make docs`"):
        section.check()
    section.write()
    section.check()
    assert page.read_text() == "intro\n<!-- b -->\nnew\n<!-- e -->\nrest\n"
