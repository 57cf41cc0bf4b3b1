"""parity.report: the gate's verdict, the claims and the benchmarks on one page.

``python -m parity.report`` runs the suites and the benchmarks and writes
reports/index.html (self-contained); ``--from FILE`` renders existing results.
"""

from parity.report.analysis import Verdict, comparison_frame, suite_summary, verdict
from parity.report.claims import Claim, claims_table
from parity.report.page import render_page
from parity.report.terminal import summary_text

__all__ = [
    "Claim",
    "Verdict",
    "claims_table",
    "comparison_frame",
    "render_page",
    "suite_summary",
    "summary_text",
    "verdict",
]
