"""Runs benchmark cases, each in a fresh child process, and records them as result rows.

No torch here: the parent only schedules children (conversion, PyTorch eager,
LiteRT) and writes rows (suite="bench") to a results file the report reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from parity.bench import convert
from parity.bench.cases import (
    BenchCase,
    available_bytes,
    estimated_peak_bytes,
    floor_bytes,
)
from parity.bench.method import METHOD
from parity.bench.procmem import MALLOC_ENV
from parity.results import ResultRow, ResultsWriter

# A case is skipped when its estimated peak exceeds this share of MemAvailable:
# the machine is shared, and swapping would make the latency meaningless.
_MEMORY_SHARE = 0.7
_CHILD_TIMEOUT_S = 1800.0  # the slowest case, torch flash eager at 8192, takes about a minute


class CaseError(RuntimeError):
    """A benchmark child failed; the message carries its last lines of output."""


def _run_child(module: str, args: list[str], timeout_s: float = _CHILD_TIMEOUT_S) -> dict:
    env = {**os.environ, **MALLOC_ENV}
    command = [sys.executable, "-m", module, *args]
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, env=env, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise CaseError(f"{module} took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:]) or "(no output)"
        raise CaseError(f"{module} exited with {done.returncode}: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_case(case: BenchCase, repeats: int, cache: Path | None = None) -> dict:
    """Measures one case in child processes; returns the child's measurements plus context.

    Raises:
      CaseError, convert.ConversionError: a child failed.
    """
    if case.target != "attention":
        from parity.bench import model_cases

        return model_cases.measure_model_case(case, repeats, cache, _run_child)
    if case.runtime == "torch":
        return _run_child("parity.bench._torch_child", [json.dumps(case.to_dict()), str(repeats)])
    path, conversion = convert.ensure_converted(case, cache)
    job = {"model_path": str(path), "signature": "serving_default", "repeats": repeats}
    result = _run_child("parity.bench._litert_child", [json.dumps(job)])
    if result["torch_loaded"]:
        raise CaseError(f"{case.case_id}: torch was loaded in the LiteRT child")
    return {**result, "conversion": conversion, "model_path": str(path)}


def case_rows(case: BenchCase, outcome: dict) -> list[ResultRow]:
    """Result rows of one case: peak_bytes and latency_ms (and activation_bytes if any).

    A case that was skipped or failed gives one row with value NaN and
    passed=False; ``details`` (JSON) says why. Measurements have no tolerance:
    targets are judged by the report, not here.
    """
    status = outcome.get("status", "measured")
    details = {
        "case": case.to_dict(),
        "status": status,
        "floor_bytes": floor_bytes(case.shape, case.seq_q, case.seq_kv),
        **{key: value for key, value in outcome.items() if key != "status"},
    }
    common = dict(
        suite="bench",
        case_id=case.case_id,
        model="attention" if case.target == "attention" else "tinyllama-shaped-2layer",
        legs=f"{case.runtime}/{case.target}/{case.impl_label}",
        tolerance=None,
        shapes=f"t{case.seq_q}-s{case.seq_kv}-{case.shape.tag()}",
        seed=0,
        details=json.dumps(details, sort_keys=True),
    )
    if status != "measured":
        return [ResultRow(metric="peak_bytes", value=float("nan"), passed=False, **common)]
    metrics = [("peak_bytes", outcome["peak_bytes"]), ("latency_ms", outcome["median_ms"])]
    if "activation_bytes" in outcome:
        metrics.append(("activation_bytes", outcome["activation_bytes"]))
    return [ResultRow(metric=m, value=float(v), passed=True, **common) for m, v in metrics]


def run_case(case: BenchCase, repeats: int, cache: Path | None = None) -> dict:
    """Measures one case, or says why not: {"status": "measured"|"skipped"|"error", ...}."""
    estimate, available = estimated_peak_bytes(case), available_bytes()
    if estimate > _MEMORY_SHARE * available:
        reason = (
            f"estimated peak {estimate / 1e9:.1f} GB exceeds {_MEMORY_SHARE:.0%} of the"
            f" {available / 1e9:.1f} GB available"
        )
        return {"status": "skipped", "reason": reason}
    try:
        return {"status": "measured", **measure_case(case, repeats, cache)}
    except (CaseError, convert.ConversionError) as error:
        return {"status": "error", "reason": str(error)}


def run_benchmarks(
    cases: list[BenchCase],
    results_path: Path,
    repeats: int,
    cache: Path | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Runs every case, streaming its rows to ``results_path``; returns the row dicts."""
    writer = ResultsWriter(results_path)
    writer.write_header(suite="bench", method=METHOD, repeats=repeats)
    rows, start = [], time.perf_counter()
    try:
        for index, case in enumerate(cases, start=1):
            progress(f"[{index}/{len(cases)}] {case.case_id} ...")
            outcome = run_case(case, repeats, cache)
            for row in case_rows(case, outcome):
                writer.record(row)
                rows.append(json.loads(row.to_json()))
            progress(f"[{index}/{len(cases)}] {case.case_id}: {_outcome_line(outcome)}")
        errors = sum(1 for row in rows if '"status": "error"' in row["details"])
        writer.write_footer(
            suite="bench",
            exitstatus=1 if errors else 0,
            cases=len(cases),
            errors=errors,
            duration_s=time.perf_counter() - start,
            finished=time.time(),
        )
    finally:
        writer.close()
    return rows


def _outcome_line(outcome: dict) -> str:
    if outcome["status"] != "measured":
        return f"{outcome['status']}: {outcome['reason']}"
    return f"peak {outcome['peak_bytes'] / 1e6:.1f} MB, median {outcome['median_ms']:.1f} ms"
