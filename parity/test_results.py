"""Tests of parity.results and the record_result fixture: streaming, crash safety, JUnit."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from xml.etree import ElementTree
from pathlib import Path

from parity.results import (
    RESULTS_ENV,
    ResultRow,
    ResultsWriter,
    load_results,
    read_results,
    session_results_path,
)

_ROOT = Path(__file__).resolve().parent.parent


def _row(**fields) -> ResultRow:
    base = {"suite": "property", "case_id": "b1-t8-s8", "model": "kernel",
            "legs": "flash-vs-oracle", "metric": "max_abs_err", "value": 1e-7,
            "tolerance": 1e-6, "passed": True}  # fmt: skip
    return ResultRow(**{**base, **fields})


def test_each_line_is_on_disk_before_the_writer_closes(tmp_path):
    """Crash safety: a reader sees every row already recorded while the writer is still open."""
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path)
    writer.write_header(attention_impl="x:y")
    writer.record(_row())
    headers, rows = read_results(path)
    assert len(headers) == 1 and headers[0]["versions"]["torch"] and rows[0]["value"] == 1e-7
    writer.close()


def test_kinds_come_back_apart_and_non_finite_values_survive(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.write_header()
        writer.record(_row(value=float("nan"), passed=False))
        writer.record(_row(value=float("inf"), tolerance=None, passed=False))
        writer.write_event("test_failed", test="t::x", when="call", message="E boom")
        writer.write_footer(exitstatus=1)
    loaded = load_results(path)
    assert (len(loaded.headers), len(loaded.rows), len(loaded.events), len(loaded.footers)) == (
        1, 2, 1, 1,
    )  # fmt: skip
    assert math.isnan(loaded.rows[0]["value"]) and loaded.rows[1]["value"] == math.inf
    assert loaded.rows[1]["tolerance"] is None and loaded.complete


def test_a_line_cut_by_a_crash_is_counted_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    with ResultsWriter(path) as writer:
        writer.write_header()
        for index in range(3):
            writer.record(_row(case_id=f"c{index}"))
    path.write_text(path.read_text()[:-25])  # the last row loses its end
    loaded = load_results(path)
    assert [row["case_id"] for row in loaded.rows] == ["c0", "c1"]
    assert loaded.unreadable_lines == 1 and not loaded.complete


_DEMO_TESTS = """
def test_small_error(record_result):
    record_result(suite="demo", case_id="c1", model="kernel", legs="flash-vs-oracle",
                  metric="max_abs_err", value=1e-7, tolerance=1e-6, passed=True)

def test_large_error(record_result):
    record_result(suite="demo", case_id="c2", model="kernel", legs="flash-vs-oracle",
                  metric="max_abs_err", value=1e-3, tolerance=1e-6, passed=False)
    assert False, "error 1e-3 over 1e-6"
"""


def test_fixture_streams_rows_failures_footer_and_junit_properties(tmp_path):
    """A real pytest session: rows, the failure event, the footer, JUnit properties."""
    (tmp_path / "test_demo.py").write_text(_DEMO_TESTS)
    results, junit = tmp_path / "results.jsonl", tmp_path / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
               "-c", str(_ROOT / "tox.ini"), "--rootdir", str(tmp_path),
               "--attention-impl=math:fsum",  # any callable: keeps torch out of this session
               f"--junitxml={junit}", str(tmp_path / "test_demo.py")]  # fmt: skip
    env = {**os.environ, RESULTS_ENV: str(results), "PYTHONPATH": str(_ROOT)}
    done = subprocess.run(
        command, env=env, cwd=_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]

    loaded = load_results(results)
    assert [row["case_id"] for row in loaded.rows] == ["c1", "c2"]
    assert loaded.headers[0]["attention_impl"] == "math:fsum"
    (event,) = loaded.events
    assert event["test"].endswith("test_demo.py::test_large_error")
    assert "error 1e-3 over 1e-6" in event["message"]
    (footer,) = loaded.footers
    assert (footer["exitstatus"], footer["passed"], footer["failed"]) == (1, 1, 1)

    tree = ElementTree.parse(junit)
    suite_props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert suite_props["attention_impl"] == "math:fsum" and "version.torch" in suite_props
    assert suite_props["c2:flash-vs-oracle.max_abs_err"] == "0.001"
    assert suite_props["c2:flash-vs-oracle.max_abs_err.tolerance"] == "1e-06"
    assert suite_props["c2:flash-vs-oracle.max_abs_err.passed"] == "False"


def test_a_plain_pytest_session_writes_a_fresh_file_of_its_own(tmp_path):
    """Without PARITY_RESULTS, two sessions write two files under reports/sessions/, no shared one."""
    (tmp_path / "test_demo.py").write_text(_DEMO_TESTS)
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
               "-c", str(_ROOT / "tox.ini"), "--rootdir", str(tmp_path),
               "--attention-impl=math:fsum", str(tmp_path / "test_demo.py")]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != RESULTS_ENV}
    env["PYTHONPATH"] = str(_ROOT)
    for _ in range(2):
        subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, timeout=120, check=False
        )
    sessions = sorted((tmp_path / "reports" / "sessions").glob("pytest-*.jsonl"))
    assert len(sessions) == 2 and not (tmp_path / "reports" / "results.jsonl").exists()
    for session in sessions:
        loaded = load_results(session)
        assert (len(loaded.headers), len(loaded.rows), len(loaded.footers)) == (1, 2, 1)


def test_session_results_path_is_the_environment_variable_when_set(tmp_path):
    """PARITY_RESULTS wins: parity.report and the gate runner choose their files with it."""
    assert session_results_path({RESULTS_ENV: str(tmp_path / "r.jsonl")}) == tmp_path / "r.jsonl"
    assert session_results_path({}).parent == Path("reports") / "sessions"


def test_a_new_report_run_keeps_the_previous_results_beside_it(tmp_path):
    """fresh_results_file moves an earlier reports/results.jsonl aside, it does not delete it."""
    from parity.report.runs import fresh_results_file

    path = tmp_path / "results.jsonl"
    path.write_text('{"header": true}\n')
    assert fresh_results_file(path) == path and not path.exists()
    assert (tmp_path / "results.previous.jsonl").read_text() == '{"header": true}\n'
