"""Whole-token matching of an identifying value inside text, for the de-identification verifier.

A value matches only where it stands as whole token(s): "Mary" is found in "MARY^ANN",
"mary," and "Mary2", never in "PRIMARY"; "Ray^Ali" never in "Confidentiality". A token is a
run of letters or a run of digits, and a boundary is judged by the class of the value's own
first and last character: a value that starts (ends) with a letter must not have a letter
before (after) it, one that starts (ends) with a digit must not have a digit there. So names
are letter-bounded ("SMITH01" still leaks "Smith") and numbers, IDs and UIDs digit-bounded (an
ID inside "1.2.826.0.1.1234567.3" still leaks). A multi-token value ("van der Berg",
"Smith^John", "1.2.840.99") matches as the same token sequence, with one to four separators
where the value has a separator and none to four where its tokens touch (a letter run next to
a digit run), so "Smith, John" leaks "Smith^John". Matching ignores case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[^\W\d_]+|\d+")  # a run of letters, or a run of digits
_SEP = r"(?:[^\w\x00]|_)"  # a separator: not a letter or digit, never the NUL that joins values


def tokens(text: str) -> list[str]:
    """The letter runs and digit runs of ``text``, lower case."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class TokenPattern:
    """A compiled whole-token pattern for one value, with a cheap pre-check."""

    pattern: re.Pattern[str]
    longest: str  # its longest token: absent from a lower-cased text means no match there

    @classmethod
    def of(cls, text: str) -> TokenPattern | None:
        """The pattern for ``text``; None if it has no letter or digit."""
        found = list(_TOKEN.finditer(text.lower()))
        if not found:
            return None
        body = re.escape(found[0].group())
        for prev, cur in zip(found, found[1:]):
            gap = "{0,4}" if prev.end() == cur.start() else "{1,4}"
            body += _SEP + gap + re.escape(cur.group())
        first, last = found[0].group(), found[-1].group()
        before = r"(?<!\d)" if first[0].isdigit() else r"(?<![^\W\d_])"
        after = r"(?!\d)" if last[-1].isdigit() else r"(?![^\W\d_])"
        pattern = re.compile(before + body + after, re.IGNORECASE)
        return cls(pattern, max((m.group() for m in found), key=len))

    def search(self, text: str, lowered: str | None = None) -> re.Match[str] | None:
        """The first whole-token occurrence in ``text`` (``lowered`` is ``text.lower()`` if known)."""
        if self.longest not in (text.lower() if lowered is None else lowered):
            return None
        return self.pattern.search(text)

    def finditer(self, text: str, lowered: str | None = None) -> list[re.Match[str]]:
        """Every whole-token occurrence in ``text``."""
        if self.longest not in (text.lower() if lowered is None else lowered):
            return []
        return list(self.pattern.finditer(text))
