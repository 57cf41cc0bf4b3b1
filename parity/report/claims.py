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
            f"T={int(t)}: {r:.2f}x" for t, r in zip(pairs["seq_q"], ratio, strict=True)
        )
        status = HELD if bool((ratio < 1.0).all()) else NOT_HELD
        basis = (
            f"LiteRT {label}, median latency flash / standard (below 1 = faster) at every length"
        )
        return Claim(claim, measured, status, basis)
    return Claim(claim, "-", NOT_MEASURED, "no LiteRT benchmark measured standard and flash")


def claims_table(rows: list[dict]) -> list[Claim]:
    """The seed's four claims, each judged from ``rows``."""
    bench = bench_frame(rows)
    if bench.empty:
        bench = pd.DataFrame(
            columns=["runtime", "target", "impl", "seq_q", "seq_kv", "case_id"]
            + ["standard_over_this", "latency_ms", "default_blocks"]
        )
    return [_memory_claim(bench), *_difference_claims(rows), _prefill_claim(bench)]


def claims_frame(claims: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame([dataclasses.asdict(claim) for claim in claims])
