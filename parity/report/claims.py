"""The seed's claims next to what was measured, computed from the result rows.

Nothing here is hard-coded but the claims themselves (what the seed said):
every measured value comes from rows, and a claim with no rows to judge it is
"not measured", never "held".

Rows used:
- memory and latency: benchmark rows (suite "bench"), via ``parity.bench.bench_frame``;
- output differences: rows that compare a flash leg directly with a standard leg
  (legs naming both, e.g. ``litert/attention/flash-q256-kv128-vs-standard-hlfb``
  or ``reauthored_flash-vs-reauthored_std``) with an absolute-difference metric.
  Attention-level rows (model "attention" or "kernel") judge the claims; whole-model
  rows (logits) are shown beside them as context.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pandas as pd

from parity.bench.table import bench_frame

HELD, NOT_HELD, NOT_MEASURED = "held", "not held", "not measured"
SEED_MEMORY_REDUCTION = 128.0  # "128x memory reduction"
SEED_MAX_DIFFERENCE = 1.19e-6  # "max difference 1.19e-6"
_ATTENTION_MODELS = ("attention", "kernel")
_FLASH = re.compile(r"flash", re.IGNORECASE)
_STANDARD = re.compile(r"\bstd\b|standard|_std\b|sdpa", re.IGNORECASE)


@dataclasses.dataclass
class Claim:
    """One claim of the seed, its measured counterpart and the verdict."""

    claim: str
    measured: str
    status: str  # HELD, NOT_HELD or NOT_MEASURED
    basis: str  # which rows, which case


def _is_flash_vs_standard(row: dict) -> bool:
    legs = str(row.get("legs", ""))
    metric = str(row.get("metric", ""))
    return (
        bool(_FLASH.search(legs))
        and bool(_STANDARD.search(legs.replace("-", " ").replace("/", " ")))
        and "oracle" not in legs.lower()
        and "abs" in metric
    )


def flash_vs_standard_rows(rows: list[dict]) -> pd.DataFrame:
    """Rows comparing flash directly with standard, with a numeric ``value``."""
    picked = [row for row in rows if _is_flash_vs_standard(row)]
    frame = pd.DataFrame(picked, columns=["suite", "model", "case_id", "legs", "metric", "value"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def _difference_claims(rows: list[dict]) -> list[Claim]:
    frame = flash_vs_standard_rows(rows)
    attention = frame[frame["model"].isin(_ATTENTION_MODELS)]
    models = frame[~frame["model"].isin(_ATTENTION_MODELS)]
    if attention.empty:
        missing = "no row compares flash with standard attention directly"
        return [
            Claim("identical outputs", "-", NOT_MEASURED, missing),
            Claim(f"max difference {SEED_MAX_DIFFERENCE:.3g}", "-", NOT_MEASURED, missing),
        ]
    worst = attention.loc[attention["value"].fillna(math.inf).idxmax()]
    worst_value = float(worst["value"])
    identical = int((attention["value"] == 0).sum())
    basis = (
        f"{len(attention)} attention-level flash-vs-standard rows; worst:"
        f" {worst['suite']}/{worst['case_id']} ({worst['legs']})"
    )
    if not models.empty:
        basis += f"; whole-model logits (context): max {models['value'].max():.3g}"
    return [
        Claim(
            "identical outputs",
            f"{identical} of {len(attention)} comparisons bit-identical; max |diff| {worst_value:.3g}",
            HELD if identical == len(attention) else NOT_HELD,
            basis,
        ),
        Claim(
            f"max difference {SEED_MAX_DIFFERENCE:.3g}",
            f"max |flash - standard| {worst_value:.3g}",
            HELD if worst_value <= SEED_MAX_DIFFERENCE else NOT_HELD,
            basis,
        ),
    ]


def _memory_claim(bench: pd.DataFrame) -> Claim:
    claim = f"{SEED_MEMORY_REDUCTION:.0f}x memory reduction"
    ratios = bench[
        (bench["target"] == "attention")
        & bench["default_blocks"].astype(bool)
        & bench["standard_over_this"].notna()
    ]
    if ratios.empty:
        return Claim(claim, "-", NOT_MEASURED, "no benchmark measured standard and flash together")
    parts, best = [], None
    for runtime, group in ratios.groupby("runtime"):
        top = group.loc[group["standard_over_this"].idxmax()]
        parts.append(f"{runtime}: {top['standard_over_this']:.1f}x at T={int(top['seq_q'])}")
        if best is None or top["standard_over_this"] > best["standard_over_this"]:
            best = top
    status = HELD if best["standard_over_this"] >= SEED_MEMORY_REDUCTION else NOT_HELD
    basis = (
        "peak memory of one attention call, standard (LiteRT: HLFB composite; PyTorch: math"
        f" path) over flash at its default blocks; best: {best['case_id']}"
    )
    return Claim(claim, "; ".join(parts), status, basis)


def _prefill_claim(bench: pd.DataFrame) -> Claim:
    claim = "faster prefill"
    for target, label in (("model-prefill", "whole-model prefill"), ("attention", "attention")):
        picked = bench[(bench["runtime"] == "litert") & (bench["target"] == target)]
        standard = picked[picked["impl"].isin(["standard", "standard-hlfb"])]
        flash = picked[picked["default_blocks"].astype(bool)]
        pairs = standard.merge(flash, on=["seq_q", "seq_kv"], suffixes=("_std", "_flash"))
        pairs = pairs.dropna(subset=["latency_ms_std", "latency_ms_flash"])
        if pairs.empty:
            continue
        ratio = pairs["latency_ms_flash"] / pairs["latency_ms_std"]
        measured = ", ".join(
            f"T={int(t)}: {_speed_in_words(r)}" for t, r in zip(pairs["seq_q"], ratio, strict=True)
        )
        status = HELD if bool((ratio < 1.0).all()) else NOT_HELD
        basis = (
            f"LiteRT {label}, median latency of flash against standard at every length"
        )
        return Claim(claim, measured, status, basis)
    return Claim(claim, "-", NOT_MEASURED, "no LiteRT benchmark measured standard and flash")


def _speed_in_words(flash_over_standard: float) -> str:
    """A latency ratio flash / standard as the reader asks it: "flash 1.33x faster" or "... slower"."""
    if flash_over_standard < 1.0:
        return f"flash {1.0 / flash_over_standard:.2f}x faster"
    if flash_over_standard > 1.0:
        return f"flash {flash_over_standard:.2f}x slower"
    return "flash as fast"


OWNER_BOUND = 1e-4  # the owner's bound on flash vs standard logits (parity.tolerances)
_OWNER_STAGES = (
    ("PyTorch", "reauthored_flash-vs-reauthored_std", "a check: above it the gate fails"),
    ("TFLite", "tflite_flash-vs-tflite_std",
     "recorded, not a gate failure: both legs carry LiteRT's own rounding, and each is"
     " judged against the float64 oracle by its derived allowance"),
)  # fmt: skip


def _owner_bound_claims(rows: list[dict]) -> list[Claim]:
    """The owner's 1e-4 on flash vs standard logits, per stage, from the chain's rows."""
    claims = []
    for stage, legs, why in _OWNER_STAGES:
        values = [float(r["value"]) for r in rows
                  if r.get("legs") == legs and r.get("metric") == "max_abs_diff"]  # fmt: skip
        claim = f"flash vs standard logits within {OWNER_BOUND:g} ({stage})"
        if not values:
            claims.append(Claim(claim, "-", NOT_MEASURED, f"no {legs} row"))
            continue
        worst = max(values)
        claims.append(Claim(claim, f"max |flash - standard| {worst:.3g} over {len(values)} cases",
                            HELD if worst <= OWNER_BOUND else NOT_HELD, why))  # fmt: skip
    return claims


def claims_table(rows: list[dict]) -> list[Claim]:
    """The seed's four claims and the owner's bound per stage, each judged from ``rows``."""
    bench = bench_frame(rows)
    if bench.empty:
        bench = pd.DataFrame(
            columns=["runtime", "target", "impl", "seq_q", "seq_kv", "case_id"]
            + ["standard_over_this", "latency_ms", "default_blocks"]
        )
    return [
        _memory_claim(bench), *_difference_claims(rows), _prefill_claim(bench),
        *_owner_bound_claims(rows),
    ]  # fmt: skip


# The targets for one LiteRT attention call (TinyLlama shape, flash at default blocks).
TARGET_LENGTH = 2048
TARGET_FLOOR_FACTOR = 1.5  # "flash within 1.5x of the floor"
TARGET_RATIO_AT_LONGEST = 100.0  # "at least 100x at 8192"
TARGET_LONGEST = 8192


def _litert_pairs(bench: pd.DataFrame) -> pd.DataFrame:
    """LiteRT attention: one line per length with standard and default-blocks flash columns."""
    picked = bench[(bench["runtime"] == "litert") & (bench["target"] == "attention")]
    standard = picked[picked["impl"] == "standard-hlfb"]
    flash = picked[picked["default_blocks"].astype(bool)]
    columns = ["seq_q", "peak_mb", "latency_ms", "floor_mb"]
    pairs = standard[columns].merge(flash[columns], on="seq_q", suffixes=("_std", "_flash"))
    return pairs.dropna(subset=["peak_mb_std", "peak_mb_flash"]).sort_values("seq_q")


def targets_table(rows: list[dict]) -> list[Claim]:
    """The issue's LiteRT targets for flash attention, each judged from the bench rows."""
    bench = bench_frame(rows)
    missing = "no LiteRT attention benchmark of standard and flash"
    names = [
        f"peak within {TARGET_FLOOR_FACTOR}x of the floor at T={TARGET_LENGTH}",
        f"latency at or below standard at T={TARGET_LENGTH}",
        "memory ratio grows with length",
        f"ratio at least {TARGET_RATIO_AT_LONGEST:.0f}x at T={TARGET_LONGEST}",
    ]
    pairs = _litert_pairs(bench) if not bench.empty else pd.DataFrame()
    if pairs.empty:
        return [Claim(name, "-", NOT_MEASURED, missing) for name in names]
    ratio = pairs["peak_mb_std"] / pairs["peak_mb_flash"]
    at = pairs[pairs["seq_q"] == TARGET_LENGTH]
    longest = pairs[pairs["seq_q"] == TARGET_LONGEST]
    results = []
    if at.empty:
        results += [
            Claim(name, "-", NOT_MEASURED, f"T={TARGET_LENGTH} not measured") for name in names[:2]
        ]
    else:
        line = at.iloc[0]
        factor = line["peak_mb_flash"] / line["floor_mb_flash"]
        results.append(Claim(names[0], f"{line['peak_mb_flash']:.0f} MB = {factor:.2f}x of"
                             f" {line['floor_mb_flash']:.1f} MB", _status(factor <= TARGET_FLOOR_FACTOR),
                             "peak RSS of the call over the bytes of Q, K, V and O"))  # fmt: skip
        results.append(Claim(names[1], f"flash {line['latency_ms_flash']:.0f} ms, standard"
                             f" {line['latency_ms_std']:.0f} ms",
                             _status(line["latency_ms_flash"] <= line["latency_ms_std"]),
                             "median latency, XNNPACK"))  # fmt: skip
    grows = bool((ratio.diff().dropna() > 0).all()) and len(ratio) > 1
    trend = ", ".join(f"T={int(t)}: {r:.1f}x" for t, r in zip(pairs["seq_q"], ratio, strict=True))
    results.append(Claim(names[2], trend, _status(grows) if len(ratio) > 1 else NOT_MEASURED,
                         "standard peak / flash peak per length"))  # fmt: skip
    if longest.empty:
        results.append(Claim(names[3], "-", NOT_MEASURED, f"T={TARGET_LONGEST} not measured"))
    else:
        value = float(ratio[pairs["seq_q"] == TARGET_LONGEST].iloc[0])
        results.append(Claim(names[3], f"{value:.1f}x", _status(value >= TARGET_RATIO_AT_LONGEST),
                             "standard peak / flash peak"))  # fmt: skip
    return results


def _status(held: bool) -> str:
    return HELD if held else NOT_HELD


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(claim) for claim in claims])
