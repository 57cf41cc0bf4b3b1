"""The report's summary for the terminal (tabulate): verdict, suites, claims, benchmarks."""

from __future__ import annotations

from tabulate import tabulate

from parity.bench.table import summary_table
from parity.report import analysis, claims, long_context, mutation
from parity.results import ResultsFile


def summary_text(results: ResultsFile, page_path: str | None = None) -> str:
    """The same summary as the page's top sections, as plain text."""
    verdict = analysis.verdict(results)
    lines = [f"GATE {verdict.label}"]
    lines += [f"  - {problem}" for problem in verdict.problems[:30]]
    if len(verdict.problems) > 30:
        lines.append(f"  ... and {len(verdict.problems) - 30} more")
    if verdict.reproduce:
        lines.append("Reproduce:")
        lines += [f"  {command}" for command in verdict.reproduce[:10]]
    lines.append("")
    summary = analysis.suite_summary(analysis.comparison_frame(results))
    lines.append(tabulate(summary, headers="keys", showindex=False, floatfmt=".3g"))
    lines.append("")
    claim_rows = [(c.claim, c.measured, c.status) for c in claims.claims_table(results.rows)]
    lines.append(tabulate(claim_rows, headers=["seed's claim", "measured", "status"]))
    lines.append("")
    target_rows = [(c.claim, c.measured, c.status) for c in claims.targets_table(results.rows)]
    lines.append(tabulate(target_rows, headers=["target (LiteRT attention)", "measured", "status"]))
    lines.append("")
    long_rows = [
        (c.claim, c.measured, c.status) for c in long_context.long_context_targets(results.rows)
    ]
    lines.append(tabulate(long_rows, headers=["long-context target", "measured", "status"]))
    lines.append("")
    lines.append(summary_table(results.rows))
    lines += mutation.summary_lines(mutation.load_summary())
    lines += [f"note: {note}" for note in verdict.notes]
    if page_path:
        lines.append(f"report written to {page_path}")
    return "\n".join(lines)
