"""Runs mutants through the gate in a worker process, with a per-mutant timeout.

``run_mutants(ids, ...)`` starts ``python -m property_tests.mutation.worker``
(one process for many mutants: the ~6 s import of torch, tensorflow and
litert-torch is paid once), reads its protocol lines, and kills it when one
mutant runs past ``timeout_s``; that mutant is recorded as ``timeout`` (a
hang or a slow-down the gate would notice as a stuck job: counted as killed,
as mutation tools do) and a new worker carries on with the next one.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from property_tests.mutation.worker import READY, RESULT, ROOT, START

# Imports of torch, tensorflow and litert-torch: ~6 s idle, measured up to ~40 s
# on this 2-core machine under other jobs; past this the worker is stuck.
STARTUP_TIMEOUT_S = 300.0


class _Lines:
    """Lines of a pipe, each read with a deadline."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe, selectors.EVENT_READ)

    def next(self, timeout_s: float) -> str | None:
        """The next line; None on timeout. Raises EOFError when the pipe closed."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                return None
            chunk = os.read(self.pipe.fileno(), 65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")


def _protocol(lines: _Lines, timeout_s: float) -> tuple[str, str] | None:
    """The next (tag, payload) protocol line, skipping anything else; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        line = lines.next(max(0.0, deadline - time.monotonic()))
        if line is None:
            return None
        tag, _, payload = line.partition(" ")
        if tag in (READY, START, RESULT):
            return tag, payload


def run_mutants(
    ids: list[str], out_dir: Path, timeout_s: float, on_result: Callable[[dict], None]
) -> None:
    """Runs every id (a mutant id or ``original``) through the gate; ``on_result`` gets each record.

    A record: {"id", "status" (killed / survived / timeout / error), "killer",
    "message", "seconds"}. Worker logs (stderr) and pytest outputs go to ``out_dir``.
    """
    remaining = list(ids)
    first = 0
    while remaining:
        done = 0
        for record in _one_worker(remaining, first, out_dir, timeout_s):
            on_result(record)
            done += 1
        remaining, first = remaining[done:], first + done


def _one_worker(ids: list[str], first: int, out_dir: Path, timeout_s: float) -> Iterator[dict]:
    """Records from one worker; stops after a timeout or a crash (that mutant's record included)."""
    command = [
        sys.executable,
        "-m",
        "property_tests.mutation.worker",
        str(out_dir),
        str(first),
        *ids,
    ]
    log_path = out_dir / f"worker-{first}.log"
    with log_path.open("w", encoding="utf-8") as log:
        worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        try:
            yield from _records(_Lines(worker.stdout), ids, timeout_s, log_path)
        finally:
            if worker.poll() is None:
                worker.kill()  # our own child, by its Popen handle
            worker.wait()


def _records(lines: _Lines, ids: list[str], timeout_s: float, log_path: Path) -> Iterator[dict]:
    current, started = ids[0], time.perf_counter()
    try:
        if _protocol(lines, STARTUP_TIMEOUT_S) is None:
            yield _failed(
                current, "error", f"worker did not start in {STARTUP_TIMEOUT_S:.0f} s", 0.0
            )
            return
        for current in ids:
            started = time.perf_counter()
            if _protocol(lines, STARTUP_TIMEOUT_S) is None:  # START follows RESULT at once
                yield _failed(current, "error", "worker stopped answering", 0.0)
                return
            line = _protocol(lines, timeout_s)
            if line is None:
                yield _failed(current, "timeout", f"no result in {timeout_s:.0f} s",
                              time.perf_counter() - started)  # fmt: skip
                return
            yield json.loads(line[1])
    except EOFError:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-400:]
        yield _failed(current, "error", f"worker died; its log ends: {tail}",
                      time.perf_counter() - started)  # fmt: skip


def _failed(mutant_id: str, status: str, message: str, seconds: float) -> dict:
    return {
        "id": mutant_id,
        "status": status,
        "killer": None,
        "message": message,
        "seconds": seconds,
    }
