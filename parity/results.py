"""Result rows: one per comparison, streamed to a JSON-lines file as they happen.

Each row is flushed and fsynced when recorded, so a crash or interrupt loses
nothing written so far. The report (``parity.report``) reads these files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

RESULTS_ENV = "PARITY_RESULTS"
DEFAULT_RESULTS_PATH = Path("reports") / "results.jsonl"
_VERSIONED_PACKAGES = (
    "torch",
    "litert-torch",
    "ai-edge-litert",
    "tensorflow-cpu",
    "transformers",
    "hypothesis",
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
    tolerance: Optional[float]
    passed: bool
    shapes: str = ""
    seed: Optional[int] = None
    details: str = ""
    test: str = ""  # pytest node id, filled by the fixture
    time: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> str:
        row = dataclasses.asdict(self)
        for key in ("value", "tolerance"):
            if isinstance(row[key], float) and not math.isfinite(row[key]):
                row[key] = repr(row[key])  # JSON has no NaN/inf; keep them readable.
        return json.dumps(row, sort_keys=True)


def package_versions() -> dict:
    """Installed versions of the stack under test, plus Python and machine."""
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class ResultsWriter:
    """Appends rows to a JSON-lines file; first line of a session is a header."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write_header(self, **fields: Any) -> None:
        self._write(json.dumps({"header": True, "versions": package_versions(), **fields}))

    def record(self, row: ResultRow) -> None:
        self._write(row.to_json())

    def _write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_results(path: Path) -> tuple[list[dict], list[dict]]:
    """Reads a results file; returns (headers, rows). Tolerates a truncated last line."""
    headers, rows = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # A line cut off by a crash: everything before it is intact.
        (headers if item.get("header") else rows).append(item)
    return headers, rows
