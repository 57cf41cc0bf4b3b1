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

from parity.bench import convert, differences
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


def _run_child(
    module: str, args: list[str], timeout_s: float = _CHILD_TIMEOUT_S, malloc_env: bool = True
) -> dict:
    env = {**os.environ, **(MALLOC_ENV if malloc_env else {})}
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


_LATENCY_KEYS = ("samples_ms", "median_ms", "median_cpu_ms")


def _run_twice(module: str, args: list[str]) -> dict:
    """Memory from a child with MALLOC_MMAP_THRESHOLD_ set, latency from one without.

    The threshold makes every buffer a fresh mmap, so each allocation pays page
    faults: measured 4x on eager flash at T=512 (504 vs 122 ms). Applications run
    with glibc's default, so latency comes from a second child with the default.
    """
    memory = _run_child(module, args)
    latency = _run_child(module, args, malloc_env=False)
    merged = {**memory, **{key: latency[key] for key in _LATENCY_KEYS}}
    merged["median_ms_with_mmap_threshold"] = memory["median_ms"]
    return merged


def measure_case(
    case: BenchCase, repeats: int, cache: Path | None = None, save_output: Path | None = None
) -> dict:
    """Measures one case in child processes; returns the child's measurements plus context.

    ``save_output``: where the child saves the output (.npy), attention cases only.

    Raises:
      CaseError, convert.ConversionError: a child failed.
    """
    if case.target != "attention":
        from parity.bench import model_cases

        return model_cases.measure_model_case(case, repeats, cache, _run_twice)
    saved = [str(save_output)] if save_output else []
    if case.runtime == "torch":
        args = [json.dumps(case.to_dict()), str(repeats), *saved]
        return _run_twice("parity.bench._torch_child", args)
    path, conversion = convert.ensure_converted(case, cache)
    job = {"model_path": str(path), "signature": "serving_default", "repeats": repeats}
    job["save_output"] = saved[0] if saved else ""
    job["xnnpack"] = case.xnnpack
    result = _run_twice("parity.bench._litert_child", [json.dumps(job)])
    if result["torch_loaded"]:
        raise CaseError(f"{case.case_id}: torch was loaded in the LiteRT child")
    return {**result, "conversion": conversion, "model_path": str(path)}


def _common_fields(case: BenchCase, outcome: dict) -> dict:
    details = {
        "case": case.to_dict(),
        "status": outcome.get("status", "measured"),
        "floor_bytes": floor_bytes(case.shape, case.seq_q, case.seq_kv),
        **{key: value for key, value in outcome.items() if key != "status"},
    }
    return {
        "suite": "bench",
        "case_id": case.case_id,
        "model": "attention" if case.target == "attention" else "tinyllama-shaped-2layer",
        "legs": f"{case.runtime}/{case.target}/{case.impl_label}",
        "tolerance": None,  # measurements: the report judges targets and claims
        "shapes": f"t{case.seq_q}-s{case.seq_kv}-{case.shape.tag()}",
        "seed": 0,
        "details": json.dumps(details, sort_keys=True),
    }


def case_rows(case: BenchCase, outcome: dict) -> list[ResultRow]:
    """Result rows of one case: peak_bytes and latency_ms (and conversion_s, whole-model prefill).

    A case that was skipped or failed gives one row with value NaN and
    passed=False; ``details`` (JSON) says why.
    """
    common = _common_fields(case, outcome)
    if outcome.get("status", "measured") != "measured":
        return [ResultRow(metric="peak_bytes", value=float("nan"), passed=False, **common)]
    metrics = [("peak_bytes", outcome["peak_bytes"]), ("latency_ms", outcome["median_ms"])]
    conversion_s = outcome.get("conversion", {}).get("seconds")
    if case.target == "model-prefill" and conversion_s is not None:
        metrics.append(("conversion_s", conversion_s))  # the file's, kept beside it when cached
    return [ResultRow(metric=m, value=float(v), passed=True, **common) for m, v in metrics]


def _activation_rows(case: BenchCase, outcome: dict, outcomes: dict) -> list[ResultRow]:
    """After a whole-model decode case: the prefill activations of its model, as a row."""
    if case.target != "model-decode":
        return []
    from parity.bench import model_cases

    prefill = model_cases.decode_partner(case)
    prefill_outcome = outcomes.get(prefill.case_id, {})
    value = model_cases.activation_bytes(prefill_outcome, outcome)
    if value is None:
        return []
    common = _common_fields(prefill, prefill_outcome)
    return [ResultRow(metric="activation_bytes", value=value, passed=True, **common)]


def run_case(
    case: BenchCase, repeats: int, cache: Path | None = None, save_output: Path | None = None
) -> dict:
    """Measures one case, or says why not: {"status": "measured"|"skipped"|"error", ...}."""
    estimate, available = estimated_peak_bytes(case), available_bytes()
    if estimate > _MEMORY_SHARE * available:
        reason = (
            f"estimated peak {estimate / 1e9:.1f} GB exceeds {_MEMORY_SHARE:.0%} of the"
            f" {available / 1e9:.1f} GB available"
        )
        return {"status": "skipped", "reason": reason}
    try:
        load_before = _load_average()
        measured = measure_case(case, repeats, cache, save_output)
        # The machine is shared: the load around a case says how much to trust its latency.
        return {"status": "measured", "load_before": load_before, "load_after": _load_average(),
                **measured}  # fmt: skip
    except (CaseError, convert.ConversionError, RuntimeError) as error:
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
    rows, saved, outcomes, start = [], [], {}, time.perf_counter()
    try:
        for index, case in enumerate(cases, start=1):
            progress(f"[{index}/{len(cases)}] {case.case_id} ...")
            output = None
            if case.target == "attention":
                output = differences.output_path(cache or convert.cache_dir(), case)
                output.parent.mkdir(parents=True, exist_ok=True)
            outcome = run_case(case, repeats, cache, output)
            outcomes[case.case_id] = outcome
            new_rows = case_rows(case, outcome) + _activation_rows(case, outcome, outcomes)
            if output is not None and outcome["status"] == "measured":
                saved.append((case, output))
            progress(f"[{index}/{len(cases)}] {case.case_id}: {_outcome_line(outcome)}")
            if index == len(cases) or _length_key(cases[index]) != _length_key(case):
                new_rows += differences.difference_rows(saved)  # the length is complete
                _remove_outputs(saved)
                saved = []
            for row in new_rows:
                writer.record(row)
                rows.append(json.loads(row.to_json()))
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


def _load_average() -> float:
    """The 1-minute load average (runnable processes; this machine has 2 cores)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _length_key(case: BenchCase) -> tuple:
    return case.runtime, case.seq_q, case.seq_kv


def _remove_outputs(saved: list) -> None:
    for _, path in saved:
        path.unlink(missing_ok=True)


def _outcome_line(outcome: dict) -> str:
    if outcome["status"] != "measured":
        return f"{outcome['status']}: {outcome['reason']}"
    return f"peak {outcome['peak_bytes'] / 1e6:.1f} MB, median {outcome['median_ms']:.1f} ms"
