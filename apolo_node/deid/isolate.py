"""De-identification of one spooled file at a time in a child process that can be killed.

A thread cannot be stopped, and pydicom or the OCR may spend minutes (or all memory) on a
hostile instance that the receiver accepted. :class:`IsolatedCleaner` hands each file to a
child process (spawned, so none of the node's threads or locks are copied into it) and waits
at most ``[deid] instance_timeout`` seconds: past it, or if the child dies, the child is killed
and replaced, and the instance is refused with a :class:`~apolo_node.deid.command.DeidError`
whose reason names the rule, so the caller quarantines it instead of retrying it.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from apolo_node.deid.actions import Deidentifier
from apolo_node.deid.command import CleanInstance, DeidError, clean_file

START_TIMEOUT = 120.0  # seconds a fresh child may take to import and say it is ready
POLL = 0.2  # seconds between two looks at the stop event while waiting
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float, Double Float and Pixel Data


class Interrupted(RuntimeError):
    """The caller's stop event was set while an instance was being cleaned; it was not refused."""


def _serve(conn: Connection, deidentifier: Deidentifier) -> None:
    """The child: clean each path received, answer ("ok", CleanInstance) or ("refused", reason)."""
    conn.send(("ready", None))
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        try:
            clean = clean_file(Path(path), deidentifier)
            header = clean.dataset  # what the caller reads of it; the pixels travel encoded only
            for tag in PIXEL_TAGS:
                if tag in header:
                    del header[tag]
            answer: tuple[str, object] = ("ok", clean)
        except DeidError as exc:
            answer = ("refused", str(exc))
        except BaseException as exc:  # never a value: pydicom messages may quote them
            answer = ("refused", f"could not de-identify: {type(exc).__name__}")
        conn.send(answer)


class IsolatedCleaner:
    """Cleans spooled files one at a time in a child process killed past ``timeout`` seconds."""

    def __init__(self, deidentifier: Deidentifier, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.deidentifier = deidentifier
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> IsolatedCleaner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clean(self, path: Path, stop: threading.Event | None = None) -> CleanInstance:
        """The verified clean instance of the file at ``path``; DeidError with the reason if not.

        Raises :class:`Interrupted` (the instance is neither cleaned nor refused) when ``stop``
        is set meanwhile.
        """
        conn = self._ready(stop)
        conn.send(str(path))
        deadline = time.monotonic() + self.timeout
        while not conn.poll(min(POLL, max(0.0, deadline - time.monotonic()))):
            if stop is not None and stop.is_set():
                self._kill()
                raise Interrupted("stopped while an instance was being de-identified")
            if time.monotonic() >= deadline:
                self._kill()
                raise DeidError(
                    f"de-identification took longer than [deid] instance_timeout ({self.timeout:g} s)"
                )
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            code = self._kill()
            raise DeidError(f"de-identification worker died (exit code {code})") from None
        if status == "refused":
            raise DeidError(str(value))
        assert isinstance(value, CleanInstance)
        return value

    def close(self) -> None:
        """Ask the child to finish, then make sure it has."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        if self._child is not None:
            self._child.join(5)
        self._kill()

    def _ready(self, stop: threading.Event | None) -> Connection:
        if self._conn is not None and self._child is not None and self._child.is_alive():
            return self._conn
        self._kill()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self.deidentifier), name="apolo-deid-instance", daemon=True
        )
        process.start()
        child.close()
        self._child, self._conn = process, parent
        deadline = time.monotonic() + START_TIMEOUT
        while not parent.poll(POLL):
            if stop is not None and stop.is_set():
                self._kill()
                raise Interrupted("stopped while the de-identification worker was starting")
            if time.monotonic() >= deadline or not process.is_alive():
                self._kill()
                raise RuntimeError("the de-identification worker process did not start")
        parent.recv()
        return parent

    def _kill(self) -> int | None:
        """End the child at once (if any) and forget it; its exit code."""
        code = None
        if self._child is not None:
            if self._child.is_alive():
                self._child.kill()
            self._child.join(5)
            code = self._child.exitcode
        if self._conn is not None:
            self._conn.close()
        self._child = self._conn = None
        return code
