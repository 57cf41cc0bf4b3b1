"""``python -m parity.bench``: memory and latency of standard vs flash attention.

Measures attention alone in PyTorch eager and in LiteRT (XNNPACK), and the
whole TinyLlama-shaped model in LiteRT, each case in a fresh process; writes
rows (suite="bench") to a results file and prints a table. ``--quick`` uses
small lengths (CI); the default is the full set, 512 to 8192. Every
multi-word flag also takes the other spelling (``--cache_dir``, ...).

Exit status: 0 every case measured, 1 a case failed (its row says why), 2
unusable input (bad flag or value, unwritable results), one line each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_flash.cli import ArgumentParser
from parity.bench.cases import (
    BLOCK_SWEEP_LENGTHS,
    FULL_LENGTHS,
    QUICK_LENGTHS,
    RUNTIMES,
    attention_cases,
)
from parity.bench.runner import run_benchmarks
from parity.bench.table import summary_table

DEFAULT_BENCH_RESULTS = Path("reports") / "bench.jsonl"
_PARTS = ("attention", "model")


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive ints")
    return values


def _block_pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``"256:128,128:128"`` -> ((256, 128), (128, 128))."""
    try:
        pairs = tuple(tuple(int(n) for n in part.split(":")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of q:kv block sizes") from None
    if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r} must list positive q:kv pairs, e.g. 256:128")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """The bench CLI's parser (both spellings of every flag; bad flags exit 2)."""
    parser = ArgumentParser(prog="python -m parity.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"lengths {QUICK_LENGTHS}, no sweep")
    parser.add_argument("--lengths", type=_positive_ints, help="comma-separated T = S values")
    parser.add_argument("--sweep-lengths", type=_positive_ints, help="lengths of the block sweep")
    parser.add_argument("--blocks", type=_block_pairs, help="sweep q:kv pairs, e.g. 128:128,64:128")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="torch,litert")
    parser.add_argument("--parts", default=",".join(_PARTS), help="attention,model")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (5; 3 quick)")
    parser.add_argument("--results", type=Path, default=DEFAULT_BENCH_RESULTS,
                        help=f"result rows (default: {DEFAULT_BENCH_RESULTS})")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=None, help="converted-model cache")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


def _cases(args) -> list:
    lengths = args.lengths or (QUICK_LENGTHS if args.quick else FULL_LENGTHS)
    sweep = args.sweep_lengths or (() if args.quick else BLOCK_SWEEP_LENGTHS)
    runtimes = tuple(r for r in args.runtimes.split(",") if r)
    parts = tuple(p for p in args.parts.split(",") if p)
    for name, values, allowed in (("--runtimes", runtimes, RUNTIMES), ("--parts", parts, _PARTS)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"{name} ({','.join(unknown)}) must be among {','.join(allowed)}")
    cases = []
    if "attention" in parts:
        blocks = {"block_choices": args.blocks} if args.blocks else {}
        cases += attention_cases(lengths, sweep, runtimes=runtimes, **blocks)
    if "model" in parts and "litert" in runtimes:
        from parity.bench.model_cases import model_cases

        cases += model_cases(lengths)
    return cases


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cases = _cases(args)
        repeats = (3 if args.quick else 5) if args.repeats is None else args.repeats
        if repeats < 1:
            raise ValueError(f"--repeats ({repeats}) must be at least 1")
        rows = run_benchmarks(cases, args.results, repeats, args.cache_dir)
    except (ValueError, OSError) as error:
        if args.verbose:
            raise
        print(f"parity.bench: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(rows))
    print(f"rows written to {args.results}")
    failed = [row for row in rows if not row["passed"] and '"status": "error"' in row["details"]]
    for row in failed:
        print(f"parity.bench: case {row['case_id']} failed (see its details)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
