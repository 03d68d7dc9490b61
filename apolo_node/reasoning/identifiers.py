"""Identifiers a clinician types into a question, found and replaced before it goes anywhere.

A question is free text: "does Mary Smith (MRN 12345678) have a mass?" would otherwise be
stored in ``answer.question``, written to the audit and sent to a remote answerer as typed.
``scrub`` replaces each identifier with a placeholder naming its kind (``[NAME]``,
``[PATIENT-ID]``, ...) and says which kinds it replaced, never the values.

The rules, in the order they claim text (a span claimed once is not looked at again):

- pseudonymous UIDs (``2.25.…``, what ``--study`` and the answers name) and dates without a
  birth cue are kept: they are the catalog's own, de-identified, values;
- e-mail addresses; DICOM person names (``DOE^JOHN``);
- a value after its cue: ``MRN``/``patient ID``/``病历号`` (patient ID), ``accession``
  (accession number), ``DOB``/``born``/``出生日期`` (date of birth), ``Mr``/``Mrs``/
  ``patient``/``姓名`` (name);
- phone numbers: 7 to 15 digits in groups (``+1 (555) 123-4567``, ``555-123-4567``);
- long numbers: any token with 6 digits or more (an MRN or accession number typed bare);
- given names: a capitalised word in the US census list of first names (the ``names``
  package), unless it is also an English or medical word (``May``, ``Mark``, ``Brain``), and
  a capitalised word right after one (the surname).

Known limits: a surname typed alone, a name written in lower case, or a Chinese name with no
``姓名`` cue is not found; the ``refuse`` setting does not change what is found.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Iterator
from dataclasses import dataclass

from apolo_node.reasoning.retrieval import STOPWORDS

NAME, PATIENT_ID, ACCESSION, BIRTH_DATE, PHONE, EMAIL, NUMBER = (
    "name", "patient ID", "accession number", "date of birth", "phone number", "e-mail address",
    "identifying number",
)
PLACEHOLDERS = {
    NAME: "[NAME]", PATIENT_ID: "[PATIENT-ID]", ACCESSION: "[ACCESSION]", BIRTH_DATE: "[BIRTH-DATE]",
    PHONE: "[PHONE]", EMAIL: "[EMAIL]", NUMBER: "[ID-NUMBER]",
}
PLACEHOLDER = re.compile(r"\[(?:" + "|".join(re.escape(p[1:-1]) for p in PLACEHOLDERS.values()) + r")\]")
KEEP, SCRUB = "keep", "scrub"

# Words that are first names in the census list but mean something in a question.
NOT_NAMES = frozenset(w.upper() for w in (
    *STOPWORDS,
    "april", "august", "autumn", "bell", "brain", "carter", "chance", "gene", "grace", "hope", "hunter",
    "iris", "january", "joy", "june", "king", "lane", "major", "many", "mark", "may", "page", "ray",
    "september", "spring", "summer", "sunday", "tiny", "ward", "will", "winter", "sign", "signs",
    "golden", "star", "sun", "moon", "rose", "ruby", "ivory", "pearl", "crystal", "amber", "coral",
    "sandy", "dusty", "rusty", "rich", "forest", "sterling", "dale", "glen", "cliff", "fern", "holly",
    "ivy", "jade", "lily", "violet", "daisy", "dawn", "eve", "penny", "else", "see",
))

UID = r"(?<![\w.])[0-2](?:\.\d+){2,}(?![\w.])"
MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
         r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
DAY, MONTH_NUMBER, YEAR = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])", r"(?:19|20)\d{2}"
DATE = (  # only what can be a date: "123-45-6789" is no date, so it is left to the phone rule
    rf"(?<!\d)(?:{YEAR}[-/.]{MONTH_NUMBER}[-/.]{DAY}|{DAY}[-/.]{DAY}[-/.](?:{YEAR}|\d{{2}})"
    rf"|{YEAR}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    rf"|{DAY}\s+{MONTH}\s*,?\s*{YEAR}|{MONTH}\s+{DAY}(?:st|nd|rd|th)?\s*,?\s*{YEAR}"
    rf"|{YEAR}\s*年\s*{MONTH_NUMBER}\s*月\s*{DAY}\s*日?)(?!\d)"
)
CUE_VALUE = r"\s*(?:#|no\.?|nr\.?|number|is|of|[:=：])?\s*(?:#|[:=：])?\s*"
NAME_WORD = r"(?![A-Z]{1,3}(?![A-Za-z'-]))[A-Z][A-Za-z'-]{1,40}"  # "O'Brien", "McDonald"; not "CT" or "MR"
CODE_VALUE = r"(?=[A-Za-z-]{0,39}\d)([A-Za-z0-9][A-Za-z0-9-]{1,39})(?![\w-])"  # holds a digit

# (kind, pattern, group): KEEP spans are claimed and left as typed; others replaced.
RULES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    (KEEP, re.compile(UID), 0),
    (EMAIL, re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+"), 0),
    (NAME, re.compile(r"(?<![\w^])[A-Za-z][A-Za-z'-]{0,63}\^[A-Za-z'^ -]{0,128}[A-Za-z]"), 0),
    (BIRTH_DATE, re.compile(
        r"(?i)(?:\bd\.?o\.?b\.?|\bdate\s+of\s+birth|\bbirth\s*date|\bbirthday|\bborn(?:\s+on)?|出生日期|出生于|生日)"
        rf"\s*[:=：]?\s*({DATE})"), 1),
    (PATIENT_ID, re.compile(
        r"(?i)(?:\bmrn|\bmedical\s+record(?:\s+number)?|\bpatient\s*(?:id|number|no)|\bpid|\bhospital\s+number"
        r"|\bssn|\bsocial\s+security(?:\s+number)?"
        rf"|\bchart(?:\s+number)?|\bid|病历号|住院号|患者编号|病案号){CUE_VALUE}{CODE_VALUE}"), 1),
    (ACCESSION, re.compile(rf"(?i)(?:\baccession|\bacc\.?|检查号){CUE_VALUE}{CODE_VALUE}"), 1),
    (NAME, re.compile(
        r"(?:\b(?:[Mm]r|[Mm]rs|[Mm]s|[Mm]iss|[Mm]ister|[Dd]r|[Dd]octor|[Pp]rof|[Pp]atient|[Pp]t|[Nn]amed|[Cc]alled"
        r"|[Nn]ame\s+is|[Nn]ame)\.?\s*:?\s+)"
        rf"({NAME_WORD}(?:,?\s+{NAME_WORD}){{0,2}})"), 1),
    (NAME, re.compile(r"姓名\s*[:：]?\s*([\u4e00-\u9fff]{2,4})"), 1),
    (KEEP, re.compile(DATE, re.IGNORECASE), 0),
    (PHONE, re.compile(
        r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,4}(?![\w.])"), 0),
    (NUMBER, re.compile(r"(?<![\w.])(?=[A-Za-z-]*\d(?:[A-Za-z-]*\d){5})[A-Za-z0-9-]{6,40}(?![\w.])"), 0),
)
POSSESSIVE = re.compile(r"'s$", re.IGNORECASE)
WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")  # a whole token: no part of a surname left behind


@functools.cache
def given_names() -> frozenset[str]:
    """Upper-case first names of the US census lists the ``names`` package ships."""
    folder = importlib.resources.files("names")
    found: set[str] = set()
    for table in ("dist.male.first", "dist.female.first"):
        found.update(line.split()[0] for line in folder.joinpath(table).read_text().splitlines() if line.strip())
    return frozenset(found - NOT_NAMES)


@dataclass(frozen=True)
class Scrubbed:
    """A question with its identifiers replaced, and the kinds replaced (first found first)."""

    text: str
    kinds: tuple[str, ...]
    replaced: int


def _is_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value)
    groups = re.findall(r"\d+", value)
    if not 7 <= digits <= 15:
        return False
    if not re.search(r"[-.()+]", value):  # spaces alone: "2023 2024" is two years, not a phone
        return digits >= 9 or len(groups) >= 3
    return True


def _spans(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, kind) of every span a rule claims, KEEP included, in rule order."""
    for kind, pattern, group in RULES:
        for match in pattern.finditer(text):
            start, end = match.span(group)
            if start == end or (kind == PHONE and not _is_phone(match.group(0))):
                continue
            yield start, end, kind
    names = given_names()
    words = list(WORD.finditer(text))
    for k, word in enumerate(words):
        value = POSSESSIVE.sub("", word.group(0))
        if value[0].isupper() and value.upper() in names and not _is_acronym_of_known(value):
            yield word.start(), word.end(), NAME
            after = words[k + 1] if k + 1 < len(words) else None
            if after and after.group(0)[0].isupper() and text[word.end():after.start()].strip() == "" \
                    and POSSESSIVE.sub("", after.group(0)).upper() not in NOT_NAMES:
                yield after.start(), after.end(), NAME


def _is_acronym_of_known(value: str) -> bool:
    """Short all-capital words are modalities and anatomy (``CT``, ``MR``, ``AL``), not names."""
    return value.isupper() and len(value) <= 3


def scrub(text: str) -> Scrubbed:
    """``text`` with every identifier the rules find replaced by its kind's placeholder."""
    claimed: list[tuple[int, int, str]] = []
    for start, end, kind in _spans(text):
        if any(start < e and s < end for s, e, _ in claimed):
            continue
        claimed.append((start, end, kind))
    replaced = sorted((c for c in claimed if c[2] != KEEP), key=lambda c: c[0])
    out, at = [], 0
    for start, end, kind in replaced:
        out += [text[at:start], PLACEHOLDERS[kind]]
        at = end
    out.append(text[at:])
    kinds = tuple(dict.fromkeys(kind for _, _, kind in replaced))
    return Scrubbed("".join(out), kinds, len(replaced))


def without_placeholders(text: str) -> str:
    """``text`` less the placeholders ``scrub`` wrote: they are not words to search for."""
    return PLACEHOLDER.sub(" ", text)
