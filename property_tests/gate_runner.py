"""Runs the property gate several times in one process, for the tests of the gate itself.

    python -m property_tests.gate_runner OUT_DIR PLAN_JSON

PLAN_JSON is a list of runs, each ``{"name": str, "args": [pytest arguments],
"env": {variable: value}}``. Each run is ``pytest.main(args + ["-q", "-p",
"no:cacheprovider"])`` (the plug-in path a user takes) with ``env`` set for
that run only, its results file at ``OUT_DIR/<name>.jsonl`` (``PARITY_RESULTS``)
and its output at ``OUT_DIR/<name>.txt``; at the end ``OUT_DIR/summary.json``
maps each name to pytest's exit code. One process for every run saves the ~6 s
import of torch, tensorflow and litert-torch each time; each run still gets a
fresh pytest config, plug-in load, results file and import of the test modules.
(property_tests/teeth_runner.py does the same for one fixed suite with ``-x``
and no environment.)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

from parity.results import RESULTS_ENV
from property_tests.example_database import EXAMPLE_DB_ENV


@contextlib.contextmanager
def _environment(changes: dict):
    """Sets ``changes`` in os.environ for the block, then restores what was there."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _forget_test_modules() -> None:
    """Drops the property test modules from sys.modules, so that the next run imports them afresh.

    A hypothesis ``settings`` object copies the profile loaded when it is made
    (property_tests/settings.py's GATE_SETTINGS, at import): without a fresh
    import a run under the dev profile keeps the first run's ci example counts.
    """
    for name in list(sys.modules):
        if name == "property_tests.settings" or name.startswith("property_tests.test_"):
            del sys.modules[name]


def run_one(run: dict, out_dir: Path) -> int:
    """Runs one entry of the plan; returns pytest's exit code."""
    _forget_test_modules()
    output = out_dir / f"{run['name']}.txt"
    env = {**run.get("env", {}), RESULTS_ENV: str(out_dir / f"{run['name']}.jsonl")}
    args = [*run["args"], "-q", "-p", "no:cacheprovider"]
    with _environment(env), output.open("w", encoding="utf-8") as sink:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return int(pytest.main(args))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m property_tests.gate_runner OUT_DIR PLAN_JSON", file=sys.stderr)
        return 2
    # Runs of other kernels (or mutants under edge_flash's name) keep no failures:
    # each run stays derandomized and the project's kept database is not touched.
    os.environ[EXAMPLE_DB_ENV] = "none"
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for run in json.loads(Path(argv[1]).read_text(encoding="utf-8")):
        summary[run["name"]] = run_one(run, out_dir)
        print(f"{run['name']}: exit {summary[run['name']]}", flush=True)  # progress
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
