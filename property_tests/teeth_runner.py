"""Runs property tests against attention functions, in one process, for the teeth test.

    python -m property_tests.teeth_runner OUT_DIR JOBS_JSON

JOBS_JSON is a file holding ``{SPEC: [node id, ...]}``: for each
``package.module:function`` SPEC, the property tests to run against it (an
empty list means the whole suite, SUITE). Each job is ``pytest <node ids>
--attention-impl=SPEC --hypothesis-profile=ci-unpinned -q`` through
``pytest.main`` (the plug-in path a user takes), without ``-x``, so every named
test reports whether it failed. The job's output goes to ``OUT_DIR/<n>.txt``;
finally ``OUT_DIR/summary.json`` holds ``{SPEC: {"exit_code": int, "output":
path, "failed": {node id: failure text}}}``. One process instead of one per
SPEC saves the ~6 s import of torch, tensorflow and litert-torch each time;
every job still gets a fresh pytest config, plug-in load and results file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from property_tests.example_database import EXAMPLE_DB_ENV

SUITE = ("property_tests/test_matches_oracle.py", "property_tests/test_metamorphic.py")
# ci without the pinned @examples (and without shrinking): see the root conftest.
PROFILE = "ci-unpinned"


class _Failures:
    """pytest plug-in: collects {node id: failure text} of the tests that failed."""

    def __init__(self):
        self.failed: dict = {}

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed[report.nodeid] = report.longreprtext


def run_one(spec: str, tests: list, output: Path) -> tuple:
    """Runs ``tests`` (or SUITE) against ``spec``; returns (exit code, {node id: failure})."""
    os.environ["PARITY_RESULTS"] = str(output.with_suffix(".jsonl"))
    args = [*(tests or SUITE), f"--attention-impl={spec}", f"--hypothesis-profile={PROFILE}", "-q"]
    args += ["-p", "no:cacheprovider"]
    failures = _Failures()
    with output.open("w", encoding="utf-8") as sink:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            exit_code = int(pytest.main(args, plugins=[failures]))
    return exit_code, failures.failed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m property_tests.teeth_runner OUT_DIR JOBS_JSON", file=sys.stderr)
        return 2
    # Runs of other kernels (or mutants under edge_flash's name) keep no failures:
    # each run stays derandomized and the project's kept database is not touched.
    os.environ[EXAMPLE_DB_ENV] = "none"
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    summary = {}
    for number, (spec, tests) in enumerate(jobs.items()):
        output = out_dir / f"{number}.txt"
        exit_code, failed = run_one(spec, list(tests), output)
        summary[spec] = {"exit_code": exit_code, "output": str(output), "failed": failed}
        print(f"{spec}: exit {exit_code}, {len(failed)} failed", flush=True)  # progress
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
