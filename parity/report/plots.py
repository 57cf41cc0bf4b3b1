"""The report's plots, rendered with matplotlib's Agg backend to inline base64 PNGs.

Each function takes frames (``analysis.comparison_frame``, ``bench.bench_frame``)
and returns a list of ``(title, data_uri)``; no data, no plot.
"""

from __future__ import annotations

import base64
import io
import re

import matplotlib

matplotlib.use("Agg")  # no display: the report renders headless

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

_LAYER = re.compile(r"layer[-_ ]?(\d+)", re.IGNORECASE)
_DPI = 90
_STANDARD_STYLE = {"standard-hlfb": "C3", "standard-math": "C3", "standard-fused": "C1"}


def _to_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _positive(values: pd.Series) -> pd.Series:
    """Errors for a log axis: exact zeros drawn at the smallest positive float32 step."""
    values = pd.to_numeric(values, errors="coerce").replace([np.inf, -np.inf], np.nan)
    return values.clip(lower=np.finfo(np.float32).tiny)


def error_plots(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Per model: the greatest error per leg (with its tolerance) and, if rows name layers, per layer."""
    plots = []
    # Error metrics only (max_abs_err, max_abs_diff, ...): counts such as greedy steps
    # share the table but not the axis.
    errors = frame["metric"].astype(str).str.contains("err|diff", regex=True)
    models = frame[~frame["model"].isin(["kernel", "attention"]) & errors]
    for model, rows in models.groupby("model"):
        rows = rows.assign(layer=rows["case_id"].astype(str).str.extract(_LAYER)[0])
        rows = rows.assign(
            layer=rows["layer"].fillna(rows["metric"].astype(str).str.extract(_LAYER)[0])
        )
        has_layers = rows["layer"].notna().any()
        figure, axes = plt.subplots(
            1, 2 if has_layers else 1, figsize=(11 if has_layers else 6, 3.6)
        )
        axes = np.atleast_1d(axes)
        per_leg = rows.groupby("legs").agg(value=("value", "max"), tolerance=("tolerance", "max"))
        positions = np.arange(len(per_leg))
        axes[0].bar(positions, _positive(per_leg["value"]), color="C0", label="max error")
        axes[0].scatter(
            positions, per_leg["tolerance"], color="C3", marker="_", s=400, label="tolerance"
        )
        axes[0].set_xticks(positions, per_leg.index, rotation=30, ha="right", fontsize=7)
        axes[0].set_yscale("log")
        axes[0].set_title(f"{model}: max error per leg", fontsize=9)
        axes[0].legend(fontsize=7, loc="upper left")
        if has_layers:
            layered = rows.dropna(subset=["layer"]).assign(layer=lambda r: r["layer"].astype(int))
            for legs, group in layered.groupby("legs"):
                series = group.groupby("layer")["value"].max()
                axes[1].plot(series.index, _positive(series), marker="o", label=legs)
            axes[1].set_yscale("log")
            axes[1].set_xlabel("layer")
            axes[1].set_title(f"{model}: max error per layer", fontsize=9)
            axes[1].legend(fontsize=7, loc="upper left")
        plots.append((f"Errors: {model}", _to_data_uri(figure)))
    return plots


def _bench_axes(axis_mem, axis_lat, group: pd.DataFrame, memory_column: str) -> None:
    shown = group[group["default_blocks"].astype(bool) | ~group["impl"].str.startswith("flash")]
    shown = shown[~shown["impl"].str.endswith("-builtin")]  # one length only: in the table
    for impl, lines in shown.groupby("impl"):
        lines = lines.sort_values("seq_q").dropna(subset=[memory_column])
        color = _STANDARD_STYLE.get(impl, "C3" if impl == "standard" else None)
        color = "C2" if impl.startswith("flash") else ("0.5" if impl == "copy" else color)
        axis_mem.plot(lines["seq_q"], lines[memory_column], marker="o", color=color, label=impl)
        axis_lat.plot(lines["seq_q"], lines["latency_ms"], marker="o", color=color, label=impl)
    floor = group.drop_duplicates("seq_q").sort_values("seq_q")
    if memory_column == "peak_mb":
        axis_mem.plot(
            floor["seq_q"], floor["floor_mb"], "k--", marker="_", label="floor (Q, K, V, O)"
        )
    for axis, label in ((axis_mem, memory_column.replace("_mb", " MB")), (axis_lat, "median ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length T = S")
        axis.set_ylabel(label)
        axis.legend(fontsize=7, loc="upper left")


def bench_plots(bench: pd.DataFrame) -> list[tuple[str, str]]:
    """Memory and latency against sequence length, standard vs flash, with the floor."""
    plots = []
    if bench.empty:
        return plots
    measured = bench[bench["status"] == "measured"]
    panels = (
        ("attention", "peak_mb", "attention alone"),
        ("model-prefill", "activation_mb", "whole model, prefill"),
    )
    for target, memory_column, label in panels:
        for runtime, group in measured[measured["target"] == target].groupby("runtime"):
            if group[memory_column].notna().sum() == 0:
                continue
            figure, (axis_mem, axis_lat) = plt.subplots(1, 2, figsize=(11, 3.6))
            _bench_axes(axis_mem, axis_lat, group, memory_column)
            axis_mem.set_title(f"{runtime}, {label}: memory", fontsize=9)
            axis_lat.set_title(f"{runtime}, {label}: latency", fontsize=9)
            plots.append((f"{runtime}: {label}", _to_data_uri(figure)))
    return plots


def comparison_family(legs: str) -> str:
    """``legs`` with every number replaced by N: ``decode-row3-at-17-vs-prefill-row3`` ->
    ``decode-rowN-at-N-vs-prefill-rowN``."""
    return re.sub(r"\d+", "N", legs)


def kernel_error_plots(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Distribution of the property suite's kernel errors and of the share of tolerance used."""
    # Errors against the oracle only (max_abs_err); hull-excess rows are signed margins.
    rows = frame[
        (frame["suite"] == "property") & (frame["metric"] == "max_abs_err") & frame["value"].notna()
    ]
    if rows.empty:
        return []
    figure, (axis_err, axis_used) = plt.subplots(1, 2, figsize=(11, 3.6))
    # One series per comparison family: the metamorphic tests put row numbers,
    # positions and block sizes into their leg names (hundreds of distinct ones).
    families = rows["legs"].map(comparison_family)
    for legs, group in rows.groupby(families):
        errors = np.log10(_positive(group["value"]).dropna())
        axis_err.hist(errors, bins=30, alpha=0.6, label=f"{legs} ({len(errors)})")
        used = group["used"].replace([np.inf, -np.inf], np.nan).dropna()
        if not used.empty:
            axis_used.hist(np.log10(_positive(used)), bins=30, alpha=0.6, label=legs)
    axis_err.set_xlabel("log10(max abs error)")
    axis_err.set_title("property suite: kernel errors", fontsize=9)
    axis_used.axvline(0.0, color="C3", linestyle="--", label="tolerance")
    axis_used.set_xlabel("log10(error / tolerance)")
    axis_used.set_title("share of the tolerance used", fontsize=9)
    for axis in (axis_err, axis_used):
        axis.set_ylabel("comparisons")
        axis.legend(fontsize=7, loc="upper left")
    return [("Kernel errors (property suite)", _to_data_uri(figure))]
