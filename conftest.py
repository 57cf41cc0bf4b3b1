"""Project-wide pytest configuration: hypothesis profiles, ``--attention-impl``, results.

Everything cross-cutting lives here so the property and parity suites share it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import InvalidArgument

from parity.impl_loader import (
    ATTENTION_IMPL_ENV,
    AttentionImplError,
    attention_impl_spec,
    load_attention_impl,
)
from property_tests.example_database import EXAMPLE_DB_ENV

# The results file of every session, serial or under pytest-xdist.
pytest_plugins = ["parity.results_plugin"]

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
_THOROUGH = dict(max_examples=500, **_COMMON)
settings.register_profile("thorough", **_THOROUGH)
# The ci and thorough profiles keep the failures they find
# (property_tests/example_database.py): registered again in pytest_configure,
# once the attention impl that scopes the database is known. ci then trades
# derandomize=True (which hypothesis forbids with a database) for the same seed
# per test, given in pytest_runtest_call; ci-unpinned stays database-free, so the
# teeth test's search is never handed a failure a previous run found.
SEEDED_PROFILES = ("ci",)
KEEPING_PROFILES = ("ci", "thorough")
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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns -n into --dist load
def pytest_cmdline_main(config):
    """With ``-n`` and no ``--dist``, schedules by ``xdist_group``: a zoo model's cases
    (parity/cases.py) share one worker, which builds that model's chain once."""
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, on the controller
def pytest_configure_node(node):
    """Tells each worker whether the controller schedules by group (``parity.xdist_groups``)."""
    from parity.xdist_groups import tell_worker_the_schedule

    tell_worker_the_schedule(node)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, a module's tests that share a module- or class-scoped
    fixture become one group (``parity.xdist_groups``)."""
    from parity.xdist_groups import group_tests_sharing_module_fixtures, scheduled_by_group

    if scheduled_by_group(config):
        group_tests_sharing_module_fixtures(items)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker sends the ids it collected
def pytest_collection_finish(session):
    """Under ``--dist loadgroup``, gives each grouped test the ``@group`` id suffix the
    controller schedules by, where pytest-xdist does not (``parity.xdist_groups``)."""
    from parity.xdist_groups import name_groups_in_node_ids, scheduled_by_group

    if scheduled_by_group(session.config):
        name_groups_in_node_ids(session.items)


def _share_cores_between_workers(threads_env: str) -> None:
    """In a pytest-xdist worker with no thread count given, torch gets its share of the
    cores (cores // workers, at least 1): N workers of 2 threads each on 2 cores spend
    their time waiting for each other. Thread counts change rounding, not results (the
    false-alarm study runs 1 and 2 threads), and the worker's children inherit it."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and threads_env not in os.environ:
        os.environ[threads_env] = str(max(1, (os.cpu_count() or 1) // int(workers)))


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
    config.example_database = _keep_failures(config, spec)
    from parity import run_settings

    _share_cores_between_workers(run_settings.TORCH_THREADS_ENV)
    try:
        run_settings.apply_torch_threads()
        config.run_settings = run_settings.current().describe()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def _keep_failures(config, spec: str):
    """Registers ci and thorough with the kept example database; returns it (None: off)."""
    from property_tests.example_database import example_database_directory
    from property_tests.failures_database import FailuresDatabase

    directory = example_database_directory(config.rootpath)
    if directory is None:
        return None
    database = FailuresDatabase(directory, scope=spec)
    settings.register_profile("ci", **{**_CI, "derandomize": False, "database": database})
    settings.register_profile("thorough", **{**_THOROUGH, "database": database})
    current = settings.get_current_profile_name()
    if current in KEEPING_PROFILES:
        settings.load_profile(current)  # loaded at import, before the database existed
    return database


@pytest.hookimpl(hookwrapper=True, trylast=True)  # inside hypothesis's own wrapper
def pytest_runtest_call(item):
    """Under a seeded profile, runs a hypothesis test with derandomize's seed for it."""
    from property_tests.failures_database import derandomized_seed

    function = getattr(item, "obj", None)
    test = getattr(function, "__func__", function)  # a method's underlying function
    seeded = (
        settings.get_current_profile_name() in SEEDED_PROFILES
        and item.config.example_database is not None
        and hasattr(test, "hypothesis")
        and getattr(test, "_hypothesis_internal_use_seed", None) is None
    )
    if seeded:
        test._hypothesis_internal_use_seed = derandomized_seed(test)
    try:
        yield
    finally:
        if seeded:
            test._hypothesis_internal_use_seed = None


def pytest_report_header(config):
    database = config.example_database
    kept = (
        f"kept failures: {database.directory} ({database.kept_count()} examples)"
        if database
        else f"kept failures: off ({EXAMPLE_DB_ENV}=none)"
    )
    return [
        f"attention impl: {config.attention_impl_spec}",
        f"settings: {config.run_settings}",
        kept,
    ]


@pytest.fixture(scope="session")
def attention_impl(pytestconfig):
    """The attention function under test (from --attention-impl)."""
    return pytestconfig.attention_impl


@pytest.fixture(scope="session")
def attention_impl_spec_str(pytestconfig):
    """The ``package.module:function`` spec of the function under test."""
    return pytestconfig.attention_impl_spec
