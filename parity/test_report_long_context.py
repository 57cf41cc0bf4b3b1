"""The report's long-context targets (issue 12) are judged from whole-model bench rows."""

from __future__ import annotations

import json

from parity.bench import runner
from parity.bench.cases import BenchCase
from parity.report import claims
from parity.report.long_context import long_context_targets

_MB = 1e6


def _model_rows(impl, length, prefill_mb, decode_mb, ms, convert_s, chunk=None) -> list[dict]:
    """Prefill and decode rows of one whole-model file, with its activation row."""
    blocks = (512, 128) if impl == "flash" else (None, None)
    prefill = BenchCase(
        "litert", "model-prefill", impl, length, length, *blocks, prefill_chunk=chunk
    )
    decode = BenchCase("litert", "model-decode", impl, 1, length, *blocks, prefill_chunk=chunk)
    prefill_outcome = {"status": "measured", "peak_bytes": prefill_mb * _MB, "median_ms": ms,
                       "conversion": {"cached": False, "seconds": convert_s}}  # fmt: skip
    decode_outcome = {"status": "measured", "peak_bytes": decode_mb * _MB, "median_ms": 5.0}
    rows = runner.case_rows(prefill, prefill_outcome) + runner.case_rows(decode, decode_outcome)
    rows += runner._activation_rows(decode, decode_outcome, {prefill.case_id: prefill_outcome})
    return [json.loads(row.to_json()) for row in rows]


def _targets(rows) -> dict:
    return {
        target.claim.split(" at ")[0].split(" grows")[0]: target
        for target in long_context_targets(rows)
    }


def test_every_long_context_target_is_not_measured_without_rows():
    assert {t.status for t in long_context_targets([])} == {claims.NOT_MEASURED}


def test_chunked_flash_meeting_every_model_target_holds_them():
    """Standard 9600 MB of activations at 8192, chunked flash 400 MB (24x), faster, 70 s to convert."""
    rows = []
    for length, std_ms, flash_ms, seconds in (
        (4096, 9000.0, 8000.0, 40.0),
        (8192, 30000.0, 20000.0, 70.0),
    ):
        rows += _model_rows(
            "standard", length, 1200 + 9600 * (length / 8192) ** 2, 1200, std_ms, 20.0
        )
        rows += _model_rows("flash", length, 1600, 1200, flash_ms, seconds, chunk=512)
    targets = _targets(rows)
    assert targets["conversion"].status == claims.HELD and "70 s" in targets["conversion"].measured
    assert targets["conversion time"].status == claims.HELD  # 40 -> 70 s while length doubles
    assert targets["prefill activations"].status == claims.HELD
    assert "(24.0x)" in targets["prefill activations"].measured
    assert targets["prefill latency"].status == claims.HELD
    assert targets["one attention call"].status == claims.NOT_MEASURED  # no attention rows


def test_slow_superlinear_conversion_and_slower_prefill_are_not_held():
    """400 s at 8192 after 100 s at 4096 (4x for 2x the length); flash slower at 4096."""
    rows = []
    for length, flash_ms, seconds in ((4096, 9500.0, 100.0), (8192, 20000.0, 400.0)):
        rows += _model_rows("standard", length, 3000, 1200, 9000.0, 20.0)
        rows += _model_rows("flash", length, 1600, 1200, flash_ms, seconds, chunk=512)
    targets = _targets(rows)
    assert targets["conversion"].status == claims.NOT_HELD
    assert targets["conversion time"].status == claims.NOT_HELD
    assert targets["prefill activations"].status == claims.NOT_HELD  # 1800 / 400 = 4.5x
    assert targets["prefill latency"].status == claims.NOT_HELD
    assert "4096: 1.06x" in targets["prefill latency"].measured


def test_one_shot_flash_is_not_taken_for_the_chunked_case():
    """Only a chunked flash file answers the long-context targets."""
    rows = _model_rows("standard", 8192, 10800, 1200, 30000.0, 20.0)
    rows += _model_rows("flash", 8192, 1300, 1200, 1000.0, 10.0)
    assert {t.status for t in long_context_targets(rows)} == {claims.NOT_MEASURED}


def _attention_rows(impl, blocks, peak_mb, xnnpack=True) -> list[dict]:
    case = BenchCase("litert", "attention", impl, 2048, 2048, *blocks, xnnpack=xnnpack)
    outcome = {"status": "measured", "peak_bytes": peak_mb * _MB, "median_ms": 100.0}
    return [json.loads(row.to_json()) for row in runner.case_rows(case, outcome)]


def test_the_copy_floor_target_is_judged_with_xnnpack_and_shows_the_builtin_run_beside_it():
    """Flash at its default blocks 180 MB over copy 90 MB (2.0x) is not held, even though
    a smaller block and the run without XNNPACK (70 / 65 MB) would be: both are shown."""
    rows = _attention_rows("copy", (None, None), 90)
    rows += _attention_rows("flash", (256, 128), 180) + _attention_rows("flash", (128, 128), 140)
    rows += _attention_rows("copy", (None, None), 65, xnnpack=False)
    rows += _attention_rows("flash", (256, 128), 70, xnnpack=False)
    target = _targets(rows)["one attention call"]
    assert target.status == claims.NOT_HELD
    assert target.measured.startswith("180 MB = 2.00x of 90 MB")
    assert "least over block sizes: flash-q128-kv128 140 MB" in target.measured
    assert (
        "without XNNPACK: flash-q256-kv128-builtin 70 MB = 1.08x of copy 65 MB" in target.measured
    )
