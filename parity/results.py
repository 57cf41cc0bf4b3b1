"""Result rows: one per comparison, streamed to a JSON-lines file as they happen.

Each line is flushed and fsynced when written, so a crash or interrupt loses
nothing written so far. The report (``parity.report``) reads these files.

A results file holds, in order of writing, JSON objects of four kinds:
- a header per session (``"header": true``): package versions, attention impl, profile;
- rows (``ResultRow``): one per comparison or benchmark measurement;
- events (``"event": "test_failed"``): a failing test, with its message, so the
  report can say what failed even when no row did;
- a footer per session (``"footer": true``): exit status, counts, duration.
A session with a header and no footer was interrupted or crashed.

Where a pytest session writes (``session_results_path``): to ``$PARITY_RESULTS``
when it is set (``python -m parity.report`` sets it to ``reports/results.jsonl``
for its own runs, the gate runner to its own files), else to a fresh file of its
own, ``reports/sessions/pytest-<UTC time>-<pid>.jsonl``. A plain ``pytest`` run so
never appends to, or mixes with, a file the report or another run wrote; delete
old session files by hand when they are no longer wanted.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_ENV = "PARITY_RESULTS"
# Legs of rows that measure a reference implementation (litert-torch's standard)
# against the oracle, next to the implementation under test: the gate judges the
# candidate, so the report shows these as findings, not as failures of the gate.
STANDARD_VS_ORACLE = "standard-vs-oracle"
STANDARD_AS_CALLED_VS_ORACLE = "standard-as-called-vs-oracle"
REFERENCE_LEGS = (STANDARD_VS_ORACLE, STANDARD_AS_CALLED_VS_ORACLE)
SESSIONS_DIR = Path("reports") / "sessions"
_VERSIONED_PACKAGES = (
    "torch",
    "litert-torch",
    "ai-edge-litert",
    "tensorflow-cpu",
    "transformers",
    "hypothesis",
    "numpy",
    "pandas",
    "matplotlib",
)


@dataclasses.dataclass
class ResultRow:
    """One comparison: what was compared, by how much it differed, what was allowed."""

    suite: str  # e.g. "property", "parity", "bench"
    case_id: str  # readable, e.g. "b2-t37-s100-n8g2-h64-causal"
    model: str  # model name, or "kernel" for kernel-level checks
    legs: str  # what was compared, e.g. "flash-vs-oracle"
    metric: str  # e.g. "max_abs_err"
    value: float
    tolerance: float | None
    passed: bool
    shapes: str = ""
    seed: int | None = None
    details: str = ""
    test: str = ""  # pytest node id, filled by the fixture
    ratio: float | None = None  # greatest error / allowed over the compared elements
    time: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> str:
        row = dataclasses.asdict(self)
        for key in ("value", "tolerance", "ratio"):
            if isinstance(row[key], float) and not math.isfinite(row[key]):
                row[key] = repr(row[key])  # JSON has no NaN/inf; keep them readable.
        return json.dumps(row, sort_keys=True)


def session_results_path(environ: dict | None = None) -> Path:
    """The results file of a pytest session: ``$PARITY_RESULTS``, else a fresh session file.

    The fresh file is ``reports/sessions/pytest-<UTC time, microseconds>-<pid>.jsonl``
    (relative to the working directory), so two runs never share one.
    """
    environ = os.environ if environ is None else environ
    if environ.get(RESULTS_ENV):
        return Path(environ[RESULTS_ENV])
    stamp = (
        time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() // 1000 % 10**6:06d}Z"
    )
    return SESSIONS_DIR / f"pytest-{stamp}-{os.getpid()}.jsonl"


def package_versions() -> dict:
    """Installed versions of the stack under test, plus Python and machine."""
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict:
    """The machine a session ran on: OS, CPU count, total memory."""
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "memory_bytes": None}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass  # Not Linux: the memory stays unknown, which the report shows as such.
    return info


class ResultsWriter:
    """Appends lines to a JSON-lines file that other processes may append to at once.

    Each line is written, flushed and fsynced under an exclusive ``flock`` of the
    file, in append mode: the pytest-xdist workers of one session
    (``parity.results_plugin``) share one file and never interleave a line.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write_header(self, **fields: Any) -> None:
        header = {"header": True, "versions": package_versions(), "machine": machine_info()}
        header["started"] = time.time()
        self._write(json.dumps({**header, **fields}, sort_keys=True, default=str))

    def record(self, row: ResultRow) -> None:
        self._write(row.to_json())

    def _write(self, line: str) -> None:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        try:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    def write_event(self, event: str, **fields: Any) -> None:
        """Writes an event line, e.g. ``write_event("test_failed", test=..., message=...)``."""
        self._write(json.dumps({"event": event, **fields}, sort_keys=True, default=str))

    def write_footer(self, **fields: Any) -> None:
        """Ends a session: exit status, counts, duration."""
        self._write(json.dumps({"footer": True, **fields}, sort_keys=True, default=str))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclasses.dataclass
class ResultsFile:
    """Everything in one results file, by kind, in file order."""

    headers: list[dict]
    rows: list[dict]
    events: list[dict]
    footers: list[dict]
    unreadable_lines: int  # lines cut off by a crash (at most the last one, normally)

    @property
    def complete(self) -> bool:
        """True when every session that started (header) also finished (footer)."""
        return len(self.footers) >= len(self.headers)


def _decode_number(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)  # written as repr() because JSON has no NaN/inf
    return value


def load_results(path: Path) -> ResultsFile:
    """Reads a results file of any length, tolerating lines cut off by a crash.

    Raises:
      FileNotFoundError: ``path`` does not exist.
    """
    loaded = ResultsFile([], [], [], [], 0)
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            loaded.unreadable_lines += 1
            continue
        if not isinstance(item, dict):
            loaded.unreadable_lines += 1
        elif item.get("header"):
            loaded.headers.append(item)
        elif item.get("footer"):
            loaded.footers.append(item)
        elif "event" in item:
            loaded.events.append(item)
        else:
            for key in ("value", "tolerance", "ratio"):
                item[key] = _decode_number(item.get(key))
            loaded.rows.append(item)
    return loaded


def read_results(path: Path) -> tuple[list[dict], list[dict]]:
    """Reads a results file; returns (headers, rows). Tolerates a truncated last line."""
    loaded = load_results(path)
    return loaded.headers, loaded.rows
