"""The pytest plugin that writes a session's results file, serial or under pytest-xdist.

Loaded by the root conftest (``pytest_plugins``). One session, however many
workers, writes one file (``parity.results.session_results_path``):

- the controller (the only process of a serial run) writes the session header,
  one ``test_failed`` event per failing test and the footer (counts, exit
  status, number of workers). Under xdist every worker's test reports reach the
  controller's ``pytest_runtest_logreport``, so it counts them all, once;
- every process that runs tests (the controller of a serial run, else each
  worker) streams its rows (``record_result``) into the same file as they are
  made. ``ResultsWriter`` appends each line under an exclusive lock, so the
  workers' lines never interleave. The controller hands its file's path to the
  workers (``pytest_configure_node``), since a worker's own default would be a
  fresh file of its own.

A worker killed mid-run loses no row it wrote; a session with a header and no
footer reads as interrupted in the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

# The session's config, for hooks that are not given it (pytest_runtest_logreport).
_SESSION: dict = {}
# A failure's message in the results file: its last characters, where pytest puts
# the assertion and the error; the JUnit file keeps the whole traceback.
_FAILURE_MESSAGE_CHARS = 4000
_WORKER_RESULTS_KEY = "parity_results_path"


def is_xdist_worker(config) -> bool:
    """True in a pytest-xdist worker process (it runs tests; the controller only schedules)."""
    return hasattr(config, "workerinput")


def pytest_configure(config):
    from parity.results import session_results_path

    if is_xdist_worker(config):
        config.results_path = Path(config.workerinput[_WORKER_RESULTS_KEY])
    else:
        config.results_path = session_results_path()
    config.results_workers = 0


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
def pytest_configure_node(node):
    """Hands the controller's results file to each worker it starts."""
    node.workerinput[_WORKER_RESULTS_KEY] = str(node.config.results_path)
    node.config.results_workers += 1


def pytest_sessionstart(session):
    from hypothesis import settings

    from parity.results import ResultsWriter

    config = session.config
    config.results_writer = ResultsWriter(config.results_path)
    _SESSION["config"] = config
    if is_xdist_worker(config):
        return  # rows only: the controller writes the header, events and footer
    config.results_writer.write_header(
        attention_impl=config.attention_impl_spec,
        settings=config.run_settings,
        hypothesis_profile=settings.get_current_profile_name(),
        **_plugins_under_test(config),
    )
    config.results_outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    config.results_started = time.perf_counter()


def _plugins_under_test(config) -> dict:
    """--model-builder and --tflite (parity/conftest.py), when given, for the session header."""
    plugins = {}
    if getattr(config, "model_builder", None) is not None:
        plugins["model_builder"] = config.model_builder.spec
    if getattr(config, "user_tflite", None) is not None:
        plugins["tflite"] = str(config.user_tflite[0].path)
    return plugins


def pytest_runtest_logreport(report):
    """Counts outcomes and streams each failure (with its message) to the results file."""
    config = _SESSION.get("config")
    if config is None or is_xdist_worker(config) or not hasattr(config, "results_outcomes"):
        return
    outcomes = config.results_outcomes
    if report.failed:
        outcomes["failed"] += 1
        message = report.longreprtext[-_FAILURE_MESSAGE_CHARS:]
        config.results_writer.write_event(
            "test_failed", test=report.nodeid, when=report.when, message=message
        )
    elif report.skipped:
        outcomes["skipped"] += 1
    elif report.when == "call":
        outcomes["passed"] += 1


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    writer = getattr(config, "results_writer", None)
    if writer is None:
        return
    if not is_xdist_worker(config):
        writer.write_footer(
            exitstatus=int(exitstatus),
            testscollected=session.testscollected,
            duration_s=time.perf_counter() - config.results_started,
            finished=time.time(),
            workers=config.results_workers,
            **config.results_outcomes,
        )
    writer.close()


@pytest.fixture(scope="session", autouse=True)
def _junit_suite_properties(record_testsuite_property, pytestconfig):
    """Package versions and the attention impl, as JUnit <testsuite> properties."""
    from parity.results import package_versions

    record_testsuite_property("attention_impl", pytestconfig.attention_impl_spec)
    for name, version in package_versions().items():
        record_testsuite_property(f"version.{name}", version)


@pytest.fixture
def record_result(request):
    """Records one comparison row: ``record_result(suite=..., case_id=..., ...)``.

    The row is streamed to the results file (``PARITY_RESULTS``, default a fresh
    reports/sessions/pytest-<time>-<pid>.jsonl per session) and its key numbers
    become JUnit properties of the test, named ``<case_id>:<legs>.<metric>`` (value, ``.tolerance``, ``.passed``).
    """
    from parity.results import ResultRow

    def _record(**fields):
        row = ResultRow(test=request.node.nodeid, **fields)
        request.config.results_writer.record(row)
        prefix = f"{row.case_id}:{row.legs}.{row.metric}"
        request.node.user_properties.append((prefix, row.value))
        request.node.user_properties.append((f"{prefix}.tolerance", row.tolerance))
        request.node.user_properties.append((f"{prefix}.passed", row.passed))
        return row

    return _record
