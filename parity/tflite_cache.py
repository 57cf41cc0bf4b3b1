"""Where the parity suites keep their TFLite conversions, and how that directory stays bounded.

A conversion is the slowest step of a TFLite leg (seconds for the families' tiny
models, minutes for SmolLM2), and its file is keyed by everything that goes into
it (``parity.chain.TFLiteStore._key``: weights, variant, kernel and builder
sources, sizes, the converting packages' versions). So the suites keep the
files of one checkout across sessions: a later session of the same code reuses
them instead of converting again, and any change that could change a file
changes its name instead.

- Default: ``<checkout>/.cache/tflite`` (git ignores ``.cache/``).
- ``PARITY_TFLITE_CACHE=DIR``: that directory, never pruned (it is yours).
- ``PARITY_TFLITE_CACHE=session``: a fresh directory per session (the
  session's temp dir, shared by its xdist workers), gone with pytest's temp dirs.

The default directory is pruned when a session starts (``prune``): the least
recently used files (reuse refreshes a file's mtime) go first, until the
directory holds at most ``PARITY_TFLITE_CACHE_MAX_GB`` (default 6: one gate's
files take a little over 2 GB, mostly the fp32 files of SmolLM2 and of the
TinyLlama-shaped model, so the previous generation of the code survives beside
the current one). A file whose lock is held (another session converting or
checking it) is never removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from parity.file_lock import lock_if_free

CACHE_ENV = "PARITY_TFLITE_CACHE"
MAX_GB_ENV = "PARITY_TFLITE_CACHE_MAX_GB"
SESSION = "session"  # the value of CACHE_ENV that asks for a per-session directory
DEFAULT_MAX_GB = 6.0
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIRECTORY = ROOT / ".cache" / "tflite"


def configured_directory() -> Path | None:
    """The directory the environment asks for: the default, the user's, or None for
    ``session`` (the caller makes a per-session one)."""
    if os.environ.get(CACHE_ENV, "").strip() == SESSION:
        return None
    return explicit_directory() or DEFAULT_DIRECTORY


def explicit_directory() -> Path | None:
    """The directory ``PARITY_TFLITE_CACHE`` names, or None (unset or ``session``): for
    the command-line tools, which convert into their own temp dir unless told."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return None if value in ("", SESSION) else Path(value).expanduser()


def is_default(directory: Path) -> bool:
    """True for the checkout's own cache (the one ``prune`` may shrink)."""
    return Path(directory).resolve() == DEFAULT_DIRECTORY.resolve()


def max_bytes() -> int:
    """The default directory's size cap, from ``PARITY_TFLITE_CACHE_MAX_GB`` (GB = 1e9 bytes).

    Raises:
      ValueError: the variable is not a positive number (naming it and the value).
    """
    text = os.environ.get(MAX_GB_ENV, "").strip() or str(DEFAULT_MAX_GB)
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes > 0:
        raise ValueError(f"{MAX_GB_ENV}={text!r}: give a positive number of GB, e.g. 6")
    return int(gigabytes * 1e9)


def mark_used(path: Path) -> None:
    """Refreshes ``path``'s mtime, the recency ``prune`` evicts by."""
    os.utime(path)


def prune(directory: Path, limit_bytes: int) -> list[Path]:
    """Removes least recently used ``*.tflite`` files until the rest fit in ``limit_bytes``.

    Any ``.corrupt`` copy beside a file goes with it. A file is removed under
    its lock (``parity.chain.TFLiteStore.lock_path``), so one that another
    process is converting or checking stays, whatever its age; the empty lock
    files stay too (removing one another process has open would split the lock).
    Returns the files removed, least recently used first.
    """
    from parity.chain import TFLiteStore

    files = sorted(Path(directory).glob("*.tflite"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = []
    for path in files:
        if total <= limit_bytes:
            break
        with lock_if_free(TFLiteStore.lock_path(path)) as locked:
            if not locked or not path.is_file():
                continue
            total -= path.stat().st_size
            path.unlink()
            path.with_name(path.name + ".corrupt").unlink(missing_ok=True)
            removed.append(path)
    return removed
