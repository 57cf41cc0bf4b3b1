"""The report's mutation-testing section, from reports/mutation.json.

``python -m property_tests.mutation`` (``make mutation``; too slow for
``python -m parity.report`` to run it) writes that file. ``load_summary``
reads it and says whether it is current: ``not run`` (no file), ``stale``
(edge_flash/kernel.py's sha256 differs from the one recorded), ``partial``
(only some mutants were run), or ``current``. ``section_html`` and
``summary_lines`` show the score and every surviving mutant with its reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTATION_JSON = ROOT / "reports" / "mutation.json"
KERNEL = ROOT / "edge_flash" / "kernel.py"
HOW_TO_RUN = "make mutation   # or: .venv/bin/python -m property_tests.mutation"
NOT_RUN, STALE, PARTIAL, CURRENT, UNREADABLE = (
    "not run",
    "stale",
    "partial",
    "current",
    "unreadable",
)


@dataclasses.dataclass
class MutationSummary:
    """What the report says about mutation testing."""

    state: str  # NOT_RUN, STALE, PARTIAL, CURRENT or UNREADABLE
    detail: str = ""  # why stale / unreadable, or the run's date
    score: float | None = None
    counts: dict = dataclasses.field(default_factory=dict)
    run: int = 0
    # Mutants not killed: survivors (gaps) and equivalents (with reasons), then errors.
    survivors: list = dataclasses.field(default_factory=list)


def load_summary(path: Path = MUTATION_JSON, kernel: Path = KERNEL) -> MutationSummary:
    """The summary of ``path`` judged against ``kernel``'s current text (never raises)."""
    if not path.exists():
        return MutationSummary(NOT_RUN, f"no {path.name}: run {HOW_TO_RUN}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        recorded = document["kernel_sha256"]
        rows = document["mutants"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return MutationSummary(UNREADABLE, f"{path}: {error}")
    current = hashlib.sha256(kernel.read_bytes()).hexdigest()
    if recorded != current:
        state, detail = STALE, (f"kernel.py changed since the run (recorded sha256 {recorded[:12]},"
                                f" now {current[:12]}): rerun {HOW_TO_RUN}")  # fmt: skip
    elif not document.get("complete"):
        state, detail = PARTIAL, f"{document.get('selection', 'some')} of the mutants were run"
    else:
        state, detail = CURRENT, f"run started {document.get('started', '?')}"
    order = {"survived": 0, "error": 1, "equivalent": 2}
    kept = sorted((r for r in rows if r.get("status") in order), key=lambda r: order[r["status"]])
    return MutationSummary(state, detail, document.get("score"), document.get("counts", {}),
                           document.get("run", len(rows)), kept)  # fmt: skip


def _score_text(summary: MutationSummary) -> str:
    if summary.state in (NOT_RUN, UNREADABLE):
        return f"mutation testing: {summary.state} ({summary.detail})"
    score = "n/a" if summary.score is None else f"{summary.score:.3f}"
    counts = ", ".join(f"{name} {number}" for name, number in summary.counts.items())
    return (f"mutation score {score} over {summary.run} mutants of edge_flash/kernel.py ({counts});"
            f" {summary.state}: {summary.detail}")  # fmt: skip


def _why(row: dict) -> str:
    if row["status"] == "equivalent":
        return row.get("reason") or ""
    if row["status"] == "error":
        return f"gate run errored: {row.get('message', '')[:200]}"
    return "GAP: survives the gate and is not listed as equivalent"


def summary_lines(summary: MutationSummary) -> list[str]:
    """Plain-text lines for the terminal summary: the score, then each mutant not killed."""
    lines = [_score_text(summary)]
    for row in summary.survivors:
        lines.append(f"  {row['status']:<10} {row['id']} {row['before']!r} -> {row['after']!r}:"
                     f" {_why(row)}")  # fmt: skip
    return lines


def section_html(summary: MutationSummary) -> str:
    """The page's section: score line, then a table of the mutants not killed."""
    parts = [f"<p>{html.escape(_score_text(summary))}</p>"]
    if summary.survivors:
        header = "<tr><th>status</th><th>mutant</th><th>function</th><th>before</th><th>after</th><th>why</th></tr>"
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                row["status"], row["id"], row.get("function", ""), row["before"], row["after"],
                _why(row))) + "</tr>"
            for row in summary.survivors
        )  # fmt: skip
        parts.append(f'<table id="mutation">{header}{rows}</table>')
    parts.append(f"<p>Run it: <code>{html.escape(HOW_TO_RUN)}</code></p>")
    return "".join(parts)
