"""The per-instance time cap: a slow instance is refused and its worker process replaced."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
from pydicom import dcmread

from apolo_node.deid import DeidError, Deidentifier
from apolo_node.deid.command import clean_file
from apolo_node.deid.isolate import Interrupted, IsolatedCleaner
from tests.deep_nesting import deep_content_file
from tests.dose_sr import dose_sr, slow_sr

KEY = b"test-key-0123456789abcdef"


def test_a_slow_instance_is_refused_at_the_time_cap_and_the_next_one_is_cleaned(tmp_path):
    slow = slow_sr(tmp_path / "slow.dcm")
    small = deep_content_file(tmp_path / "small.dcm", 2)
    with IsolatedCleaner(Deidentifier(KEY), timeout=0.5) as cleaner:
        started = time.monotonic()
        with pytest.raises(DeidError, match=r"longer than \[deid\] instance_timeout \(0.5 s\)"):
            cleaner.clean(slow)
        assert time.monotonic() - started < 10, "refused at the cap, not when the work ends"
        clean = cleaner.clean(small)
    assert clean.relative_path.suffix == ".dcm"
    assert b"Deep^Nesting" not in clean.encoded
    assert clean.dataset is None, "the instance crosses the pipe as its bytes only"
    assert dcmread(io.BytesIO(clean.encoded)).SOPInstanceUID == clean.relative_path.stem


def test_refusals_in_the_worker_come_back_as_their_reason(tmp_path):
    deep = deep_content_file(tmp_path / "deep.dcm", 20_000, undefined=True)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    with IsolatedCleaner(Deidentifier(KEY), timeout=30) as cleaner:
        with pytest.raises(DeidError, match=r"^sequences nest deeper than \[deid\] max_depth \(32\)$"):
            cleaner.clean(deep)
        with pytest.raises(DeidError, match=r"unreadable|missing"):
            cleaner.clean(garbage)


def test_a_stop_interrupts_the_wait_without_refusing_the_instance(tmp_path):
    slow = slow_sr(tmp_path / "slow.dcm")
    stop = threading.Event()
    with IsolatedCleaner(Deidentifier(KEY), timeout=60) as cleaner:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            cleaner.clean(slow, stop)
        assert time.monotonic() - started < 10
    assert dcmread(slow).SOPClassUID == dose_sr().SOPClassUID, "the input is untouched"


def test_several_processes_answer_in_input_order_and_a_slow_one_holds_no_other(tmp_path):
    slow = slow_sr(tmp_path / "slow.dcm")
    small = [deep_content_file(tmp_path / f"small{i}.dcm", 1) for i in range(6)]
    expected = {p: Deidentifier(KEY)(dcmread(p)).SOPInstanceUID for p in small}
    with IsolatedCleaner(Deidentifier(KEY), timeout=0.5, processes=2) as cleaner:
        answers = list(cleaner.clean_all([(p, p) for p in [small[0], slow, *small[1:]]]))
        assert [key for key, _ in answers] == [small[0], slow, *small[1:]]
        assert isinstance(answers[1][1], DeidError)
        for key, value in answers[:1] + answers[2:]:
            assert value.relative_path.name == f"{expected[key]}.dcm"
        # Left after its first answer: what was under way then is dropped, never answered later.
        first = cleaner.clean_all([(p, p) for p in small])
        assert next(first)[0] == small[0]
        first.close()
        again = list(cleaner.clean_all([(p, p) for p in reversed(small)]))
    assert [value.relative_path.name for _, value in again] == [
        f"{expected[p]}.dcm" for p in reversed(small)
    ]


def dies_on_some(path, deidentifier):
    """A worker task that kills its own process for files named ``die*`` (as an OOM kill would)."""
    if path.name.startswith("die"):
        os._exit(3)
    return clean_file(path, deidentifier)


def test_a_file_that_kills_its_worker_is_refused_and_the_next_one_is_cleaned(tmp_path):
    doomed = deep_content_file(tmp_path / "die.dcm", 1)
    fine = deep_content_file(tmp_path / "fine.dcm", 1)
    with IsolatedCleaner(Deidentifier(KEY), timeout=30, task=dies_on_some) as cleaner:
        with pytest.raises(DeidError, match=r"^de-identification worker died \(exit code 3\)$"):
            cleaner.clean(doomed)
        assert cleaner.clean(fine).relative_path.suffix == ".dcm"


def test_a_run_left_without_closing_gives_no_answer_to_the_next(tmp_path):
    """A caller that raised mid-run may keep its generator alive; the next run is not confused."""
    old, new = slow_sr(tmp_path / "old.dcm"), slow_sr(tmp_path / "new.dcm")
    small = deep_content_file(tmp_path / "small.dcm", 1)
    expected = Deidentifier(KEY)(dcmread(new)).SOPInstanceUID
    with IsolatedCleaner(Deidentifier(KEY), timeout=30, processes=2) as cleaner:
        abandoned = cleaner.clean_all([(p, p) for p in (small, old)])
        assert next(abandoned)[0] == small  # the old SR is now under way, and never closed
        answers = list(cleaner.clean_all([(p, p) for p in (small, new)]))
        del abandoned
    assert [key for key, _ in answers] == [small, new]
    assert answers[1][1].relative_path.name == f"{expected}.dcm", "not the old SR's answer"


def unpicklable(path, deidentifier):
    """A worker task whose answer cannot be sent back."""
    return threading.Lock()


def test_an_answer_that_cannot_be_sent_back_is_a_refusal_not_a_dead_worker(tmp_path):
    small = deep_content_file(tmp_path / "small.dcm", 1)
    with IsolatedCleaner(Deidentifier(KEY), timeout=30, task=unpicklable) as cleaner:
        for _ in range(2):  # the same worker answers again
            with pytest.raises(DeidError, match=r"^could not return the clean instance: TypeError$"):
                cleaner.clean(small)
