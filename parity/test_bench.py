"""Tests of parity.bench: cases, floor, memory reading, rows, differences, one real LiteRT case."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from parity.bench import cases, convert, differences, procmem, runner
from parity.bench.__main__ import main as bench_main
from parity.bench.cases import BenchCase
from parity.bench.table import bench_frame

_MB = 1e6


def test_floor_is_the_bytes_of_q_k_v_and_o():
    """TinyLlama at T = S = 2048: Q and O 2048*32*64 floats, K and V 2048*4*64, fp32."""
    q_bytes, kv_bytes = 2048 * 32 * 64 * 4, 2048 * 4 * 64 * 4
    assert cases.floor_bytes(cases.TINYLLAMA_ATTENTION, 2048, 2048) == 2 * (q_bytes + kv_bytes)
    assert cases.floor_bytes(cases.TINYLLAMA_ATTENTION, 1, 2048) == 2 * (32 * 64 * 4 + kv_bytes)


def test_default_blocks_are_the_kernels_defaults():
    """The bench's "default" flash is edge_flash's default, so claims judge what ships."""
    import edge_flash

    assert cases.DEFAULT_BLOCKS == (
        edge_flash.DEFAULT_Q_BLOCK_SIZE,
        edge_flash.DEFAULT_KV_BLOCK_SIZE,
    )


def test_case_ids_read_as_runtime_target_impl_blocks_lengths():
    case = BenchCase("litert", "attention", "flash", 2048, 2048, 256, 128)
    assert case.case_id == "litert-attention-flash-q256-kv128-t2048-s2048"
    assert BenchCase.from_dict(json.loads(json.dumps(case.to_dict()))) == case


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runtime": "onnx"}, "runtime ('onnx') must be one of"),
        ({"target": "kernel"}, "target ('kernel') must be one of"),
        ({"seq_q": 0}, "seq_q, seq_kv (0, 512) must be positive"),
        ({"q_block_size": None}, "flash case needs q_block_size and kv_block_size"),
    ],
)
def test_bad_case_fields_raise_value_error_naming_them(fields, message):
    base = {"runtime": "litert", "target": "attention", "impl": "flash", "seq_q": 512,
            "seq_kv": 512, "q_block_size": 256, "kv_block_size": 128}  # fmt: skip
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BenchCase(**{**base, **fields})


def test_case_list_has_every_impl_per_length_and_the_sweep_only_where_asked():
    listed = cases.attention_cases((512, 1024), sweep_lengths=(1024,))
    ids = {case.case_id for case in listed}
    assert "torch-attention-standard-math-t512-s512" in ids
    assert "litert-attention-standard-hlfb-t1024-s1024" in ids
    assert "litert-attention-flash-q512-kv256-t1024-s1024" in ids
    assert "litert-attention-flash-q512-kv256-t512-s512" not in ids
    assert len(ids) == len(listed)


def test_the_sweep_length_also_runs_every_litert_file_without_xnnpack():
    """At the sweep lengths only: copy, standard and flash once more on builtin kernels,
    from the same converted file (the cache ignores the runtime setting)."""
    listed = cases.attention_cases((512, 1024), sweep_lengths=(1024,))
    builtin = {case.case_id for case in listed if not case.xnnpack}
    assert builtin == {
        "litert-attention-copy-builtin-t1024-s1024",
        "litert-attention-standard-hlfb-builtin-t1024-s1024",
        f"litert-attention-{cases.DEFAULT_FLASH_LABEL}-builtin-t1024-s1024",
    }
    flash = next(
        c
        for c in listed
        if c.case_id == f"litert-attention-{cases.DEFAULT_FLASH_LABEL}-t1024-s1024"
    )
    on_builtin = dataclasses.replace(flash, xnnpack=False)
    assert convert.cached_model_path(on_builtin, Path("/c")) == convert.cached_model_path(
        flash, Path("/c")
    )
    with pytest.raises(ValueError, match="LiteRT setting"):
        BenchCase("torch", "attention", "flash", 8, 8, 4, 4, xnnpack=False)


def test_peak_reading_sees_a_freed_allocation():
    """clear_refs + VmHWM catch a 64 MB buffer that is freed before the reading."""
    import mmap

    # Fresh anonymous pages, not malloc: an allocator may hand back pages that are
    # already resident (seen after other tests in the same process: peak 0).
    size = 64 * 2**20
    before = procmem.reset_peak()
    buffer = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):  # touch every page
        buffer[offset] = 1
    buffer.close()
    assert procmem.peak_since(before) >= 60 * 2**20


def test_case_too_big_for_memory_is_skipped_with_its_estimate():
    """An impossible case is skipped (not run, not passed), saying why."""
    huge = BenchCase("torch", "attention", "standard-math", 2**17, 2**17)
    outcome = runner.run_case(huge, repeats=1)
    assert outcome["status"] == "skipped" and "exceeds 70% of the" in outcome["reason"]
    (row,) = runner.case_rows(huge, outcome)
    assert not row.passed and math.isnan(row.value)


def test_rows_and_frame_give_peaks_floors_and_ratios():
    """Standard 630 MB vs flash 63 MB at 2048: std/this 10, peak/floor from the floor."""
    measured = []
    for impl, peak in (("standard-hlfb", 630e6), ("flash", 63e6)):
        blocks = (256, 128) if impl == "flash" else (None, None)
        case = BenchCase("litert", "attention", impl, 2048, 2048, *blocks)
        outcome = {"status": "measured", "peak_bytes": peak, "median_ms": 100.0}
        measured += [json.loads(r.to_json()) for r in runner.case_rows(case, outcome)]
    assert {r["metric"] for r in measured} == {"peak_bytes", "latency_ms"}
    frame = bench_frame(measured).set_index("impl")
    floor_mb = cases.floor_bytes(cases.TINYLLAMA_ATTENTION, 2048, 2048) / _MB
    assert frame.loc["flash-q256-kv128", "standard_over_this"] == pytest.approx(10.0)
    assert frame.loc["flash-q256-kv128", "peak_over_floor"] == pytest.approx(63 / floor_mb)


def test_whole_model_rows_get_no_peak_over_the_attention_floor():
    """A whole-model decode peak holds the weights: no peak/floor ratio is shown for it."""
    case = BenchCase("litert", "model-decode", "flash", 1, 2048, 256, 128)
    outcome = {"status": "measured", "peak_bytes": 1.1e9, "median_ms": 10.0}
    rows = [json.loads(r.to_json()) for r in runner.case_rows(case, outcome)]
    frame = bench_frame(rows)
    assert frame["peak_mb"].notna().all() and frame["peak_over_floor"].isna().all()


def test_difference_is_the_largest_absolute_gap_and_pairs_flash_with_standard(tmp_path):
    shape = (1, 300, 2, 4)  # T = 300 spans two comparison chunks
    expected = np.zeros(shape, np.float32)
    actual = expected.copy()
    actual[0, 299, 1, 3] = -2.5e-6
    flash = BenchCase("litert", "attention", "flash", 300, 300, 256, 128)
    standard = BenchCase("litert", "attention", "standard-hlfb", 300, 300)
    copy = BenchCase("litert", "attention", "copy", 300, 300)
    (tmp_path / "outputs").mkdir()
    saved = []
    for case, array in ((flash, actual), (standard, expected), (copy, expected)):
        np.save(differences.output_path(tmp_path, case), array)
        saved.append((case, differences.output_path(tmp_path, case)))
    (row,) = differences.difference_rows(saved)
    assert row.legs == "litert/attention/flash-q256-kv128-vs-standard-hlfb"
    assert row.value == pytest.approx(2.5e-6, rel=1e-6)


def test_difference_of_outputs_with_other_shapes_raises(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 4, 2, 2)))
    np.save(tmp_path / "b.npy", np.zeros((1, 5, 2, 2)))
    with pytest.raises(ValueError, match="differ"):
        differences.max_abs_difference(tmp_path / "a.npy", tmp_path / "b.npy")


def test_cli_rejects_unknown_runtime_with_one_line(capsys, tmp_path):
    assert bench_main(["--runtimes", "onnx", "--results", str(tmp_path / "r.jsonl")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["parity.bench: error: --runtimes (onnx) must be among torch,litert"]


@pytest.mark.tflite
def test_litert_copy_case_measures_at_least_its_floor_without_torch(tmp_path):
    """A real conversion and LiteRT child: the I/O-only module holds at least Q, K, V and O."""
    case = BenchCase("litert", "attention", "copy", 256, 256)
    outcome = runner.run_case(case, repeats=2, cache=tmp_path, save_output=tmp_path / "o.npy")
    assert outcome["status"] == "measured", outcome.get("reason")
    assert outcome["torch_loaded"] is False and outcome["outputs_finite"]
    assert outcome["peak_bytes"] >= cases.floor_bytes(case.shape, 256, 256)
    assert len(outcome["samples_ms"]) == 2 and outcome["median_ms"] > 0
    assert np.load(tmp_path / "o.npy").shape == (1, 256, 32, 64)
    again = runner.run_case(case, repeats=1, cache=tmp_path)
    assert again["conversion"]["cached"] is True  # the second run reuses the converted file


def test_torch_case_peak_counts_inputs_and_at_least_the_output():
    """A fresh PyTorch child: the peak holds Q, K, V and O at least, measured by the profiler."""
    case = BenchCase("torch", "attention", "flash", 128, 128, 64, 32)
    outcome = runner.run_case(case, repeats=2)
    assert outcome["status"] == "measured", outcome.get("reason")
    assert outcome["peak_method"] == "torch.profiler replay"
    assert outcome["peak_bytes"] >= cases.floor_bytes(case.shape, 128, 128)
    assert outcome["call_peak_bytes"] >= 128 * 32 * 64 * 4  # the output is allocated in the call
    assert outcome["outputs_finite"] and len(outcome["samples_ms"]) == 2
    assert outcome["median_ms_with_mmap_threshold"] > 0  # latency came from a second child


def test_a_case_measured_again_later_takes_its_latest_status():
    """An error in an early run and a measurement in a later one: the frame shows the measurement."""
    case = BenchCase("litert", "model-prefill", "standard", 4096, 4096)
    failed = runner.case_rows(case, {"status": "error", "reason": "mask_cache_size"})
    measured = runner.case_rows(case, {"status": "measured", "peak_bytes": 3.6e9, "median_ms": 5e3})
    frame = bench_frame([json.loads(r.to_json()) for r in failed + measured])
    assert list(frame["status"]) == ["measured"] and frame.loc[0, "peak_mb"] == pytest.approx(3600)


@pytest.mark.quick
def test_zero_repeats_is_an_error_not_the_default(capsys):
    """`bench --repeats 0` exits 2 with one line naming the argument (it used to become 5)."""
    assert bench_main(["--repeats", "0", "--quick", "--parts", "attention"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "parity.bench: error: --repeats (0) must be at least 1"
    ]


def test_chunked_prefill_case_names_its_chunk_and_shares_its_file_with_decode():
    """Chunked flash prefill of 8192 tokens in 512-row calls: its id says so; decode pairs with it."""
    from parity.bench import model_cases

    prefill = BenchCase("litert", "model-prefill", "flash", 8192, 8192, 512, 128, prefill_chunk=512)
    assert prefill.case_id == "litert-model-prefill-flash-q512-kv128-chunk512-t8192-s8192"
    assert prefill.prefill_rows == 512
    decode = BenchCase("litert", "model-decode", "flash", 1, 8192, 512, 128, prefill_chunk=512)
    assert model_cases.decode_partner(decode) == prefill
    one_shot = BenchCase("litert", "model-prefill", "flash", 8192, 8192, 256, 128)
    assert one_shot.prefill_rows == 8192


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prefill_chunk": 300}, "prefill_chunk (300) must be a positive divisor of seq_kv (1024)"),
        ({"seq_q": 512, "prefill_chunk": 512}, "seq_q (512) must equal seq_kv (1024)"),
        ({"target": "attention", "prefill_chunk": 512}, "prefill_chunk is for whole-model cases"),
    ],
)
def test_bad_chunks_raise_value_error_naming_them(fields, message):
    base = {"runtime": "litert", "target": "model-prefill", "impl": "flash", "seq_q": 1024,
            "seq_kv": 1024, "q_block_size": 512, "kv_block_size": 128}  # fmt: skip
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BenchCase(**{**base, **fields})


def test_model_cases_add_chunked_flash_where_the_length_holds_whole_chunks():
    from parity.bench import model_cases

    ids = [case.case_id for case in model_cases.model_cases((256, 1024))]
    assert "litert-model-prefill-flash-q512-kv128-chunk512-t1024-s1024" in ids
    assert "litert-model-decode-flash-q512-kv128-chunk512-t1-s1024" in ids
    assert not any("chunk" in case_id and "s256" in case_id for case_id in ids)
    assert "litert-model-prefill-standard-t256-s256" in ids and len(ids) == len(set(ids))


def test_chunked_prefill_runs_consecutive_positions_and_feeds_the_cache_back():
    """The LiteRT child's chunk loop, on a fake signature runner: positions 0..R-1, R..2R-1, ...,
    each call's kv_cache outputs are the next call's inputs."""
    from parity.bench._litert_child import _prefill_in_chunks

    calls = []

    def runner(tokens, input_pos, kv_cache_k_0, kv_cache_v_0):
        calls.append((input_pos.copy(), float(kv_cache_k_0[0]), float(kv_cache_v_0[0])))
        return {
            "logits": tokens * 1.0,
            "kv_cache_k_0": kv_cache_k_0 + 1,
            "kv_cache_v_0": kv_cache_v_0 + 2,
        }

    inputs = {"tokens": np.ones(4, np.int32), "input_pos": np.arange(4, dtype=np.int32),
              "kv_cache_k_0": np.zeros(1), "kv_cache_v_0": np.zeros(1)}  # fmt: skip
    outputs = _prefill_in_chunks(runner, inputs, chunks=3)
    assert [list(pos) for pos, _, _ in calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [(k, v) for _, k, v in calls] == [(0.0, 0.0), (1.0, 2.0), (2.0, 4.0)]
    assert outputs["kv_cache_k_0"][0] == 3.0 and inputs["kv_cache_k_0"][0] == 0.0


def test_whole_model_prefill_rows_carry_the_conversion_seconds():
    """conversion_s is a row of its own for model-prefill cases (the report's long-context targets)."""
    case = BenchCase("litert", "model-prefill", "flash", 2048, 2048, 512, 128, prefill_chunk=512)
    outcome = {"status": "measured", "peak_bytes": 2e9, "median_ms": 900.0,
               "conversion": {"cached": True, "seconds": 61.5}}  # fmt: skip
    rows = [json.loads(r.to_json()) for r in runner.case_rows(case, outcome)]
    assert {r["metric"]: r["value"] for r in rows}["conversion_s"] == 61.5
    assert bench_frame(rows).loc[0, "conversion_s"] == 61.5
