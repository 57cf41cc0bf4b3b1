"""The conversion prefetcher: what it converts, that its files are the store's, and that
stopping it leaves nothing half-made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from parity import legs as L
from parity import prefetch
from parity.cases import ChainCase
from parity.chain import CONVERSION_LOG, TFLiteStore
from parity.file_lock import is_held
from parity.zoo import SMOLLM2, TINY_RANDOM, prepare

ROOT = Path(__file__).resolve().parents[1]


def _item(model, leg: str, skipped: bool = False):
    """A stand-in for a collected chain case (its ``case`` parameter and its skip mark)."""
    case = ChainCase(model, leg, model.prompts[0].name)
    mark = pytest.mark.skip(reason="x").mark if skipped else None
    return types.SimpleNamespace(
        callspec=types.SimpleNamespace(params={"case": case}),
        get_closest_marker=lambda name: mark if name == "skip" else None,
    )


def test_wanted_conversions_are_the_files_the_tflite_cases_read_in_first_use_order():
    """PyTorch legs and skipped cases need nothing; a chunked leg reads its one-shot leg's
    file; a quantized leg its recipe's; each file is listed once, where first needed."""
    items = [
        _item(TINY_RANDOM, L.STD),
        _item(TINY_RANDOM, L.TFLITE_FLASH),
        _item(SMOLLM2, L.TFLITE_STD_CHUNKED),
        _item(TINY_RANDOM, L.TFLITE_FLASH_CHUNKED),
        _item(TINY_RANDOM, L.quantized_leg("std", "dynamic_int8")),
        _item(TINY_RANDOM, L.quantized_leg("flash", "fp16"), skipped=True),
        types.SimpleNamespace(get_closest_marker=lambda name: None),  # no parameters
    ]
    assert prefetch.wanted_conversions(items) == [
        ("tiny-random-llama", "flash", "none"),
        ("smollm2-135m", "std", "none"),
        ("tiny-random-llama", "std", "dynamic_int8"),
    ]
    skip = [("tiny-random-llama", "flash", "none")]
    assert ("tiny-random-llama", "flash", "none") not in prefetch.wanted_conversions(items, skip)


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("1", True), ("0", False), ("false", False), ("No", False)]
)
def test_parity_prefetch_0_turns_the_prefetcher_off(value, on):
    environ = {} if value is None else {prefetch.PREFETCH_ENV: value}
    assert prefetch.enabled(environ) is on


def test_a_malformed_conversion_is_refused_with_the_expected_form():
    run = subprocess.run(
        [sys.executable, "-m", "parity.prefetch", "--cache", "x", "--conversions", "tiny:int8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    assert (
        "is not model:variant:recipe" in run.stderr and "tiny-random-llama:flash:none" in run.stderr
    )


@pytest.mark.tflite
def test_a_prefetched_file_is_the_one_the_test_process_store_reads(tmp_path):
    """Converted by the prefetcher's process, the file is found under the same key by a
    store in this process, which converts nothing."""
    cache = tmp_path / "tflite"
    command = [sys.executable, "-m", "parity.prefetch", "--cache", str(cache),
               "--conversions", "tiny-random-llama:std:none"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[1/1] tiny-random-llama std none: tiny-random-llama-std-" in run.stdout
    import edge_flash

    store = TFLiteStore(cache, edge_flash.flash_attention, "edge_flash:flash_attention")
    path = store.path(prepare(TINY_RANDOM, tmp_path / "work"), "std")
    assert path.is_file() and store.conversions == {}
    (line,) = (cache / CONVERSION_LOG).read_text().splitlines()
    assert json.loads(line)["file"] == path.name and json.loads(line)["pid"] != os.getpid()


@pytest.mark.tflite
def test_a_prefetcher_stopped_mid_conversion_leaves_no_file_scratch_or_held_lock(tmp_path):
    """SIGTERM while converting: the scratch directory is removed, no .tflite is left under
    the key (a half-made file never lands), and the lock is free for the tests."""
    cache = tmp_path / "tflite"
    cache.mkdir()
    process = prefetch.start(cache, [("tiny-random-llama", "flash", "none")],
                             "edge_flash:flash_attention", None, None)  # fmt: skip
    deadline = time.monotonic() + 600
    while not list(cache.glob(".tiny-random-llama-flash-*")):
        assert process.poll() is None, (cache / prefetch.LOG_NAME).read_text()[-3000:]
        assert time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.1)
    process.terminate()
    assert process.wait(timeout=300) == 128 + 15, (cache / prefetch.LOG_NAME).read_text()[-3000:]
    assert list(cache.glob(".tiny-random-llama-flash-*")) == []
    assert list(cache.glob("*.tflite")) == []
    (lock,) = cache.glob("*.tflite.lock")
    assert not is_held(lock)
