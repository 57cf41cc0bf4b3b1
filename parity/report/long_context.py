"""The long-context targets (issue 12), judged from the whole-model benchmark rows.

The case judged is the TinyLlama-shaped 2-layer model in LiteRT with chunked
flash prefill (``parity.bench.model_cases``: chunks of ``CHUNK_ROWS`` rows,
KV-only blocking) against the standard model's one-shot prefill of the same
length. Every value comes from rows; a target with no rows is "not measured".
"""

from __future__ import annotations

import pandas as pd

from parity.bench.table import bench_frame
from parity.report.claims import HELD, NOT_HELD, NOT_MEASURED, Claim

LONGEST = 8192
CONVERSION_LIMIT_S = 300.0  # "conversion at 8192 takes under 5 minutes"
ACTIVATION_RATIO = 10.0  # "prefill activations at 8192 at least 10x below standard's"
LATENCY_FROM = 512  # "prefill latency at or below standard at every length from 512"
COPY_FLOOR_FACTOR = 1.3  # "a single attention call at 2048 within 1.3x of the copy floor"
COPY_FLOOR_LENGTH = 2048


def _chunked_pairs(bench: pd.DataFrame) -> pd.DataFrame:
    """Whole-model prefill: one line per length, standard one-shot and chunked flash columns."""
    picked = bench[(bench["runtime"] == "litert") & (bench["target"] == "model-prefill")]
    standard = picked[picked["impl"] == "standard"]
    chunked = picked[picked["impl"].str.startswith("flash") & picked["impl"].str.contains("-chunk")]
    columns = ["seq_q", "impl", "activation_mb", "latency_ms", "conversion_s"]
    pairs = standard[columns].merge(chunked[columns], on="seq_q", suffixes=("_std", "_chunked"))
    return pairs.sort_values("seq_q").reset_index(drop=True)


def _status(held: bool) -> str:
    return HELD if held else NOT_HELD


def _conversion_claims(pairs: pd.DataFrame) -> list[Claim]:
    names = (f"conversion at {LONGEST} under {CONVERSION_LIMIT_S / 60:.0f} min",
             "conversion time grows at most linearly with length")  # fmt: skip
    timed = pairs.dropna(subset=["conversion_s_chunked"])
    longest = timed[timed["seq_q"] == LONGEST]
    if longest.empty:
        first = Claim(names[0], "-", NOT_MEASURED, f"chunked flash at {LONGEST} not converted")
    else:
        seconds = float(longest["conversion_s_chunked"].iloc[0])
        first = Claim(names[0], f"{seconds:.0f} s (standard {longest['conversion_s_std'].iloc[0]:.0f} s)",
                      _status(seconds < CONVERSION_LIMIT_S),
                      "convert_to_tflite of prefill + decode signatures, chunked flash")  # fmt: skip
    if len(timed) < 2:
        return [first, Claim(names[1], "-", NOT_MEASURED, "fewer than two lengths converted")]
    # At most linear: from each length to the next, seconds grow by no more than length does.
    lengths, seconds = timed["seq_q"].to_numpy(float), timed["conversion_s_chunked"].to_numpy()
    linear = bool(((seconds[1:] / seconds[:-1]) <= (lengths[1:] / lengths[:-1])).all())
    trend = ", ".join(f"{int(n)}: {s:.0f} s" for n, s in zip(lengths, seconds, strict=True))
    return [first, Claim(names[1], trend, _status(linear),
                         "seconds(L') / seconds(L) <= L' / L for consecutive lengths")]  # fmt: skip


def _activation_claim(pairs: pd.DataFrame) -> Claim:
    name = f"prefill activations at {LONGEST} at least {ACTIVATION_RATIO:.0f}x below standard"
    longest = pairs[pairs["seq_q"] == LONGEST].dropna(
        subset=["activation_mb_std", "activation_mb_chunked"]
    )
    if longest.empty:
        return Claim(
            name, "-", NOT_MEASURED, f"standard and chunked flash at {LONGEST} not both measured"
        )
    std, flash = (
        float(longest["activation_mb_std"].iloc[0]),
        float(longest["activation_mb_chunked"].iloc[0]),
    )
    ratio = std / flash if flash > 0 else float("inf")
    return Claim(name, f"standard {std:.0f} MB, chunked flash {flash:.0f} MB ({ratio:.1f}x)",
                 _status(ratio >= ACTIVATION_RATIO),
                 "prefill peak minus decode peak of the same file, all chunks of one prefill")  # fmt: skip


def _latency_claim(pairs: pd.DataFrame) -> Claim:
    name = f"prefill latency at or below standard at every length from {LATENCY_FROM}"
    timed = pairs[pairs["seq_q"] >= LATENCY_FROM].dropna(
        subset=["latency_ms_std", "latency_ms_chunked"]
    )
    if timed.empty:
        return Claim(name, "-", NOT_MEASURED, "no length with both prefills timed")
    ratio = timed["latency_ms_chunked"] / timed["latency_ms_std"]
    trend = ", ".join(f"{int(n)}: {r:.2f}x" for n, r in zip(timed["seq_q"], ratio, strict=True))
    return Claim(name, f"chunked flash / standard: {trend}", _status(bool((ratio <= 1.0).all())),
                 "median wall time of the whole prefill (every chunk), XNNPACK")  # fmt: skip


def _copy_floor_claim(bench: pd.DataFrame) -> Claim:
    name = f"one attention call at {COPY_FLOOR_LENGTH} within {COPY_FLOOR_FACTOR}x of LiteRT's copy floor"
    picked = bench[(bench["runtime"] == "litert") & (bench["target"] == "attention")
                   & (bench["seq_q"] == COPY_FLOOR_LENGTH)]  # fmt: skip
    copy = picked[picked["impl"] == "copy"].dropna(subset=["peak_mb"])
    flash = picked[picked["default_blocks"].astype(bool)].dropna(subset=["peak_mb"])
    if copy.empty or flash.empty:
        return Claim(
            name, "-", NOT_MEASURED, f"flash and copy at T={COPY_FLOOR_LENGTH} not both measured"
        )
    factor = float(flash["peak_mb"].iloc[0] / copy["peak_mb"].iloc[0])
    value = f"{flash['peak_mb'].iloc[0]:.0f} MB = {factor:.2f}x of {copy['peak_mb'].iloc[0]:.0f} MB"
    return Claim(name, value + _copy_floor_context(picked), _status(factor <= COPY_FLOOR_FACTOR),
                 "peak RSS with XNNPACK, flash at its default blocks")  # fmt: skip


def _copy_floor_context(picked: pd.DataFrame) -> str:
    """The same length's best block sizes, and flash over copy without XNNPACK, where measured."""
    measured = picked.dropna(subset=["peak_mb"])
    with_xnnpack = measured[~measured["impl"].str.endswith("-builtin")]
    flash = with_xnnpack[with_xnnpack["impl"].str.startswith("flash")]
    parts = []
    if len(flash) > 1:
        best = flash.loc[flash["peak_mb"].idxmin()]
        parts.append(f"least over block sizes: {best['impl']} {best['peak_mb']:.0f} MB")
    builtin = measured.set_index("impl")["peak_mb"]
    flash_builtin = [i for i in builtin.index if i.startswith("flash") and i.endswith("-builtin")]
    if "copy-builtin" in builtin.index and flash_builtin:
        flash_mb, copy_mb = float(builtin[flash_builtin[0]]), float(builtin["copy-builtin"])
        parts.append(f"without XNNPACK: {flash_builtin[0]} {flash_mb:.0f} MB ="
                     f" {flash_mb / copy_mb:.2f}x of copy {copy_mb:.0f} MB")  # fmt: skip
    return f" ({'; '.join(parts)})" if parts else ""


def long_context_targets(rows: list[dict]) -> list[Claim]:
    """Issue 12's targets, each judged from the bench rows in ``rows``."""
    bench = bench_frame(rows)
    if bench.empty:
        bench = pd.DataFrame(columns=["runtime", "target", "impl", "seq_q", "seq_kv", "peak_mb",
                                      "activation_mb", "latency_ms", "conversion_s", "default_blocks"])  # fmt: skip
    pairs = _chunked_pairs(bench)
    return [*_conversion_claims(pairs), _activation_claim(pairs), _latency_claim(pairs),
            _copy_floor_claim(bench)]  # fmt: skip
