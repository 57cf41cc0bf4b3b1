"""The gate under pytest-xdist: one results file per session, one conversion per model.

Runs a real session, ``pytest -n 2 --dist each`` on a tiny-model TFLite check, in
a subprocess: with ``--dist each`` both workers run every test, so both need
the same conversion at the same time. (One check, of the standard file: a second
variant would only add a conversion of the same kind.)
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
TESTS = [f"{CASE}[tiny-random-llama-tflite_std-ids-1]"]
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
    """Both workers need the file at once: it appears once in the conversion log."""
    _, log = session
    files = [entry["file"] for entry in log]
    assert len(files) == 1 and files[0].startswith("tiny-random-llama-std-"), log


SHARING = """
import json, pathlib, pytest

def _log(request, kind, value):
    worker = request.config.workerinput["workerid"]
    with open(pathlib.Path(__file__).with_name("schedule.jsonl"), "a") as log:
        log.write(json.dumps([kind, value, worker]) + "\\n")

@pytest.fixture(scope="module")
def shared(request):
    _log(request, "setup", "")

@pytest.mark.parametrize("i", range(6))
def test_sharing(shared, i, request):
    _log(request, "test", request.node.nodeid)
"""
ALONE = """
import json, pathlib, pytest

@pytest.mark.parametrize("i", range(6))
def test_alone(i, request):
    worker = request.config.workerinput["workerid"]
    with open(pathlib.Path(__file__).with_name("schedule.jsonl"), "a") as log:
        log.write(json.dumps(["test", request.node.nodeid, worker]) + "\\n")
"""


def test_tests_sharing_a_module_fixture_run_on_one_worker(tmp_path):
    """Under ``--dist loadgroup`` (the gate's with ``-n``), a module's tests that share a
    module-scoped fixture are one group (one set-up, one worker, the group in the node id
    the controller schedules by: pytest-xdist alone loses it under pytest 9.2,
    parity.xdist_groups); tests without one stay ungrouped.
    (``--dist`` is given: loaded with ``-p``, the root conftest's default for ``-n``
    would run after pytest-xdist's own.)"""
    (tmp_path / "test_sharing.py").write_text(SHARING, encoding="utf-8")
    (tmp_path / "test_alone.py").write_text(ALONE, encoding="utf-8")
    log = tmp_path / "schedule.jsonl"
    env = {**os.environ, "PARITY_RESULTS": str(tmp_path / "r.jsonl")}
    command = [sys.executable, "-m", "pytest", "-c", "tox.ini", "--rootdir", ".", "-p", "conftest",
               str(tmp_path), "-n", str(WORKERS), "--dist", "loadgroup", "-q",
               "-p", "no:cacheprovider"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    sharing = [e for e in entries if e[0] == "test" and "test_sharing" in e[1]]
    alone = [e for e in entries if e[0] == "test" and "test_alone" in e[1]]
    assert len(sharing) == len(alone) == 6, entries
    assert [e[0] for e in entries].count("setup") == 1, entries
    assert len({worker for _, _, worker in sharing}) == 1, sharing
    assert all(nodeid.endswith("@" + nodeid.split("::")[0]) for _, nodeid, _ in sharing)
    assert not any("@" in nodeid for _, nodeid, _ in alone), alone


def test_a_bare_n_schedules_a_zoo_models_cases_as_its_group(tmp_path):
    """``pytest -n 2`` with no ``--dist`` (``make test``'s): each worker names the zoo
    model's group in the node ids it reports, which is what the controller schedules
    by; without it both workers would build the same chain (parity.xdist_groups)."""
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "pytest", "parity/test_chain_logits.py", "-k",
               "tiny-random-llama-reauthored_std and not chunked", "-n", str(WORKERS), "-q",
               "-p", "no:cacheprovider"]  # fmt: skip
    env = {**os.environ, "PARITY_RESULTS": str(results)}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tests = {row["test"] for row in load_results(results).rows}
    assert len(tests) >= 3, tests
    assert all(test.endswith("]@tiny-random-llama") for test in tests), tests
