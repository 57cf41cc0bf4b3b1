"""The sliding-window masks the suite draws are the ones Gemma decoders hand the kernel."""

from __future__ import annotations

import pytest
import torch
from litert_torch.generative.examples.gemma import gemma2
from litert_torch.generative.examples.gemma3 import decoder as gemma3_decoder
from litert_torch.generative.layers import kv_cache as kv_utils

from edge_flash import flash_attention, use_attention
from property_tests.window_masks import decoder_window_mask, window_kinds

# The fake configs' cache limit is max_seq_len = 256; their window is 64.
FAKE_CACHE = 256
FAKE_WINDOW = 64
# (T, offset) of a step: a prefill wrapping inside its block (T > window), a
# prefill with the cache in front of it, decode steps past and inside the window.
STEPS = [(100, 0), (16, 150), (1, 200), (1, 30)]
DECODERS = {
    "gemma2-window": lambda: gemma2.Gemma2(gemma2.get_fake_model_config(), FAKE_CACHE),
    "gemma3-window": lambda: gemma3_decoder.Decoder(
        gemma3_decoder.get_fake_decoder_config_1b(), FAKE_CACHE
    ),
}


def _first_layer_mask(family: str, seq_q: int, offset: int) -> torch.Tensor:
    """The mask the fake decoder's first (local, sliding-window) layer hands its attention call."""
    torch.manual_seed(0)
    model = DECODERS[family]()
    masks = []

    def recording_attention(q, k, v, head_size, mask=None, **options):
        masks.append(mask)
        return flash_attention(q, k, v, head_size, mask, **options)

    use_attention(model, recording_attention)
    kv_cache = kv_utils.KVCache.from_model_config(FAKE_CACHE, model.config)
    tokens = torch.zeros((1, seq_q), dtype=torch.int)
    input_pos = torch.arange(offset, offset + seq_q, dtype=torch.int)
    model(tokens, input_pos, kv_cache)
    assert model.config.block_config(0).attn_config.sliding_window_size == FAKE_WINDOW
    return masks[0]


@pytest.mark.parametrize("family", sorted(DECODERS))
@pytest.mark.parametrize("seq_q, offset", STEPS, ids=[f"t{t}-p{p}" for t, p in STEPS])
def test_window_mask_is_what_the_decoder_hands_its_local_layer(family, seq_q, offset):
    """decoder_window_mask equals, bit for bit, the mask a fake decoder's local layer receives."""
    expected = _first_layer_mask(family, seq_q, offset)
    actual = decoder_window_mask(family, seq_q, FAKE_CACHE, offset, FAKE_WINDOW, -float("inf"))
    assert actual.shape == expected.shape == (1, 1, seq_q, FAKE_CACHE)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("family", ["gemma2-window", "gemma3-window"])
@pytest.mark.parametrize("window", [1, 3, 7, 20])
def test_query_position_sees_exactly_the_keys_of_its_window(family, window):
    """Row i (at offset + i) sees keys offset + i - window < key <= offset + i, no other."""
    seq_q, seq_kv, offset = 6, 20, 9
    mask = decoder_window_mask(family, seq_q, seq_kv, offset, window, -float("inf"))[0, 0]
    positions = torch.arange(offset, offset + seq_q).view(-1, 1)  # (T, 1)
    keys = torch.arange(seq_kv).view(1, -1)  # (1, S)
    visible = (keys <= positions) & (keys > positions - window)
    assert torch.equal(mask == 0, visible)
    assert torch.isneginf(mask[~visible]).all()


def test_gemma3_masks_keys_below_the_window_with_its_causal_mask_value():
    """Gemma 3: keys below the window get causal_mask_value, keys above the diagonal -inf."""
    mask = decoder_window_mask("gemma3-window", 1, 10, 5, 2, -1e9)[0, 0, 0]
    assert mask.tolist() == [-1e9] * 4 + [0.0, 0.0] + [-float("inf")] * 4


def test_gemma2_window_mask_fills_with_its_mask_value():
    """Gemma 2: one mask_value below the window and above the diagonal."""
    mask = decoder_window_mask("gemma2-window", 1, 10, 5, 2, -1e9)[0, 0, 0]
    assert mask.tolist() == [-1e9] * 4 + [0.0, 0.0] + [-1e9] * 4


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("gemma4-window", 2, 10, 0, 2), "family ('gemma4-window') must be one of"),
        (("gemma2-window", 2, 10, 0, 0), "window (0) must be >= 1"),
        (("gemma3-window", 4, 10, 7, 2), "(7 .. 10) must lie in the cache of seq_kv (10) slots"),
    ],
)
def test_bad_window_mask_arguments_raise_naming_them(arguments, message):
    """An unknown family, a window < 1 or positions past the cache raise ValueError."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decoder_window_mask(*arguments, -float("inf"))


@pytest.mark.parametrize(
    "seq_q, offset, window, expected",
    [
        (5, 10, 3, {"cache-in-front", "wraps-in-block"}),
        (5, 10, 8, {"cache-in-front"}),
        (5, 10, 11, set()),  # the first row's window reaches slot 0: causal
        (5, 0, 3, {"wraps-in-block"}),
        (1, 10, 4, {"cache-in-front", "decode-past-window"}),
        (1, 10, 1, {"decode-past-window"}),
        (1, 10, 11, set()),
    ],
)
def test_window_kinds_name_where_the_window_cuts(seq_q, offset, window, expected):
    """window_kinds says whether the window starts in the cache, wraps in the block, or is a decode step past it."""
    assert window_kinds(seq_q, offset, window) == expected
