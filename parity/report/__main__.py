"""``python -m parity.report``: run the gate and the benchmarks, write reports/index.html.

By default runs the property and parity suites (ci profile) and the quick
benchmarks into a fresh ``reports/results.jsonl`` (JUnit: ``reports/junit.xml``),
then writes the page and prints the summary. ``--full-bench`` runs every length;
``--no-bench`` skips the benchmarks; ``--from FILE`` only renders an existing
results file (repeat it to render several as one, e.g. CI shards). Exits 1 when the gate failed, 2 on a usage or I/O error.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from edge_flash.cli import ArgumentParser
from parity.report import runs
from parity.report.analysis import comparison_frame, verdict
from parity.report.page import comparisons_csv_path, render_page
from parity.report.terminal import summary_text
from parity.results import ResultsFile, load_results

DEFAULT_OUT = Path("reports") / "index.html"
DEFAULT_RESULTS = Path("reports") / "results.jsonl"
DEFAULT_JUNIT = Path("reports") / "junit.xml"
REPRODUCE_ALL = "make report   # or: .venv/bin/python -m parity.report"


def build_parser() -> argparse.ArgumentParser:
    """The report CLI's parser (both spellings of every flag; bad flags exit 2)."""
    parser = ArgumentParser(prog="python -m parity.report", description=__doc__)
    parser.add_argument(
        "--from",
        dest="sources",
        type=Path,
        action="append",
        help="render this results file only; repeat it to read several as one (CI shards)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the HTML page to write")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results to write")
    parser.add_argument("--junit", type=Path, default=DEFAULT_JUNIT, help="JUnit XML to write")
    bench = parser.add_mutually_exclusive_group()
    bench.add_argument("--full-bench", action="store_true", help="benchmarks at every length")
    bench.add_argument("--no-bench", action="store_true", help="skip the benchmarks")
    parser.add_argument("--no-tests", action="store_true", help="skip the test suites")
    parser.add_argument(
        "--pytest-args", default="", help="extra pytest arguments, e.g. \"-m 'not slow'\""
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    return parser


def _run(args) -> tuple[Path, float]:
    """Runs the suites and benchmarks into a fresh results file; returns it and the duration."""
    results_path = runs.fresh_results_file(args.results)
    start = time.perf_counter()
    if not args.no_tests:
        command = runs.pytest_command(args.junit, shlex.split(args.pytest_args))
        status = runs.run_streaming(command, results_path)
        print(f"parity.report: test suites exited with status {status}", flush=True)
        status = runs.run_streaming(runs.detection_command(results_path), results_path)
        print(f"parity.report: detection limits exited with status {status}", flush=True)
    if not args.no_bench:
        status = runs.run_streaming(runs.bench_command(results_path, args.full_bench), results_path)
        print(f"parity.report: benchmarks exited with status {status}", flush=True)
    return results_path, time.perf_counter() - start


def load_sources(sources: list[Path]) -> ResultsFile:
    """The results files ``sources`` read as one, in order (every session in each is kept).

    Raises:
      FileNotFoundError: a source does not exist.
      ValueError: a source holds no session header, row or footer (not a results file).
    """
    merged = ResultsFile([], [], [], [], 0)
    for source in sources:
        results = load_results(source)
        if not (results.headers or results.rows or results.footers):
            raise ValueError(
                f"--from {source} is not a results file (no header, row or footer in"
                f" {results.unreadable_lines} unreadable lines); no page was written"
            )
        for kind in ("headers", "rows", "events", "footers"):
            getattr(merged, kind).extend(getattr(results, kind))
        merged.unreadable_lines += results.unreadable_lines
    return merged


def write_report(source: Path | list[Path], out: Path, duration_s: float | None = None) -> bool:
    """Renders ``source`` (one results file, or several read as one) to ``out``.

    Prints the summary; returns whether the gate passed.

    The page is written to a temporary file beside ``out`` and renamed over it, so
    a failure leaves an earlier page whole.

    Raises:
      FileNotFoundError: ``source`` does not exist.
      ValueError: ``source`` holds no session header, row or footer (not a results file).
    """
    sources = source if isinstance(source, list) else [source]
    results = load_sources(sources)
    overlays = _overlay_links(sources, out)
    page = render_page(results, ", ".join(map(str, sources)), REPRODUCE_ALL, duration_s, overlays)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)
    comparison_frame(results).to_csv(comparisons_csv_path(out), index=False)
    print(summary_text(results, str(out)), flush=True)
    return verdict(results).passed


def _overlay_links(sources: list[Path], out: Path) -> list:
    """(name, link relative to the page) of every overlay in ``overlays/`` beside a source,
    where ``parity.overlay`` writes them during a session with that results file."""
    found = sorted({p for source in sources for p in (source.parent / "overlays").glob("*.json")})
    return [(p.name, os.path.relpath(p.resolve(), out.parent.resolve())) for p in found]


def _check_out_is_not_an_input(args) -> None:
    """Raises ValueError when ``--out`` would write over the results it reads."""
    flag = "--from" if args.sources else "--results"
    for source in args.sources or [args.results]:
        if args.out.resolve() == source.resolve():
            raise ValueError(
                f"--out ({args.out}) is the same file as {flag} ({source}); give the page"
                " another name, e.g. --out reports/index.html"
            )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_out_is_not_an_input(args)
        if args.sources:
            return 0 if write_report(args.sources, args.out) else 1
        results_path, duration_s = _run(args)
        return 0 if write_report(results_path, args.out, duration_s) else 1
    except (OSError, ValueError) as error:
        if args.verbose:
            raise
        print(f"parity.report: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
