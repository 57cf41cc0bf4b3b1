"""The kept example database: a failure found under ci is saved, and replayed first next run.

Each run is a real pytest session of a small hypothesis test (written to a temp
dir, run with the project's conftest and ``--hypothesis-profile=ci``): the
property ``x < LIMIT`` over integers fails, hypothesis shrinks it to
``x == LIMIT``, and the next run's first example is that one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from property_tests.example_database import EXAMPLE_DB_ENV, example_database_directory
from property_tests.failures_database import FailuresDatabase

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1000
PROPERTY = """
import json, pathlib
from hypothesis import given, strategies as st, target

RUN = json.loads(pathlib.Path(__file__).with_name("run.json").read_text())

@given(st.integers(0, 10**6))
def test_below_the_limit(x):
    with open(RUN["log"], "a") as log:
        log.write(json.dumps(x) + "\\n")
    target(float(x))  # hypothesis would keep a pareto corpus for this: we do not
    assert x < RUN["limit"]
"""


def _run(work: Path, database: str, limit: int, run: int):
    """One ci session; returns (exit code, the examples it drew in order)."""
    test_file = work / "test_property.py"
    test_file.write_text(PROPERTY, encoding="utf-8")
    log = work / f"draws-{run}.jsonl"
    (work / "run.json").write_text(json.dumps({"log": str(log), "limit": limit}))
    env = {**os.environ, EXAMPLE_DB_ENV: database, "PARITY_RESULTS": str(work / "results.jsonl")}
    command = [sys.executable, "-m", "pytest", "-c", "tox.ini", "--rootdir", ".", "-p", "conftest",
               str(test_file), "--hypothesis-profile=ci", "-q", "-p", "no:cacheprovider"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    draws = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done.returncode, draws


def _kept(directory: Path) -> int:
    return FailuresDatabase(directory, scope="any").kept_count()


@pytest.fixture
def work(tmp_path):
    return tmp_path


def test_a_failure_is_kept_and_replayed_first_until_it_is_fixed(work):
    """Run 1 fails and keeps x == LIMIT; run 2 draws it first; once fixed it is deleted."""
    database = work / "examples"
    status, _ = _run(work, str(database), LIMIT, run=1)
    assert status == pytest.ExitCode.TESTS_FAILED
    assert _kept(database) == 1, "the minimal failure (only) is kept"
    status, draws = _run(work, str(database), LIMIT, run=2)
    assert status == pytest.ExitCode.TESTS_FAILED
    assert draws[0] == LIMIT, f"first example {draws[0]}, not the kept failure {LIMIT}"
    status, draws = _run(work, str(database), 10**7, run=3)  # the "fix": nothing fails
    assert status == pytest.ExitCode.OK and draws[0] == LIMIT
    assert _kept(database) == 0, "a failure that no longer fails stays kept"


def test_a_passing_run_keeps_nothing_and_two_runs_draw_the_same_examples(work):
    """No pareto or secondary corpus is kept, so the database does not change a passing run."""
    database = work / "examples"
    first = _run(work, str(database), 10**7, run=1)
    assert _kept(database) == 0
    second = _run(work, str(database), 10**7, run=2)
    assert first == second and first[0] == pytest.ExitCode.OK and len(first[1]) >= 100


def test_none_keeps_nothing_and_runs_derandomized(work):
    """PARITY_HYPOTHESIS_DB=none: a failure is not written anywhere; the draws repeat."""
    status, draws = _run(work, "none", LIMIT, run=1)
    again = _run(work, "none", LIMIT, run=2)
    assert status == pytest.ExitCode.TESTS_FAILED and again == (status, draws)
    assert not (ROOT / "none").exists() and _kept(work / "examples") == 0


def test_failures_are_scoped_by_the_attention_impl(tmp_path):
    """A failure kept for one kernel is not fetched for another (the teeth test's kernels)."""
    mine = FailuresDatabase(tmp_path, scope="edge_flash:flash_attention")
    other = FailuresDatabase(tmp_path, scope="property_tests.broken_kernels:no_rescale")
    other.save(b"test-key", b"failing choices")
    assert list(other.fetch(b"test-key")) == [b"failing choices"]
    assert list(mine.fetch(b"test-key")) == []


def test_corpora_that_are_not_failures_are_neither_kept_nor_fetched(tmp_path):
    """Hypothesis's .pareto and .secondary corpora would make a passing run change the next."""
    database = FailuresDatabase(tmp_path, scope="x:y")
    for key in (b"k.pareto", b"k.secondary"):
        database.save(key, b"value")
        assert list(database.fetch(key)) == []
    database.move(b"k", b"k.secondary", b"value")
    assert _kept(tmp_path) == 0


def test_the_directory_is_the_environment_variable_else_under_the_project(tmp_path):
    assert example_database_directory(tmp_path, {}) == tmp_path / ".hypothesis" / "examples"
    assert example_database_directory(tmp_path, {EXAMPLE_DB_ENV: "/x/db"}) == Path("/x/db")
    assert example_database_directory(tmp_path, {EXAMPLE_DB_ENV: "None"}) is None
