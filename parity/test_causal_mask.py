"""``edge_flash.causal_mask``: the causal mask computed from positions is litert-torch's cache.

The converted side (a .tflite whose mask is computed, run in LiteRT against
PyTorch) is ``parity/test_litert_runner.py``: the convert CLI computes the mask
by default.
"""

from __future__ import annotations

import pytest
import torch
from litert_torch.generative.layers import attention_utils

from edge_flash import TorchRunner, build_model
from edge_flash.causal_mask import CausalMaskRows, use_computed_causal_mask
from parity.random_checkpoints import write_tiny_random_llama_checkpoint

pytestmark = pytest.mark.quick

KV_LEN = 100


@pytest.mark.parametrize("size", [1, 2, 37, KV_LEN])
def test_rows_are_the_caches_rows_value_for_value(size):
    cache = attention_utils.build_causal_mask_cache(size)
    rows = CausalMaskRows(size)
    positions = torch.tensor([0, size - 1, size // 2, size // 2, 0], dtype=torch.int32)
    expected, got = cache.index_select(2, positions), rows.index_select(2, positions)
    assert rows.shape == cache.shape
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)
    assert torch.equal(torch.signbit(got), torch.signbit(expected))  # +0.0, never -0.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_random_llama_checkpoint(tmp_path_factory.mktemp("tiny"), tokenizer=False)


@pytest.mark.parametrize("flash", [False, True], ids=["standard", "flash"])
def test_a_model_gives_the_same_logits_bit_for_bit(checkpoint, flash):
    """Prefill of 9 tokens then 3 decode steps, mask cache vs computed mask."""
    cached = build_model(checkpoint, use_flash_attention=flash, mask_cache_size=KV_LEN)
    computed = use_computed_causal_mask(
        build_model(checkpoint, use_flash_attention=flash, mask_cache_size=KV_LEN)
    )
    assert isinstance(computed.mask_cache, CausalMaskRows)
    assert not any(b.numel() >= KV_LEN * KV_LEN for b in computed.buffers())
    runners = [TorchRunner(model, KV_LEN) for model in (cached, computed)]
    prompt = [5, 17, 3, 250, 9, 9, 100, 42, 7]
    outputs = [[runner.prefill(prompt)] for runner in runners]
    for token in (11, 12, 13):
        for runner, out in zip(runners, outputs):
            out.append(runner.decode(token))
    for a, b in zip(*outputs, strict=True):
        assert (a == b).all()


def test_refuses_a_model_without_a_causal_cache(checkpoint):
    model = build_model(checkpoint, mask_cache_size=0)
    with pytest.raises(ValueError, match="has no causal mask cache to replace.*mask_cache_size"):
        use_computed_causal_mask(model)
    model = build_model(checkpoint, mask_cache_size=8)
    model.mask_cache = torch.zeros(1, 1, 8, 8)  # not causal
    with pytest.raises(ValueError, match="is not a causal mask"):
        use_computed_causal_mask(model)


def test_selects_rows_only():
    with pytest.raises(ValueError, match="selects rows \\(dim 2\\), not dim 3"):
        CausalMaskRows(4).index_select(3, torch.tensor([0]))
    with pytest.raises(ValueError, match="size \\(0\\) must be an int >= 1"):
        CausalMaskRows(0)
