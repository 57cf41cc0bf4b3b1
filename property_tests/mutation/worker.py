"""Runs the property gate against mutants, one after another, in this one process.

    python -m property_tests.mutation.worker OUT_DIR FIRST ID [ID ...]

Started by ``python -m property_tests.mutation`` (which enforces the
per-mutant timeout by killing this process and starting a new one). For each
id (``original`` is the unmutated kernel) it compiles the mutant of
edge_flash/kernel.py into a module registered in ``sys.modules`` as
``property_tests.mutation.live.m<n>`` (n counts from FIRST), runs the gate on
``--attention-impl=<that module>:flash_attention`` through ``pytest.main``
(pytest's output to ``OUT_DIR/m<n>.txt``) and prints protocol lines on stdout:
``MUTATION-START <id>`` and ``MUTATION-RESULT <json>``.

The gate is ``property_tests.teeth_runner.SUITE`` plus
property_tests/test_mutants_killed.py (``SUITE``) under the ci profile with
``-x``, except that hypothesis does not shrink (``phases`` without
``shrink``): the same examples are tried in the same order, and a failure is
a kill whether or not it is minimal; shrinking would only cost minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import types
from pathlib import Path

import pytest

from property_tests import teeth_runner
from property_tests.example_database import EXAMPLE_DB_ENV
from property_tests.mutation.mutator import find_mutant, generate_mutants

ROOT = Path(__file__).resolve().parents[2]
KERNEL_PATH = ROOT / "edge_flash" / "kernel.py"
ORIGINAL = "original"
LIVE_PACKAGE = "property_tests.mutation.live"
START, RESULT, READY = "MUTATION-START", "MUTATION-RESULT", "MUTATION-READY"
PROFILE = "ci"
# The gate's suite, and the properties added for mutants that survived it
# (property_tests/test_mutants_killed.py), until they join the gate's own files.
SUITE = (*teeth_runner.SUITE, "property_tests/test_mutants_killed.py")
_NO_SHRINK_PROFILE = "mutation-ci-no-shrink"
# A failure's message in the result: its first characters, where the assertion is.
_MESSAGE_CHARS = 600


def load_module(name: str, source: str, label: str) -> types.ModuleType:
    """``source`` executed as a module named ``name``, registered in ``sys.modules``.

    ``label`` goes into tracebacks as the file name. Raises whatever executing
    the module raises.
    """
    if LIVE_PACKAGE not in sys.modules:
        package = types.ModuleType(LIVE_PACKAGE, "In-memory mutants of edge_flash/kernel.py.")
        package.__path__ = []  # a package, so that `live.m<n>` resolves under it
        sys.modules[LIVE_PACKAGE] = package
    module = types.ModuleType(name)
    module.__file__ = label
    sys.modules[name] = module
    exec(compile(source, label, "exec"), module.__dict__)  # noqa: S102 - our own mutant
    return module


class _Outcome:
    """pytest plug-in: the first failing test and its message; drops shrinking."""

    def __init__(self, profile: str):
        self.profile = profile
        self.killer = None
        self.message = ""

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config):
        from hypothesis import Phase, settings

        # After the root conftest registered the profiles and hypothesis loaded one.
        phases = tuple(p for p in Phase if p is not Phase.shrink)
        parent = settings.get_profile(self.profile)
        settings.register_profile(_NO_SHRINK_PROFILE, parent=parent, phases=phases)
        settings.load_profile(_NO_SHRINK_PROFILE)

    def pytest_runtest_logreport(self, report):
        if report.failed and self.killer is None:
            self.killer = report.nodeid
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else str(report.longrepr)
            self.message = text[:_MESSAGE_CHARS]


def run_gate(spec: str, output: Path, tests=SUITE, profile: str = PROFILE) -> dict:
    """The gate against ``spec``: {"exit_code", "killer", "message"}; pytest output to ``output``."""
    os.environ["PARITY_RESULTS"] = str(output.with_suffix(".jsonl"))
    args = [*tests, f"--attention-impl={spec}", f"--hypothesis-profile={profile}", "-x", "-q"]
    args += ["-p", "no:cacheprovider"]
    outcome = _Outcome(profile)
    with (
        output.open("w", encoding="utf-8") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        exit_code = int(pytest.main(args, plugins=[outcome]))
    return {"exit_code": exit_code, "killer": outcome.killer, "message": outcome.message}


def status_of(exit_code: int) -> str:
    """pytest's exit code as a mutant's status: 0 survived, 1 killed, else error."""
    return {0: "survived", 1: "killed"}.get(exit_code, "error")


def run_one(number: int, mutant_id: str, source: str, out_dir: Path) -> dict:
    """Loads the mutant (or the original), runs the gate, returns its result record."""
    name = f"{LIVE_PACKAGE}.m{number}"
    started = time.perf_counter()
    try:
        load_module(name, source, f"<mutant {mutant_id} of edge_flash/kernel.py>")
    except Exception as error:  # noqa: BLE001 - a mutant that cannot load is killed at import
        return {"id": mutant_id, "status": "killed", "killer": "<import>",
                "message": f"{type(error).__name__}: {error}"[:_MESSAGE_CHARS],
                "seconds": time.perf_counter() - started}  # fmt: skip
    run = run_gate(f"{name}:flash_attention", out_dir / f"m{number}.txt")
    return {"id": mutant_id, "status": status_of(run["exit_code"]), "killer": run["killer"],
            "message": run["message"], "exit_code": run["exit_code"],
            "seconds": time.perf_counter() - started}  # fmt: skip


def _emit(tag: str, payload: str) -> None:
    print(f"{tag} {payload}", file=sys.__stdout__, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        print(
            "usage: python -m property_tests.mutation.worker OUT_DIR FIRST ID [ID ...]",
            file=sys.stderr,
        )
        return 2
    # Runs of other kernels (or mutants under edge_flash's name) keep no failures:
    # each run stays derandomized and the project's kept database is not touched.
    os.environ[EXAMPLE_DB_ENV] = "none"
    out_dir, first = Path(argv[0]), int(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    original = KERNEL_PATH.read_text(encoding="utf-8")
    mutants = generate_mutants(original)
    # The slow imports before the first timer starts. Not hypothesis nor anything
    # importing it: pytest would warn that it cannot rewrite an imported plug-in,
    # and the suite turns warnings into errors.
    import litert_torch.generative.layers.scaled_dot_product_attention  # noqa: F401

    _emit(READY, str(os.getpid()))
    for number, mutant_id in enumerate(argv[2:], start=first):
        mutant = find_mutant(mutants, mutant_id)
        if mutant is None and mutant_id != ORIGINAL:
            print(f"worker: no mutant {mutant_id!r} of {KERNEL_PATH}", file=sys.stderr)
            return 2
        _emit(START, mutant_id)
        source = original if mutant is None else mutant.source
        _emit(RESULT, json.dumps(run_one(number, mutant_id, source, out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
