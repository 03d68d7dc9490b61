"""What an answer cites, checked against its evidence; and a model's reasoning trace set apart.

A model is asked to cite findings as ``[F1]`` (several as ``[F1, F3]``); a tracking UID written
out is read as a citation too. A citation of a finding that is not in the evidence (``[F9]``
of five, a UID the evidence does not hold) is dropped and counted: an answer never claims
support it does not have. UIDs of the evidence's studies, instances, SOP classes and SRs are
mentions, not citations, and are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from apolo_node.reasoning.evidence import Evidence

BRACKETS = re.compile(r"\[([^\[\]\n]{1,200})\]")
REF = re.compile(r"(?<![A-Za-z0-9])F\s?(\d{1,4})(?![0-9])", re.IGNORECASE)
UID = re.compile(r"(?<![\d.])[0-2](?:\.(?:0|[1-9]\d*)){2,}(?![\d.]*\d)")  # 2.25.<n> and longer
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Cited:
    """The tracking UIDs an answer cites (first-cited first) and how many citations were dropped."""

    citations: tuple[str, ...]
    dropped: int


def resolve(text: str, evidence: Sequence[Evidence]) -> Cited:
    """The citations in ``text`` that name evidence, as tracking UIDs; the others counted."""
    tracking = {e.tracking_uid for e in evidence}
    mentions = set()
    for e in evidence:
        mentions.update((
            e.study_uid, e.sr_sop_instance_uid, e.sr_series_uid,
            e.finding.sop_instance_uid, e.finding.sop_class_uid,
        ))
    found: list[tuple[int, str]] = []  # (position, tracking UID)
    dropped = 0
    for group in BRACKETS.finditer(text):
        for match in REF.finditer(group.group(1)):
            n = int(match.group(1))
            if 1 <= n <= len(evidence):
                found.append((group.start(1) + match.start(), evidence[n - 1].tracking_uid))
            else:
                dropped += 1
    for match in UID.finditer(text):
        uid = match.group(0)
        if uid in tracking:
            found.append((match.start(), uid))
        elif uid not in mentions:
            dropped += 1
    found.sort()
    return Cited(tuple(dict.fromkeys(uid for _, uid in found)), dropped)


def split_trace(text: str) -> tuple[str, str]:
    """(trace, answer) of a reasoning model's output: ``<think>...</think>`` goes to the trace.

    Chat templates of thinking models often open ``<think>`` in the prompt, so an output with
    a ``</think>`` and no opening tag holds its trace before it. An output cut off while
    thinking (an open ``<think>`` never closed) is all trace and no answer.
    """
    traces: list[str] = []
    rest = text
    close = rest.find(THINK_CLOSE)
    if close != -1 and (rest.find(THINK_OPEN) == -1 or rest.find(THINK_OPEN) > close):
        traces.append(rest[:close])
        rest = rest[close + len(THINK_CLOSE):]
    answer: list[str] = []
    while True:
        start = rest.find(THINK_OPEN)
        if start == -1:
            answer.append(rest)
            break
        answer.append(rest[:start])
        end = rest.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            traces.append(rest[start + len(THINK_OPEN):])
            break
        traces.append(rest[start + len(THINK_OPEN):end])
        rest = rest[end + len(THINK_CLOSE):]
    trace = "\n\n".join(t.strip() for t in traces if t.strip())
    return trace, "".join(answer).strip()
