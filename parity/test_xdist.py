"""The gate under pytest-xdist: one results file per session, one conversion per model.

Runs a real session, ``pytest -n 2 --dist each`` on tiny-model TFLite checks, in
a subprocess: with ``--dist each`` both workers run every test, so both need
the same conversion at the same time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parity.chain import CONVERSION_LOG
from parity.results import load_results

ROOT = Path(__file__).resolve().parents[1]
CASE = "parity/test_chain_logits.py::test_prefill_logits_match_oracle_at_every_position"
TESTS = [
    f"{CASE}[tiny-random-llama-tflite_std-ids-1]",
    f"{CASE}[tiny-random-llama-tflite_flash-ids-1]",
]
WORKERS = 2


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The results file and the conversion log of one ``-n 2 --dist each`` session."""
    work = tmp_path_factory.mktemp("xdist")
    results, cache = work / "results.jsonl", work / "tflite"
    env = {**os.environ, "PARITY_RESULTS": str(results), "PARITY_TFLITE_CACHE": str(cache)}
    command = [sys.executable, "-m", "pytest", *TESTS, "-n", str(WORKERS), "--dist", "each",
               "-p", "no:cacheprovider", "-q"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = [json.loads(line) for line in (cache / CONVERSION_LOG).read_text().splitlines()]
    return load_results(results), log


@pytest.mark.tflite
def test_a_parallel_session_writes_one_header_and_one_footer(session):
    """The controller writes the header and the footer; the footer counts every worker's tests."""
    results, _ = session
    (header,) = results.headers
    (footer,) = results.footers
    assert header["attention_impl"] == "edge_flash:flash_attention"
    assert footer["workers"] == WORKERS and footer["exitstatus"] == 0
    assert footer["passed"] == len(TESTS) * WORKERS and footer["failed"] == 0


@pytest.mark.tflite
def test_every_worker_streams_its_rows_into_the_one_file(session):
    """Each test's rows come once from each worker, whole lines, into the session's file."""
    results, _ = session
    assert results.unreadable_lines == 0
    for test in TESTS:
        rows = [row for row in results.rows if row["test"] == test]
        assert rows, f"no rows of {test}"
        assert len(rows) % WORKERS == 0, f"{len(rows)} rows of {test} from {WORKERS} workers"


@pytest.mark.tflite
def test_workers_needing_the_same_model_convert_it_once(session):
    """Both workers need each variant at once: each file appears once in the conversion log."""
    _, log = session
    files = [entry["file"] for entry in log]
    assert len(files) == len(set(files)) == len(TESTS), log
    assert {name.split("-")[-2] for name in files} == {"std", "flash"}
