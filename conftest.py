"""Project-wide pytest configuration: hypothesis profiles, ``--attention-impl``.

Everything cross-cutting lives here so the property and parity suites share it.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import InvalidArgument

from parity.impl_loader import (
    ATTENTION_IMPL_ENV,
    AttentionImplError,
    attention_impl_spec,
    load_attention_impl,
)

# Hypothesis profiles, chosen by --hypothesis-profile or HYPOTHESIS_PROFILE.
# dev: quick local feedback. ci: derandomized so the gate gives the same result
# twice, with enough examples per property to find every broken kernel of
# property_tests/broken_kernels.py without its pinned examples (ci-unpinned).
# thorough: nightly, more examples, longer sequences and larger long cases.
# Every profile draws long cases (S in 513..2048, property_tests/strategies.py).
_COMMON = dict(
    deadline=None,  # CPU timing on a shared 2-core machine is not a property.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=20, **_COMMON)
# ci: 150 examples per property. `pytest property_tests --hypothesis-profile=ci`
# measured 151 s and 212 s on 2 shared cores with S <= 160 (teeth test with
# pins); 323 s on 2026-12-02 under heavier load (load average ~3) just before
# long cases; 562 s after, under load ~5.5, with long cases (one in 8, S up to
# 2048, strategies.CI_LONG_WORK_LIMIT), the unpinned teeth test (118 s) and
# ~125 s of tests others added that day (test_litert_standard 112 s,
# test_mutants_killed). The properties themselves took ~205 s of it. With long
# cases at 2**26 the teeth test alone took 601 s, hence the smaller ci limit.
_CI = dict(max_examples=150, derandomize=True, database=None, **_COMMON)
settings.register_profile("ci", **_CI)
# ci-unpinned: ci without the explicit phase, so the @example pins do not run
# and only the search can find a bug (property_tests/test_gate_has_teeth.py
# runs every broken kernel with it), and without shrinking: the teeth test asks
# whether the search finds a failing case, not for the smallest one, and
# shrinking a failure seen only at S > 512 reruns long cases many times.
_SEARCH_PHASES = (Phase.reuse, Phase.generate, Phase.target)
settings.register_profile("ci-unpinned", phases=_SEARCH_PHASES, **_CI)
settings.register_profile("thorough", max_examples=500, **_COMMON)
# Ours, plus hypothesis's own "default"; named in the error for an unknown one.
PROFILES = ("dev", "ci", "ci-unpinned", "thorough", "default")
_ENV_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
if _ENV_PROFILE in PROFILES:
    settings.load_profile(_ENV_PROFILE)  # An unknown one is a usage error in pytest_configure.


def _check_profile(name: str, source: str) -> None:
    """Raises pytest.UsageError (one line) for a hypothesis profile nobody registered."""
    try:
        settings.get_profile(name)
    except InvalidArgument:
        raise pytest.UsageError(
            f"{source} ({name!r}) is not a registered hypothesis profile; expected one of"
            f" {', '.join(PROFILES)} (conftest.py)"
        ) from None


def pytest_addoption(parser):
    parser.addoption(
        "--attention-impl",
        "--attention_impl",  # both spellings, as in every CLI (edge_flash.cli)
        default=None,
        help=(
            "attention function under test, as package.module:function with the contract of"
            f" edge_flash.flash_attention (env {ATTENTION_IMPL_ENV}; default"
            " edge_flash:flash_attention)"
        ),
    )


@pytest.hookimpl(tryfirst=True)  # Before hypothesis's plugin loads the profile.
def pytest_configure(config):
    profile = config.getoption("--hypothesis-profile", default=None)
    if profile:  # The option wins over the environment variable.
        _check_profile(profile, "--hypothesis-profile")
    else:
        _check_profile(_ENV_PROFILE, "HYPOTHESIS_PROFILE")
    spec = attention_impl_spec(config.getoption("--attention-impl"))
    try:
        config.attention_impl = load_attention_impl(spec)
    except AttentionImplError as error:
        raise pytest.UsageError(str(error)) from None
    config.attention_impl_spec = spec
    from parity import run_settings

    try:
        run_settings.apply_torch_threads()
        config.run_settings = run_settings.current().describe()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config):
    return [f"attention impl: {config.attention_impl_spec}", f"settings: {config.run_settings}"]


@pytest.fixture(scope="session")
def attention_impl(pytestconfig):
    """The attention function under test (from --attention-impl)."""
    return pytestconfig.attention_impl


@pytest.fixture(scope="session")
def attention_impl_spec_str(pytestconfig):
    """The ``package.module:function`` spec of the function under test."""
    return pytestconfig.attention_impl_spec


# The session's config, for hooks that are not given it (pytest_runtest_logreport).
_SESSION: dict = {}
# A failure's message in the results file: its last characters, where pytest puts
# the assertion and the error; the JUnit file keeps the whole traceback.
_FAILURE_MESSAGE_CHARS = 4000


def pytest_sessionstart(session):
    from parity.results import ResultsWriter, session_results_path

    # $PARITY_RESULTS, else a fresh file of this session's own (parity/results.py).
    session.config.results_writer = ResultsWriter(session_results_path())
    session.config.results_writer.write_header(
        attention_impl=session.config.attention_impl_spec,
        settings=session.config.run_settings,
        hypothesis_profile=settings.get_current_profile_name(),
        **_plugins_under_test(session.config),
    )
    session.config.results_outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    session.config.results_started = time.perf_counter()
    _SESSION["config"] = session.config


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
    writer = getattr(config, "results_writer", None)
    if writer is None:
        return
    outcomes = config.results_outcomes
    if report.failed:
        outcomes["failed"] += 1
        message = report.longreprtext[-_FAILURE_MESSAGE_CHARS:]
        writer.write_event("test_failed", test=report.nodeid, when=report.when, message=message)
    elif report.skipped:
        outcomes["skipped"] += 1
    elif report.when == "call":
        outcomes["passed"] += 1


def pytest_sessionfinish(session, exitstatus):
    writer = getattr(session.config, "results_writer", None)
    if writer is not None:
        writer.write_footer(
            exitstatus=int(exitstatus),
            testscollected=session.testscollected,
            duration_s=time.perf_counter() - session.config.results_started,
            finished=time.time(),
            **session.config.results_outcomes,
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
