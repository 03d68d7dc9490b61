"""De-identification in child processes that can be killed: a time cap, and every core.

A thread cannot be stopped, and pydicom or the OCR may spend minutes (or all memory) on a
hostile instance that the receiver accepted. :class:`IsolatedCleaner` hands each file to one of
its child processes (spawned, so none of the node's threads or locks are copied into them;
``deid IN OUT``, which runs no other thread, forks them to start with everything imported) and
waits at most ``[deid] instance_timeout`` seconds for it: past that, or if the child dies, the
child is killed and replaced, and the file is refused with a
:class:`~apolo_node.deid.command.DeidError` whose reason names the rule, so the caller
quarantines it instead of retrying it. With several children, files are cleaned at once (the
header path is CPU-bound: processes, not threads), and results still come back in input order.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

from apolo_node.config import Config
from apolo_node.deid.actions import Deidentifier
from apolo_node.deid.command import CleanInstance, DeidError, clean_file

START_TIMEOUT = 120.0  # seconds a fresh child may take to import and say it is ready
POLL = 0.2  # seconds between two looks at the stop event while waiting
WINDOW_PER_PROCESS = 4  # files handed out ahead of the oldest unfinished one, per child

Key = TypeVar("Key")
Task = Callable[[Path, Deidentifier], Any]


def process_count(cfg: Config) -> int:
    """``[deid] processes``, where 0 means one per CPU core this process may use."""
    if cfg.deid.processes:
        return cfg.deid.processes
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Interrupted(RuntimeError):
    """The caller's stop event was set while files were being cleaned; those were not refused."""


def _serve(conn: Connection, deidentifier: Deidentifier, task: Task) -> None:
    """The child: run ``task`` on each path received; answer ("ok", value) or ("refused", reason)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends us
    conn.send(("ready", None))
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        try:
            value = task(Path(path), deidentifier)
            if isinstance(value, CleanInstance):  # the bytes are the instance: no Dataset
                value = replace(value, dataset=None)  # crosses the pipe (nor pickles always)
            answer: tuple[str, object] = ("ok", value)
        except DeidError as exc:
            answer = ("refused", str(exc))
        except BaseException as exc:  # never a value: pydicom messages may quote them
            answer = ("refused", f"could not de-identify: {type(exc).__name__}")
        try:
            conn.send(answer)  # pickled whole before a byte is written
        except (OSError, EOFError):
            return
        except Exception as exc:  # a value that does not pickle: refuse rather than die
            conn.send(("refused", f"could not return the clean instance: {type(exc).__name__}"))


@dataclass
class _Child:
    """One child process and the file it works on (index in the input, deadline)."""

    process: BaseProcess
    conn: Connection
    ready: bool = False
    index: int | None = None
    path: Path | None = None
    deadline: float = 0.0


class IsolatedCleaner:
    """Cleans files in up to ``processes`` children, each file killed past ``timeout`` seconds."""

    def __init__(
        self, deidentifier: Deidentifier, timeout: float, processes: int = 1, task: Task = clean_file,
        start_method: str = "spawn",
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.deidentifier = deidentifier
        self.timeout = timeout
        self.processes = processes
        self.task = task
        self._context = multiprocessing.get_context(start_method)
        self._children: list[_Child] = []

    def __enter__(self) -> IsolatedCleaner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clean(self, path: Path, stop: threading.Event | None = None) -> Any:
        """The task's value for one file (a verified CleanInstance); DeidError with the reason."""
        [(_, value)] = list(self.clean_all([(None, path)], stop))
        if isinstance(value, DeidError):
            raise value
        return value

    def clean_all(
        self, items: Iterable[tuple[Key, Path]], stop: threading.Event | None = None
    ) -> Iterator[tuple[Key, Any]]:
        """(key, value or DeidError) for each (key, path), in input order, cleaned in parallel.

        Raises :class:`Interrupted` when ``stop`` is set; files not yet yielded were neither
        cleaned nor refused.
        """
        self._kill_busy()  # what an earlier run left under way answers to nobody
        todo = iter(enumerate(items))
        keys: dict[int, Key] = {}
        done: dict[int, Any] = {}
        following = 0  # the next index to yield
        exhausted = False
        window = self.processes * WINDOW_PER_PROCESS
        try:
            while True:
                while following in done:
                    yield keys.pop(following), done.pop(following)
                    following += 1
                if stop is not None and stop.is_set():
                    raise Interrupted("stopped while instances were being de-identified")
                while not exhausted and len(keys) < window and self._can_take():
                    item = next(todo, None)
                    if item is None:
                        exhausted = True
                        break
                    index, (key, path) = item
                    keys[index] = key
                    self._hand(self._free(), index, Path(path))
                if exhausted and not keys:
                    return
                for index, value in self._collect():
                    done[index] = value
        finally:  # left early (stop, an error, the caller's break): no answer may come late
            self._kill_busy()

    def close(self) -> None:
        """Ask the children to finish, then make sure they have."""
        for child in self._children:
            try:
                child.conn.send(None)
            except OSError:
                pass
        for child in self._children:
            child.process.join(5)
        for child in list(self._children):
            self._end(child)

    # -- the children ------------------------------------------------------------------------

    def _can_take(self) -> bool:
        return len(self._children) < self.processes or any(c.path is None for c in self._children)

    def _free(self) -> _Child:
        """An idle child, started if none is idle (only called when :meth:`_can_take`)."""
        for child in self._children:
            if child.path is None:
                return child
        return self._start()

    def _start(self) -> _Child:
        parent, conn = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(conn, self.deidentifier, self.task),
            name="apolo-deid-instance", daemon=True,
        )
        process.start()
        conn.close()
        child = _Child(process, parent, deadline=time.monotonic() + START_TIMEOUT)
        self._children.append(child)
        return child

    def _hand(self, child: _Child, index: int, path: Path) -> None:
        child.index, child.path = index, path
        if child.ready:
            child.conn.send(str(path))
            child.deadline = time.monotonic() + self.timeout

    def _collect(self) -> list[tuple[int, Any]]:
        """Wait (a little) for the busy children; what finished, died or ran out of time."""
        busy = [c for c in self._children if c.path is not None]
        if not busy:
            return []
        soonest = min(c.deadline for c in busy)
        ready = wait([c.conn for c in busy], timeout=max(0.0, min(POLL, soonest - time.monotonic())))
        results = []
        for child in busy:
            if child.conn in ready:
                try:
                    status, value = child.conn.recv()
                except (EOFError, OSError):
                    code = self._end(child)
                    if not child.ready:  # not the file's doing: the job fails and is retried
                        raise RuntimeError(
                            f"the de-identification worker process did not start (exit code {code})"
                        ) from None
                    results.append(self._refuse(child, f"de-identification worker died (exit code {code})"))
                    continue
                if status == "ready":
                    child.ready = True
                    self._hand(child, child.index, child.path)  # type: ignore[arg-type]
                    continue
                results.append((child.index, DeidError(str(value)) if status == "refused" else value))
                child.index = child.path = None
            elif time.monotonic() >= child.deadline:
                self._end(child)
                if not child.ready:
                    raise RuntimeError("the de-identification worker process did not start")
                results.append(self._refuse(
                    child,
                    f"de-identification took longer than [deid] instance_timeout ({self.timeout:g} s)",
                ))
        return results

    def _refuse(self, child: _Child, reason: str) -> tuple[int, DeidError]:
        assert child.index is not None
        return child.index, DeidError(reason)

    def _kill_busy(self) -> None:
        for child in [c for c in self._children if c.path is not None]:
            self._end(child)

    def _end(self, child: _Child) -> int | None:
        """Kill one child at once (if still running) and forget it; its exit code."""
        if child.process.is_alive():
            child.process.kill()
        child.process.join(5)
        child.conn.close()
        self._children.remove(child)
        return child.process.exitcode
