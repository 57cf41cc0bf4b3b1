"""Peak resident memory of the current process, read from /proc (Linux only).

Standard library only: the LiteRT benchmark child imports this next to numpy and
ai_edge_litert and nothing else, so the numbers are not inflated by torch.

Method: writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's
high-water mark ``VmHWM`` to the current ``VmRSS``; after the work, ``VmHWM``
minus the ``VmRSS`` read before it is the peak extra resident memory. glibc
recycles freed heap without returning it, which hides a second peak inside the
first; the parent therefore runs children with ``MALLOC_MMAP_THRESHOLD_=65536``
so every large buffer is its own mmap and goes back to the kernel when freed.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def memory_status() -> dict:
    """Returns ``{"VmRSS": bytes, "VmHWM": bytes}`` of this process.

    Raises:
      OSError: /proc/self/status is unreadable (not Linux).
    """
    values = {}
    for line in _STATUS.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024  # reported in kB
    return values


def reset_peak() -> int:
    """Resets VmHWM to the current VmRSS; returns that VmRSS in bytes."""
    _CLEAR_REFS.write_text("5")
    return memory_status()["VmRSS"]


def peak_since(baseline_rss: int) -> int:
    """Bytes by which the high-water mark rose above ``baseline_rss``."""
    return memory_status()["VmHWM"] - baseline_rss
