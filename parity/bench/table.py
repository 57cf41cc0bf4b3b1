"""Benchmark rows as a pandas frame and as a terminal table (tabulate).

Both the benchmark CLI and the report read bench rows through ``bench_frame``,
so the numbers on the terminal and on the page are computed once.
"""

from __future__ import annotations

import json
import math

import pandas as pd
from tabulate import tabulate

from parity.bench.cases import DEFAULT_FLASH_LABEL

# The standard each flash row is compared with, per runtime: the math path is
# what export produces in PyTorch; in LiteRT the HLFB composite is the fair one.
BASELINE_IMPL = {"torch": "standard-math", "litert": "standard-hlfb"}
_MB = 1e6
DIFFERENCE_METRIC = "max_abs_diff"  # parity.bench.differences


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def bench_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per bench case: runtime, target, impl, lengths, MB, ms, ratios, status.

    ``rows`` are result-row dicts (``parity.results``); rows of other suites are ignored.
    """
    cases = {}
    for row in rows:
        if row.get("suite") != "bench" or row.get("metric") == DIFFERENCE_METRIC:
            continue  # differences are pairs of cases, shown by the claims
        try:
            details = json.loads(row.get("details") or "{}")
        except json.JSONDecodeError:
            details = {}
        case = details.get("case", {})
        entry = cases.setdefault(
            row["case_id"],
            {
                "case_id": row["case_id"],
                "runtime": case.get("runtime", ""),
                "target": case.get("target", ""),
                "impl": row["legs"].rsplit("/", 1)[-1],
                "seq_q": case.get("seq_q"),
                "seq_kv": case.get("seq_kv"),
                "floor_mb": details.get("floor_bytes", math.nan) / _MB,
            },
        )
        # A case measured again later (another run in the same file): the last status wins.
        entry["status"] = details.get("status", "measured")
        entry["reason"] = details.get("reason", "")
        entry["cpu_ms"] = details.get("median_cpu_ms", math.nan)
        entry["load"] = max(
            details.get("load_before", math.nan), details.get("load_after", math.nan)
        )
        value = _as_float(row.get("value"))
        scale = _MB if row["metric"].endswith("_bytes") else 1.0
        entry[row["metric"].replace("_bytes", "_mb")] = value / scale
    frame = pd.DataFrame(list(cases.values()))
    if frame.empty:
        return frame
    for column in ("peak_mb", "latency_ms", "activation_mb", "conversion_s"):
        if column not in frame:
            frame[column] = math.nan
    # The floor is one attention call's Q, K, V and O: against a whole model's peak,
    # which holds the weights, the ratio means nothing (issue 13), so only
    # attention cases get it; whole-model prefill is judged by its activations.
    frame["peak_over_floor"] = (frame["peak_mb"] / frame["floor_mb"]).where(
        frame["target"] == "attention"
    )
    # Whole-model flash runs at the kernel's default blocks and is labelled "flash".
    frame["default_blocks"] = frame["impl"].isin([DEFAULT_FLASH_LABEL, "flash"])
    frame["standard_over_this"] = frame.apply(lambda line: _ratio(frame, line), axis=1)
    return frame.sort_values(["runtime", "target", "seq_q", "impl"]).reset_index(drop=True)


def _ratio(frame: pd.DataFrame, line: pd.Series) -> float:
    """Peak (activation for whole-model prefill) of the runtime's baseline over this case's."""
    metric = "activation_mb" if line["target"] == "model-prefill" else "peak_mb"
    baseline_impl = BASELINE_IMPL.get(line["runtime"], "standard")
    if line["target"] != "attention":
        baseline_impl = "standard"
    if line["impl"].endswith("-builtin"):  # without XNNPACK: against the same runtime
        baseline_impl += "-builtin"
    same = frame[
        (frame["runtime"] == line["runtime"])
        & (frame["target"] == line["target"])
        & (frame["seq_q"] == line["seq_q"])
        & (frame["seq_kv"] == line["seq_kv"])
        & (frame["impl"] == baseline_impl)
    ]
    if same.empty or not line["impl"].startswith("flash"):
        return math.nan
    return float(same[metric].iloc[0] / line[metric])


def summary_table(rows: list[dict], fmt: str = "simple") -> str:
    """The benchmark table for the terminal: one line per case."""
    frame = bench_frame(rows)
    if frame.empty:
        return "(no benchmark rows)"
    columns = {
        "runtime": "runtime",
        "target": "target",
        "seq_q": "T",
        "seq_kv": "S",
        "impl": "impl",
        "peak_mb": "peak MB",
        "floor_mb": "floor MB",
        "peak_over_floor": "peak/floor",
        "standard_over_this": "std/this",
        "activation_mb": "activations MB",
        "latency_ms": "median ms",
        "conversion_s": "convert s",
        "cpu_ms": "cpu ms",
        "load": "load",
        "status": "status",
    }
    shown = frame[list(columns)].rename(columns=columns)
    return tabulate(shown, headers="keys", tablefmt=fmt, showindex=False, floatfmt=".3g")
