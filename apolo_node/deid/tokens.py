"""Whole-token matching of an identifying value inside text, for the de-identification verifier.

A value matches only where it stands as whole token(s): "Mary" is found in "MARY^ANN",
"mary," and "Mary2", never in "PRIMARY"; "Ray^Ali" never in "Confidentiality". A token is a run
of letters or a run of digits, so a boundary is judged by the class of the value's own first
and last character: a name is letter-bounded ("SMITH01" still leaks "Smith"), a number, ID or
UID digit-bounded (an ID inside "1.2.826.0.1.1234567.3" still leaks). A multi-token value ("van
der Berg", "Smith^John", "1.2.840.99") matches as the same token sequence whatever separates the
tokens, so "Smith, John" leaks "Smith^John". Matching ignores case.

Both sides are reduced to their tokens joined by single spaces, so a match is a plain substring
search of `` value `` in `` text ``: fast, and with no pattern to compile per value.
"""

from __future__ import annotations

import itertools
import re

_TOKEN = re.compile(r"[^\W\d_]+|\d+")  # a run of letters, or a run of digits


def tokens(text: str) -> list[str]:
    """The letter runs and digit runs of ``text``, lower case."""
    return [t.lower() for t in _TOKEN.findall(text)]


def canonical(text: str) -> str:
    """``text`` as its tokens, lower case, each between single spaces (empty if it has none)."""
    found = tokens(text)
    return f" {' '.join(found)} " if found else ""


class TokenText:
    """A text, reduced to its tokens only when a value's longest token is in it at all."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lowered = text.lower()
        self._canon: str | None = None

    @property
    def canon(self) -> str:
        """The text as :func:`canonical` writes it (computed once, on first use)."""
        if self._canon is None:
            self._canon = f" {' '.join(_TOKEN.findall(self.text)).lower()} "
        return self._canon

    def holds(self, needle: str, key: str) -> bool:
        """Whether ``needle`` (a :func:`canonical` value whose longest token is ``key``) is here."""
        return key in self.lowered and needle in self.canon

    def find_all(self, needle: str, key: str) -> list[int]:
        """Offsets in ``canon`` of every occurrence of ``needle``."""
        if key not in self.lowered:
            return []
        found = []
        at = self.canon.find(needle)
        while at >= 0:
            found.append(at)
            at = self.canon.find(needle, at + 1)
        return found

    def text_span(self, at: int, needle: str) -> tuple[int, int]:
        """Where in the text the match of ``needle`` at ``canon`` offset ``at`` begins and ends."""
        first = self.canon.count(" ", 0, at + 1) - 1  # tokens before the match
        found = itertools.islice(_TOKEN.finditer(self.text), first, first + needle.count(" ") - 1)
        matches = list(found)
        return matches[0].start(), matches[-1].end()
