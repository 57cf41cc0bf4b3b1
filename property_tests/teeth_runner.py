"""Runs the property suite once per attention function, in one process, for the teeth test.

    python -m property_tests.teeth_runner OUT_DIR SPEC [SPEC ...]

For each ``package.module:function`` SPEC it runs ``pytest <suite>
--attention-impl=SPEC --hypothesis-profile=ci -x -q`` through ``pytest.main``
(the plug-in path a user takes), writes that run's output to
``OUT_DIR/<n>.txt`` and finally ``OUT_DIR/summary.json``:
``{SPEC: {"exit_code": int, "output": path}}``. One process instead of one per
SPEC saves the ~6 s import of torch, tensorflow and litert-torch each time;
every run still gets a fresh pytest config, plug-in load and results file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

SUITE = ("property_tests/test_matches_oracle.py", "property_tests/test_metamorphic.py")


def run_one(spec: str, output: Path) -> int:
    """Runs the suite against ``spec``, output to ``output``; returns pytest's exit code."""
    os.environ["PARITY_RESULTS"] = str(output.with_suffix(".jsonl"))
    args = [*SUITE, f"--attention-impl={spec}", "--hypothesis-profile=ci", "-x", "-q"]
    args += ["-p", "no:cacheprovider"]
    with output.open("w", encoding="utf-8") as sink:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return int(pytest.main(args))


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(
            "usage: python -m property_tests.teeth_runner OUT_DIR SPEC [SPEC ...]", file=sys.stderr
        )
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for number, spec in enumerate(argv[1:]):
        output = out_dir / f"{number}.txt"
        exit_code = run_one(spec, output)
        summary[spec] = {"exit_code": exit_code, "output": str(output)}
        print(f"{spec}: exit {exit_code}", flush=True)  # progress
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
