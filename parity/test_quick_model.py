"""The seed's 30-second test: a tiny random Llama with TinyLlama's attention shape.

32 heads, 4 KV heads, head_dim 64 on hidden 256, 2 layers, vocab 512, written
as a real HF checkpoint and built with ``edge_flash.build_model``. Covers the
forward pass with a KV cache, prefill then decode, greedy generation, and flash
against standard attention on the same weights, each against a float64 run of
the same model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_flash import TorchRunner, build_model
from edge_flash.logit_checks import LOGIT_BUDGETS, OWNER_ATOL, allowed_error, check_logits
from parity.random_checkpoints import write_tiny_random_llama_checkpoint

pytestmark = pytest.mark.quick

SEED = 0
KV_LEN = 64
PROMPT = [1, 57, 74, 67, 86, 223, 75, 85, 223, 67, 223, 86, 87, 84, 68, 81, 82, 33]  # 18 ids
DECODE_STEPS = 8
MODEL = "tiny-random-llama-n32g4h64"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # No tokenizer: the quick tests feed token ids, and writing one imports transformers (~3 s).
    directory = tmp_path_factory.mktemp("tiny_llama")
    return write_tiny_random_llama_checkpoint(directory, seed=SEED, tokenizer=False)


@pytest.fixture(scope="module")
def models(checkpoint):
    """Standard and flash models of the same checkpoint, plus the fp64 oracle runner."""
    standard = build_model(checkpoint, use_flash_attention=False)
    flash = build_model(checkpoint, use_flash_attention=True)
    return standard, flash


def _prefill_and_decode(model, dtype=torch.float32):
    """Prefill logits (T, V) and the logits of DECODE_STEPS greedy decode steps (steps, V)."""
    runner = TorchRunner(model, KV_LEN, dtype=dtype)
    prefill = runner.prefill(PROMPT)
    steps, last = [], prefill[-1]
    for _ in range(DECODE_STEPS):
        last = runner.decode(int(np.argmax(last)))
        steps.append(last)
    return prefill, np.stack(steps)


@pytest.fixture(scope="module")
def runs(models):
    standard, flash = models
    return {
        "standard": _prefill_and_decode(standard),
        "flash": _prefill_and_decode(flash),
        "oracle": _prefill_and_decode(standard, torch.float64),
    }


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_flash_matches_standard_within_owner_bound(runs, record_result, phase):
    """Flash and standard logits on the same weights differ by at most 1e-4 (issue 3)."""
    index = 0 if phase == "prefill" else 1
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{phase}",
        model=MODEL,
        legs="flash-vs-standard",
        actual=runs["flash"][index],
        expected=runs["standard"][index],
        tolerance=OWNER_ATOL,
        why="owner's bound for flash vs standard on the same weights",
        seed=SEED,
    )
    assert not message, message


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_flash_is_as_close_to_fp64_oracle_as_standard(runs, record_result, phase):
    """Against the fp64 run, flash's logit error stays within 2x the standard's (+ floor)."""
    index = 0 if phase == "prefill" else 1
    oracle = runs["oracle"][index]
    standard_error = float(np.abs(runs["standard"][index] - oracle).max())
    budget = LOGIT_BUDGETS["torch-flash"]
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{phase}",
        model=MODEL,
        legs="flash-vs-fp64",
        actual=runs["flash"][index],
        expected=oracle,
        tolerance=allowed_error(budget, standard_error, oracle),
        why=f"{budget.why}; standard's error {standard_error:.2e}",
        seed=SEED,
    )
    assert not message, message


@pytest.mark.parametrize("flash", [False, True], ids=["standard", "flash"])
def test_decode_one_token_equals_prefill_last_row(models, record_result, flash):
    """Prefill of prompt[:-1] then decode of prompt[-1] gives the full prefill's last row."""
    model = models[1] if flash else models[0]
    full = TorchRunner(model, KV_LEN).prefill(PROMPT)[-1]
    runner = TorchRunner(model, KV_LEN)
    runner.prefill(PROMPT[:-1])
    stepped = runner.decode(PROMPT[-1])
    # Same weights and positions; only the attention's query length differs
    # (T = 18 vs 1), which changes summation order: fp32 rounding of logits of
    # size ~1, far below the owner's 1e-4.
    message = check_logits(
        record_result,
        case_id=f"{MODEL}-{'flash' if flash else 'standard'}-decode-vs-prefill",
        model=MODEL,
        legs="decode-vs-prefill",
        actual=stepped,
        expected=full,
        tolerance=OWNER_ATOL,
        why="same computation with a different query length: fp32 rounding only",
        seed=SEED,
    )
    assert not message, message


def test_kv_cache_after_prefill_is_the_same_for_flash_and_standard(models):
    """Layer 0's cache after prefill is identical: attention does not feed it."""
    standard, flash = (TorchRunner(model, KV_LEN) for model in models)
    standard.prefill(PROMPT)
    flash.prefill(PROMPT)
    # Layer 0's K and V come from the embedding, norm and projections only,
    # which both models compute with the same ops: exactly equal.
    np.testing.assert_array_equal(flash.kv_cache()[0][0], standard.kv_cache()[0][0])
    np.testing.assert_array_equal(flash.kv_cache()[0][1], standard.kv_cache()[0][1])
    assert np.abs(flash.kv_cache()[0][0][0, : len(PROMPT)]).max() > 0  # The cache was written.
    assert np.abs(flash.kv_cache()[0][0][0, len(PROMPT) :]).max() == 0  # And only there.


def test_greedy_generation_is_identical_for_flash_standard_and_fp64(models):
    """Twelve greedy tokens: flash, standard and the fp64 oracle produce the same ids."""
    standard, flash = models
    expected = TorchRunner(standard, KV_LEN, torch.float64).generate(PROMPT, 12)
    assert TorchRunner(standard, KV_LEN).generate(PROMPT, 12) == expected
    assert TorchRunner(flash, KV_LEN).generate(PROMPT, 12) == expected
    assert len(expected) == 12


def test_forward_with_kv_cache_uses_the_mask_cache_like_an_explicit_mask(checkpoint):
    """A model with a mask cache, called without a mask, equals the runner's explicit mask."""
    from litert_torch.generative.layers import kv_cache as kv_utils

    model = build_model(checkpoint, use_flash_attention=True, mask_cache_size=KV_LEN)
    kv = kv_utils.KVCache.from_model_config(KV_LEN, model.config)
    tokens = torch.tensor([PROMPT], dtype=torch.int)
    with torch.no_grad():
        implicit = model(tokens, torch.arange(len(PROMPT), dtype=torch.int), kv)["logits"]
    explicit = TorchRunner(model, KV_LEN).prefill(PROMPT)
    # Same mask values (both from build_causal_mask_cache), same ops: bit-identical.
    np.testing.assert_array_equal(implicit[0].numpy(), explicit)
