"""An exclusive lock between processes on one machine, held by a lock file.

The pytest-xdist workers of one session share the conversion cache
(``parity.chain.TFLiteStore``); the lock makes the first worker that needs a
model convert it while the others wait, then find the file and reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _opened(path: Path):
    """The lock file ``path`` (created, with its directory, if missing), open for ``flock``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a")


def _took(handle) -> bool:
    """Takes the exclusive ``flock`` on ``handle`` if no other holder has it; whether it did."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path, waiting_message: str = "") -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Blocks until no other process holds it. When it has to wait, prints
    ``waiting_message`` (if given) and how long it waited to stderr, so a long
    wait behind another worker's conversion is not silence. The lock is released
    when the block ends or the process dies; the file itself stays (it is empty).
    """
    with _opened(path) as handle:
        if not _took(handle):
            if waiting_message:
                print(waiting_message, file=sys.stderr, flush=True)
            started = time.perf_counter()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if waiting_message:
                waited = time.perf_counter() - started
                print(f"  ... lock {Path(path).name} acquired after {waited:.0f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Takes the lock on ``path`` only if no process holds it; yields whether it did.

    For work that must not wait and must not run beside the holder (pruning a
    cached file another process may be converting or reading).
    """
    with _opened(path) as handle:
        if not _took(handle):
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def is_held(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now (a snapshot, not a claim)."""
    if not Path(path).exists():
        return False
    with lock_if_free(path) as locked:
        return not locked
