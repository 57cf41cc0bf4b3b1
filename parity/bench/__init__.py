"""parity.bench: memory and latency of standard vs flash attention (``python -m parity.bench``).

Measured, not timed tests: each case runs in a fresh child process; this
package itself imports no torch, so LiteRT children stay clean.
"""

from parity.bench.cases import (
    FULL_LENGTHS,
    QUICK_LENGTHS,
    TINYLLAMA_ATTENTION,
    AttentionShape,
    BenchCase,
    attention_cases,
    floor_bytes,
)
from parity.bench.method import METHOD
from parity.bench.runner import case_rows, run_benchmarks, run_case
from parity.bench.table import bench_frame, summary_table

__all__ = [
    "FULL_LENGTHS",
    "METHOD",
    "QUICK_LENGTHS",
    "TINYLLAMA_ATTENTION",
    "AttentionShape",
    "BenchCase",
    "attention_cases",
    "bench_frame",
    "case_rows",
    "floor_bytes",
    "run_benchmarks",
    "run_case",
    "summary_table",
]
