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


SCANS_BEFORE_SET = 32  # plain substring looks at a text before its token set is worth making


class TokenText:
    """A text and, made on first need, its tokens: as :func:`canonical` writes them and as a set.

    Whether a value can be in the text at all is first asked of the lower-cased text (one fast
    substring scan, and most values are absent); after :data:`SCANS_BEFORE_SET` such looks the
    token set answers instead, so many values against a long text cost one pass, not one each.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._lowered: str | None = None
        self._looks = 0
        self._canon: str | None = None
        self._tokens: frozenset[str] | None = None

    @property
    def canon(self) -> str:
        """The text as :func:`canonical` writes it."""
        if self._canon is None:
            self._canon = f" {' '.join(_TOKEN.findall(self.text)).lower()} "
        return self._canon

    def may_hold(self, key: str) -> bool:
        """False when the token ``key`` is surely not in the text; True when it may be."""
        if self._tokens is None:
            self._looks += 1
            if self._looks <= SCANS_BEFORE_SET:
                if self._lowered is None:
                    self._lowered = self.text.lower()
                return key in self._lowered
            self._tokens = frozenset(self.canon.split())
        return key in self._tokens

    def holds(self, needle: str, key: str) -> bool:
        """Whether ``needle`` (a :func:`canonical` value with ``key`` among its tokens) is here."""
        return self.may_hold(key) and needle in self.canon

    def find_all(self, needle: str, key: str) -> list[int]:
        """Offsets in ``canon`` of every occurrence of ``needle`` (``key`` one of its tokens)."""
        if not self.may_hold(key):
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
