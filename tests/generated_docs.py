"""Docs sections generated from code: the text between two marker lines of a
Markdown page is rendered by a function, a test fails when the page is
stale, and running the test module as a script rewrites it. One home for the
hook reference, the public API list (docs/plugins.md) and the run-file key
tables (docs/runfile.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs


@attrs.frozen
class GeneratedSection:
    page: Path
    begin: str  # the marker lines, included in what render() returns
    end: str
    render: Callable[[], str]
    regenerate: str  # the command that rewrites the section, for the failure message

    def current(self) -> str:
        text = self.page.read_text(encoding="utf-8")
        assert self.begin in text and self.end in text, f"{self.page.name} lost its markers {self.begin!r}"
        return text[text.index(self.begin) : text.index(self.end) + len(self.end)]

    def check(self) -> None:
        assert self.current() == self.render(), f"{self.page.name} is out of date: run `{self.regenerate}`"

    def write(self) -> None:
        text = self.page.read_text(encoding="utf-8")
        start, stop = text.index(self.begin), text.index(self.end) + len(self.end)
        self.page.write_text(text[:start] + self.render() + text[stop:], encoding="utf-8")
        print(f"updated {self.page}")
