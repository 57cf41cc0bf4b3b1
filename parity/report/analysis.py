"""What a results file says: comparison tables with margins, and the gate's verdict.

Pure functions of the loaded results (``parity.results.ResultsFile``): no I/O,
so the tests can feed them synthetic rows.
"""

from __future__ import annotations

import dataclasses
import math
import shlex

import pandas as pd

from parity.impl_loader import DEFAULT_ATTENTION_IMPL
from parity.results import REFERENCE_LEGS, ResultsFile

BENCH_SUITE = "bench"
_TABLE_COLUMNS = [
    "suite",
    "model",
    "case_id",
    "legs",
    "metric",
    "value",
    "tolerance",
    "margin",
    "used",
    "passed",
    "shapes",
    "seed",
    "test",
]


@dataclasses.dataclass
class Verdict:
    """The gate's outcome: passed, what failed, how to reproduce, and what else to know."""

    passed: bool
    problems: list[str]  # why the gate failed; empty when it passed
    reproduce: list[str]  # commands that rerun what failed
    notes: list[str]  # not gate failures: skipped or failed benchmark cases, truncation

    @property
    def label(self) -> str:
        return "PASSED" if self.passed else "FAILED"


def comparison_frame(results: ResultsFile) -> pd.DataFrame:
    """Every comparison row of the test suites, with its margin.

    ``margin`` = tolerance - value (headroom, in the metric's unit; negative when
    exceeded); ``used`` = value / tolerance. Both are NaN where a row has no
    tolerance. Failing rows come first, then the tightest margins.
    """
    rows = [row for row in results.rows if row.get("suite") != BENCH_SUITE]
    frame = pd.DataFrame(rows, columns=[c for c in _TABLE_COLUMNS if c not in ("margin", "used")])
    if frame.empty:
        return pd.DataFrame(columns=_TABLE_COLUMNS)
    value = pd.to_numeric(frame["value"], errors="coerce")
    tolerance = pd.to_numeric(frame["tolerance"], errors="coerce")
    frame["value"], frame["tolerance"] = value, tolerance
    frame["margin"] = tolerance - value
    frame["used"] = value / tolerance
    frame["passed"] = frame["passed"].astype(bool)
    frame = frame.sort_values(["passed", "used"], ascending=[True, False], na_position="last")
    return frame[_TABLE_COLUMNS].reset_index(drop=True)


def suite_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per suite: comparisons, failures, and the largest share of a tolerance used."""
    if frame.empty:
        return pd.DataFrame(columns=["suite", "comparisons", "failed", "max used"])
    grouped = frame.groupby("suite", sort=True)
    summary = pd.DataFrame(
        {
            "comparisons": grouped.size(),
            "failed": grouped["passed"].apply(lambda passed: int((~passed).sum())),
            "max used": grouped["used"].max(),
        }
    )
    return summary.reset_index()


def _reproduce_command(test: str, header: dict) -> str:
    command = [".venv/bin/pytest", test]
    profile = header.get("hypothesis_profile")
    if profile:
        command.append(f"--hypothesis-profile={profile}")
    impl = header.get("attention_impl")
    if impl and impl != DEFAULT_ATTENTION_IMPL:
        command.append(f"--attention-impl={impl}")
    for key, option in (("model_builder", "--model-builder"), ("tflite", "--tflite")):
        if header.get(key):
            command.append(f"{option}={header[key]}")
    return shlex.join(command)


def _session_problems(results: ResultsFile) -> list[str]:
    problems = []
    test_headers = [h for h in results.headers if h.get("suite") != BENCH_SUITE]
    test_footers = [f for f in results.footers if f.get("suite") != BENCH_SUITE]
    if not test_headers:
        problems.append("no test session in the results: the suites did not run")
    if len(test_footers) < len(test_headers):
        problems.append(
            f"{len(test_headers) - len(test_footers)} test session(s) never finished"
            " (crashed or interrupted): rows after the crash are missing"
        )
    for footer in test_footers:
        status = footer.get("exitstatus", 0)
        if status not in (0,):
            problems.append(
                f"pytest exited with status {status} ({footer.get('failed', '?')} failed,"
                f" {footer.get('passed', '?')} passed, {footer.get('skipped', '?')} skipped)"
            )
    return problems


def verdict(results: ResultsFile) -> Verdict:
    """The gate passed iff every test session finished with status 0 and no row failed.

    Benchmark rows (suite "bench") are measurements: a skipped or failed case is
    a note, not a gate failure. So are rows of the reference (``REFERENCE_LEGS``:
    litert-torch's standard against the oracle): outside the candidate's error
    model they are a finding in the notes.
    """
    problems = _session_problems(results)
    header = next((h for h in results.headers if h.get("suite") != BENCH_SUITE), {})
    failed_tests = []
    for event in results.events:
        if event.get("event") == "test_failed" and event.get("test") not in failed_tests:
            failed_tests.append(event.get("test"))
            problems.append(
                f"test failed: {event.get('test')} ({event.get('when')}):"
                f" {_error_line(event.get('message') or '')}"
            )
    reference_misses = []
    for row in results.rows:
        if row.get("suite") == BENCH_SUITE or row.get("passed"):
            continue
        if row.get("legs") in REFERENCE_LEGS:
            reference_misses.append(row)  # the reference is measured, not judged
            continue
        problems.append(
            f"comparison failed: {row.get('suite')}/{row.get('case_id')} {row.get('legs')}"
            f" {row.get('metric')} = {_number(row.get('value'))} (allowed {_number(row.get('tolerance'))})"
        )
        if row.get("test") and row["test"] not in failed_tests:
            failed_tests.append(row["test"])
    notes = _bench_notes(results) + _reference_notes(reference_misses)
    if results.unreadable_lines:
        notes.append(f"{results.unreadable_lines} unreadable line(s) in the results file (cut off)")
    reproduce = [_reproduce_command(test, header) for test in failed_tests if test]
    return Verdict(not problems, problems, reproduce, notes)


def _reference_notes(rows: list[dict]) -> list[str]:
    """Findings: comparisons where the reference (litert-torch's standard) itself is
    outside the error model the candidate is held to."""
    if not rows:
        return []
    worst = max(rows, key=lambda row: _as_ratio(row.get("ratio")))
    return [
        f"finding: litert-torch's standard is outside the candidate's error model on"
        f" {len(rows)} comparison(s) (not a gate failure: the gate judges the candidate);"
        f" worst {worst.get('suite')}/{worst.get('case_id')} {worst.get('legs')}"
        f" = {_number(worst.get('value'))} (allowed {_number(worst.get('tolerance'))})"
    ]


def _as_ratio(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def _error_line(message: str) -> str:
    """The first ``E ...`` line of a pytest failure (the error itself), else its last line."""
    lines = message.strip().splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors or lines[-1:] or [""])[0][:300]


def _bench_notes(results: ResultsFile) -> list[str]:
    from parity.bench.table import bench_frame

    notes = []
    frame = bench_frame(results.rows)  # a case measured again later counts as measured
    for _, line in frame[frame["status"] != "measured"].iterrows() if not frame.empty else []:
        notes.append(
            f"benchmark {line['case_id']} not measured: {line['status']}: {line['reason']}"
        )
    bench_headers = [h for h in results.headers if h.get("suite") == BENCH_SUITE]
    bench_footers = [f for f in results.footers if f.get("suite") == BENCH_SUITE]
    if len(bench_footers) < len(bench_headers):
        notes.append("a benchmark run never finished: its later cases are missing")
    return notes


def _number(value) -> str:
    if value is None:
        return "none"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else f"{number:.3g}"


def run_duration_s(results: ResultsFile) -> float | None:
    """Seconds from the first session's start to the last session's end, if known."""
    starts = [h["started"] for h in results.headers if "started" in h]
    ends = [f["finished"] for f in results.footers if "finished" in f]
    ends += [row["time"] for row in results.rows if "time" in row]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)
