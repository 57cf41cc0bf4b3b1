"""Runs what the report shows: the test suites (pytest) and the benchmarks, as subprocesses.

Both write into one fresh results file; pytest also writes its JUnit XML beside it.
Their output streams to the terminal, so a long run shows its progress.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from parity.results import RESULTS_ENV

SUITES = ("property_tests", "parity")
CI_PROFILE = "ci"


def pytest_command(junit_path: Path, extra: list[str] | None = None) -> list[str]:
    """The gate's pytest command (the Makefile's ``make test``, in one process unless
    ``extra`` holds ``-n``), with JUnit output."""
    return [
        sys.executable, "-m", "pytest", *SUITES, f"--hypothesis-profile={CI_PROFILE}",
        f"--junitxml={junit_path}", *(extra or []),
    ]  # fmt: skip


def bench_command(results_path: Path, full: bool) -> list[str]:
    """The benchmark command: ``--quick`` unless ``full``."""
    command = [sys.executable, "-m", "parity.bench", "--results", str(results_path)]
    return command if full else [*command, "--quick"]


def detection_command(results_path: Path) -> list[str]:
    """Detection limits of the tiny model's PyTorch legs (``parity.detection_limits``)."""
    return [
        sys.executable, "-m", "parity.detection_limits", "--model", "tiny-random-llama",
        "--steps", "6", "--results", str(results_path),
    ]  # fmt: skip


def fresh_results_file(path: Path) -> Path:
    """Makes ``path`` free for a new run; returns it.

    An earlier file there is kept as ``<stem>.previous<suffix>`` beside it (replacing
    the one kept before), so a new report never deletes the last run's results.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.replace(path.with_name(f"{path.stem}.previous{path.suffix}"))
    return path


def run_streaming(command: list[str], results_path: Path) -> int:
    """Runs ``command`` with ``PARITY_RESULTS=results_path``; its output goes to ours."""
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, RESULTS_ENV: str(results_path), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, env=env, check=False).returncode
