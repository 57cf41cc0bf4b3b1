"""The converted flash TFLite model of a TinyLlama-shaped checkpoint, run in LiteRT.

One conversion per session (through the CLI, so its success path is tested
too): TinyLlama-1.1B's config.json fields with 2 layers and a 512-token vocab,
flash attention, prefill signatures of 16 and 64 tokens, KV cache 128, fp32.
Its prefill and decode logits are compared with the PyTorch flash model, both
measured against a float64 run of the same model; the runner's errors are
tested by text.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import torch

from edge_flash import LiteRTInputError, LiteRTModelError, LiteRTRunner, TorchRunner, build_model
from edge_flash.convert import main as convert_main
from edge_flash.logit_checks import LOGIT_BUDGETS, allowed_error, check_logits
from edge_flash.runtime import tflite_op_counts
from parity.random_checkpoints import write_tinyllama_shaped_checkpoint

pytestmark = pytest.mark.tflite

SEED = 0
KV_LEN = 128
PREFILL_LENS = (16, 64)
DECODE_STEPS = 8
MODEL = "tinyllama-shaped-2l"
# 10 ids use prefill_16 (padded), 40 ids use prefill_64: both signatures.
PROMPTS = {
    "ids-10": [int(i) for i in np.random.default_rng(SEED).integers(3, 512, size=10)],
    "ids-40": [int(i) for i in np.random.default_rng(SEED + 1).integers(3, 512, size=40)],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tinyllama")
    return write_tinyllama_shaped_checkpoint(directory, seed=SEED, tokenizer=False)


@pytest.fixture(scope="module")
def tflite_path(checkpoint, tmp_path_factory):
    """Converts through the CLI and returns the path it reports."""
    output = tmp_path_factory.mktemp("tflite")
    argv = ["--model", "auto", "--checkpoint_path", str(checkpoint), "--use_flash_attention=true"]
    argv += ["--prefill_seq_lens", *map(str, PREFILL_LENS), "--kv_cache_max_len", str(KV_LEN)]
    argv += ["--quantize", "none", "--output_path", str(output)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = convert_main(argv)
    assert status == 0
    line = stdout.getvalue().strip().splitlines()[-1]
    match = re.fullmatch(r"wrote (\S+\.tflite) in [\d.]+ s \(([\d.]+) MB; ops: (.*)\)", line)
    assert match, f"unexpected CLI summary: {line!r}"
    path = match.group(1)
    assert [p.name for p in output.iterdir()] == ["decoderonlymodel_flash_f32_ekv128.tflite"]
    return path


@pytest.fixture(scope="module")
def flash_model(checkpoint):
    return build_model(checkpoint, use_flash_attention=True)


def _legs(prompt, tflite_path, flash_model):
    """Prefill + greedy decode logits on LiteRT, PyTorch fp32 and PyTorch fp64."""
    legs = {
        "tflite": LiteRTRunner(tflite_path),
        "torch": TorchRunner(flash_model, KV_LEN),
        "fp64": TorchRunner(flash_model, KV_LEN, torch.float64),
    }
    results = {name: {"prefill": runner.prefill(prompt)} for name, runner in legs.items()}
    # Every leg decodes the oracle's greedy tokens, so the steps stay comparable.
    token = int(np.argmax(results["fp64"]["prefill"][-1]))
    steps = {name: [] for name in legs}
    for _ in range(DECODE_STEPS):
        for name, runner in legs.items():
            steps[name].append(runner.decode(token))
        token = int(np.argmax(steps["fp64"][-1]))
    for name in legs:
        results[name]["decode"] = np.stack(steps[name])
        results[name]["kv"] = legs[name].kv_cache()
    return results


@pytest.fixture(scope="module")
def runs(tflite_path, flash_model):
    return {name: _legs(prompt, tflite_path, flash_model) for name, prompt in PROMPTS.items()}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tflite_flash_logits_match_pytorch_within_error_model(runs, record_result, prompt, phase):
    """LiteRT's logits are within 4x PyTorch's fp32 error (+ 64 u |logits|) of the fp64 run."""
    legs = runs[prompt]
    oracle = legs["fp64"][phase]
    torch_error = float(np.abs(legs["torch"][phase] - oracle).max())
    budget = LOGIT_BUDGETS["tflite"]
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{prompt}-{phase}",
        model=MODEL,
        legs="tflite-flash-vs-fp64",
        actual=legs["tflite"][phase],
        expected=oracle,
        tolerance=allowed_error(budget, torch_error, oracle),
        why=f"{budget.why}; PyTorch flash error {torch_error:.2e}",
        seed=SEED,
    )
    assert not message, message


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tflite_kv_cache_matches_pytorch_on_written_slots(runs, prompt):
    """After prefill and decode, LiteRT's cache equals PyTorch's on every written slot."""
    written = len(PROMPTS[prompt]) + DECODE_STEPS
    for layer, ((k_lite, v_lite), (k_torch, v_torch)) in enumerate(
        zip(runs[prompt]["tflite"]["kv"], runs[prompt]["torch"]["kv"], strict=True)
    ):
        # K and V are projections of activations whose logits-level error the
        # test above bounds; 1e-4 absolute on values of size ~1 is that bound.
        np.testing.assert_allclose(
            k_lite[0, :written], k_torch[0, :written], rtol=0, atol=1e-4, err_msg=f"layer {layer} K"
        )
        np.testing.assert_allclose(
            v_lite[0, :written], v_torch[0, :written], rtol=0, atol=1e-4, err_msg=f"layer {layer} V"
        )


def test_tflite_greedy_generation_equals_pytorch(tflite_path, flash_model):
    """Greedy generation of 12 tokens gives the same ids in LiteRT and in PyTorch."""
    prompt = PROMPTS["ids-40"]
    expected = TorchRunner(flash_model, KV_LEN).generate(prompt, 12)
    assert LiteRTRunner(tflite_path).generate(prompt, 12) == expected


def test_flash_tflite_has_no_sdpa_composite(tflite_path):
    """The flash model holds no odml.scaled_dot_product_attention composite body."""
    counts = tflite_op_counts(tflite_path)
    assert set(PREFILL_LENS) <= {int(n.split("_")[1]) for n in counts if n.startswith("prefill_")}
    assert not any("scaled_dot_product_attention" in name for name in counts)
    assert counts["decode"]["BATCH_MATMUL"] > 0


def test_runner_errors_name_the_problem(tflite_path, tmp_path):
    """Missing or corrupt files and inputs the signatures cannot take: one clear line."""
    with pytest.raises(LiteRTModelError, match=f"model_path '{tmp_path}/none.tflite' does not"):
        LiteRTRunner(tmp_path / "none.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(LiteRTModelError, match="is not a valid TFLite model"):
        LiteRTRunner(corrupt)
    runner = LiteRTRunner(tflite_path)
    with pytest.raises(LiteRTInputError, match="prompt has 65 tokens; the longest prefill"):
        runner.prefill(list(range(65)))
    with pytest.raises(LiteRTInputError, match=r"token id 512 is outside the vocab \[0, 512\)"):
        runner.prefill([1, 512])
    with pytest.raises(LiteRTInputError, match="tokens is empty"):
        runner.prefill([])
    runner.prefill(list(range(64)))
    runner.prefill(list(range(60)))  # Positions 64..123 (padded to 64 rows: needs 128 slots).
    for _ in range(KV_LEN - 124):
        runner.decode(1)
    with pytest.raises(LiteRTInputError, match="decode at position 128 needs 129 KV slots"):
        runner.decode(1)
