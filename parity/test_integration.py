"""``edge_flash.use_attention``: per-instance routing, fidelity to litert-torch, export.

The routed forward is a copy of litert-torch's ``CausalSelfAttention.forward``
with only the attention call changed; routed back to litert-torch's own
function it must reproduce the original bit for bit, for every attention
variant the original supports. A recording and a deliberately wrong kernel show
that a model calls the function it was given and that no other instance does.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from litert_torch.generative.layers import kv_cache as kv_utils
from litert_torch.generative.layers import lora as lora_utils
from litert_torch.generative.layers import scaled_dot_product_attention as sdpa
from litert_torch.generative.layers.attention import CausalSelfAttention
from litert_torch.generative.utilities.converter import ExportableModule
from litert_torch.generative.utilities.export_config import ExportConfig

from edge_flash import (
    AUTO_FLASH_MIN_SEQ_LEN,
    TorchRunner,
    attention_functions,
    enable_flash_attention,
    flash_attention,
    use_attention,
    use_standard_attention,
)
from edge_flash.builders import apply_attention_choice
from parity.compare import assert_close_to_oracle
from parity.tolerances import OWNER_BOUND
from parity.exact_random import exact_generator, normal
from parity.random_checkpoints import random_decoder_model, tiny_random_llama_config

SEED = 0
KV_LEN = 32
TOKENS = [5, 17, 300, 42, 7, 99, 128, 3, 64, 250]  # 10 ids < 512
MODEL = "tiny-random-llama-n32g4h64"


_BUILT = {}


def _model(**attn_changes):
    """A fresh copy of the seeded tiny Llama with ``attn_changes`` (built once per variant)."""
    key = tuple(sorted(attn_changes.items()))
    if key not in _BUILT:
        config = tiny_random_llama_config()
        attn = config.block_config(0).attn_config
        for name, value in attn_changes.items():
            setattr(attn, name, value)
        _BUILT[key] = random_decoder_model(config, seed=SEED)
    return copy.deepcopy(_BUILT[key])


def _lora(variant: "Variant", config):
    """Seeded LoRA weights N(0, 0.02) of ``variant.lora_rank`` (same on every CPU), or None."""
    if not variant.lora_rank:
        return None
    lora = lora_utils.LoRA.zeros(variant.lora_rank, config)
    generator = exact_generator(SEED)
    for tensor in torch.utils._pytree.tree_leaves(lora):
        tensor.copy_(0.02 * normal(tuple(tensor.shape), generator))
    return lora


def _forward(model, tokens=TOKENS, kv_layout=kv_utils.KV_LAYOUT_DEFAULT, lora=None, start=0):
    """Logits (T, V) of one call at positions [start, start + T) on a fresh cache."""
    kv = kv_utils.KVCache.from_model_config(KV_LEN, model.config, kv_layout=kv_layout)
    mask = torch.full((KV_LEN, KV_LEN), float("-inf")).triu(1)[None, None]  # (1, 1, S, S)
    input_pos = torch.arange(start, start + len(tokens), dtype=torch.int)
    with torch.no_grad():
        out = model(
            torch.tensor([tokens], dtype=torch.int),
            input_pos,
            kv,
            mask=mask.index_select(2, input_pos),
            lora=lora,
        )
    return out["logits"][0]


@dataclasses.dataclass(frozen=True)
class Variant:
    """An attention configuration litert-torch supports; case ids read like its name."""

    name: str
    attn_changes: tuple = ()
    kv_layout: tuple = kv_utils.KV_LAYOUT_DEFAULT
    lora_rank: int = 0


VARIANTS = [
    Variant("gqa-rope"),
    Variant("qkv-transpose-before-split", (("qkv_transpose_before_split", True),)),
    Variant("softcap", (("logit_softcap", 2.0),)),
    Variant("alibi", (("use_alibi", True),)),
    # litert-torch 0.10 sizes LoRA's query output as q_per_kv * head_dim, which
    # fits only one KV group: LoRA is exercised with MQA (num_query_groups 1).
    Variant("lora-mqa", (("num_query_groups", 1),), lora_rank=4),
    Variant("transposed-kv", kv_layout=kv_utils.KV_LAYOUT_TRANSPOSED),
]
# The transposed layout runs another litert-torch kernel (its GPU path), so it
# is compared numerically instead (test_transposed_kv_layout_matches_...).
DEFAULT_LAYOUT_VARIANTS = [v for v in VARIANTS if v.kv_layout == kv_utils.KV_LAYOUT_DEFAULT]


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.quick) if v.name == "gqa-rope" else v
        for v in DEFAULT_LAYOUT_VARIANTS
    ],
    ids=lambda v: v.name,
)
def test_routing_to_litert_sdpa_reproduces_litert_bit_for_bit(variant):
    """Routed to litert-torch's own SDPA, the routed forward equals the original exactly."""
    original = _model(**dict(variant.attn_changes))
    routed_fn = sdpa.scaled_dot_product_attention_with_hlfb
    routed = use_attention(copy.deepcopy(original), routed_fn)
    lora = _lora(variant, original.config)
    expected = _forward(original, lora=lora)
    actual = _forward(routed, lora=lora)
    assert torch.equal(actual, expected), (
        f"{variant.name}: routed forward differs from litert-torch's by"
        f" {(actual - expected).abs().max():.3e}; edge_flash.integration._project_qkv no"
        " longer mirrors litert_torch CausalSelfAttention.forward"
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_flash_matches_standard_for_every_attention_variant(variant, record_result):
    """Flash and standard logits agree within 1e-4 for GQA, softcap, ALiBi, LoRA, layouts."""
    standard = _model(**dict(variant.attn_changes))
    flash = enable_flash_attention(copy.deepcopy(standard), q_block_size=4, kv_block_size=8)
    lora = _lora(variant, standard.config)
    expected = _forward(standard, lora=lora, kv_layout=variant.kv_layout)
    actual = _forward(flash, lora=lora, kv_layout=variant.kv_layout)
    _assert_owner_bound(record_result, f"{MODEL}-{variant.name}-q4-kv8", actual, expected,
                        ("flash", "standard"))  # fmt: skip


def test_transposed_kv_layout_matches_the_default_layout(record_result):
    """Flash with the transposed (GPU) KV layout gives the default layout's logits and cache."""
    model = enable_flash_attention(_model())
    default = _forward(model)
    transposed = _forward(model, kv_layout=kv_utils.KV_LAYOUT_TRANSPOSED)
    # Same kernel, same values; only where K/V are stored differs: exact.
    assert torch.equal(transposed, default)
    litert_transposed = _forward(_model(), kv_layout=kv_utils.KV_LAYOUT_TRANSPOSED)
    _assert_owner_bound(record_result, f"{MODEL}-transposed-kv", transposed, litert_transposed,
                        ("flash", "litert-transposed"))  # fmt: skip


def _assert_owner_bound(record_result, case_id, actual, expected, names):
    """Flash vs standard logits within the owner's 1e-4, recorded as a result row."""
    assert_close_to_oracle(
        actual, expected, error_model=OWNER_BOUND, allowance=OWNER_BOUND.atol,
        names=(names[0], "", names[1]), case_id=case_id,
        on_result=lambda c: record_result(suite="parity", model=MODEL, seed=SEED,
                                          **c.record_fields()),
    )  # fmt: skip


def _recorder():
    calls = []

    def recording_attention(
        q, k, v, head_size, mask=None, scale=None, softcap=None, alibi_bias=None
    ):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return flash_attention(q, k, v, head_size, mask, scale, softcap, alibi_bias)

    return recording_attention, calls


@pytest.mark.quick
def test_recording_kernel_is_called_by_every_layer_of_its_model_only():
    """The routed model calls the kernel once per layer and call; a twin model never does."""
    recording, calls = _recorder()
    routed = use_attention(_model(), recording)
    twin = _model()
    runner = TorchRunner(routed, KV_LEN)
    runner.prefill(TOKENS)
    runner.decode(1)
    layers = routed.config.num_layers
    # (B, T, N, H) queries against the whole (B, S, G, H) cache, per layer.
    assert (
        calls
        == [((1, 10, 32, 64), (1, KV_LEN, 4, 64))] * layers
        + [((1, 1, 32, 64), (1, KV_LEN, 4, 64))] * layers
    )
    before = len(calls)
    TorchRunner(twin, KV_LEN).prefill(TOKENS)
    assert len(calls) == before, "a model that was not routed called the recording kernel"


@pytest.mark.quick
def test_wrong_kernel_takes_effect_in_its_model_and_nowhere_else():
    """A zero-returning kernel changes its model's logits; twin and new models are untouched."""
    original_forward = CausalSelfAttention.forward
    expected = _forward(_model())

    def zero_attention(q, k, v, head_size, mask=None, scale=None, softcap=None, alibi_bias=None):
        return torch.zeros_like(q)

    broken = use_attention(_model(), zero_attention)
    twin = _model()
    assert (_forward(broken) - expected).abs().max() > 1e-2  # The zeros were used.
    assert torch.equal(_forward(twin), expected)  # Same weights, standard path, bit-identical.
    assert CausalSelfAttention.forward is original_forward  # litert-torch's class is unchanged.
    assert type(_model().transformer_blocks[0].atten_func) is CausalSelfAttention


def test_use_standard_attention_restores_the_litert_layers():
    """Undoing the routing gives back litert-torch's class and bit-identical logits."""
    expected = _forward(_model())
    model = use_standard_attention(enable_flash_attention(_model()))
    assert type(model.transformer_blocks[0].atten_func) is CausalSelfAttention
    assert attention_functions(model) == []
    assert torch.equal(_forward(model), expected)


@pytest.mark.parametrize(
    "choice, min_seq_q", [(True, 1), ("auto", AUTO_FLASH_MIN_SEQ_LEN), (False, None)]
)
def test_use_flash_attention_choice_routes_every_layer(choice, min_seq_q):
    """True routes every layer to flash_attention, "auto" from the threshold, False none."""
    functions = attention_functions(apply_attention_choice(_model(), choice))
    if min_seq_q is None:
        assert functions == []
        return
    assert len(functions) == 2
    assert all(f.fn is flash_attention and f.min_seq_q == min_seq_q for f in functions)


@pytest.mark.quick
def test_min_seq_q_sends_short_calls_and_decode_to_the_standard_path():
    """With min_seq_q=8, a 10-token prefill calls the kernel; 4 tokens and decode do not."""
    recording, calls = _recorder()
    model = use_attention(_model(), recording, min_seq_q=8)
    runner = TorchRunner(model, KV_LEN)
    runner.prefill(TOKENS)
    assert len(calls) == 2
    runner.decode(1)
    runner.prefill(TOKENS[:4])
    assert len(calls) == 2


def test_export_config_without_prefill_logits_still_returns_only_the_cache():
    """Flash keeps litert-torch's export_config contract: no prefill logits unless asked."""
    model = enable_flash_attention(_model())
    kv = kv_utils.KVCache.from_model_config(KV_LEN, model.config)
    tokens = torch.tensor([TOKENS], dtype=torch.int)
    mask = torch.zeros(1, 1, len(TOKENS), KV_LEN)
    out = model(
        tokens, torch.arange(10, dtype=torch.int), kv, mask=mask, export_config=ExportConfig()
    )
    assert set(out) == {"kv_cache"}


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_flash_model_exports_and_matches_eager(strict):
    """torch.export (strict and non-strict) of a flash model runs and equals eager exactly."""
    model = enable_flash_attention(_model(), q_block_size=4, kv_block_size=8)
    export_config = ExportConfig(output_logits_on_prefill=True)
    module = ExportableModule(model, export_config=export_config)
    kwargs = dict(
        tokens=torch.tensor([TOKENS], dtype=torch.int),
        input_pos=torch.arange(10, dtype=torch.int),
        kv_cache=kv_utils.KVCache.from_model_config(KV_LEN, model.config),
        mask=torch.full((1, 1, 10, KV_LEN), float("-inf")).triu(1),
    )
    program = torch.export.export(module, (), kwargs, strict=strict)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.scaled_dot_product_attention.default" not in targets  # Flash, not SDPA.
    with torch.no_grad():
        exported = program.module()(**kwargs)["logits"]
        eager = module(**kwargs)["logits"]
    # The exported graph runs the same aten ops in the same order: bit-identical.
    assert torch.equal(exported, eager)


def test_standard_model_export_keeps_litert_sdpa():
    """The standard path still exports litert-torch's SDPA (the composite's body)."""
    module = ExportableModule(_model(), export_config=ExportConfig())
    kwargs = dict(
        tokens=torch.tensor([TOKENS[:1]], dtype=torch.int),
        input_pos=torch.tensor([0], dtype=torch.int),
        kv_cache=kv_utils.KVCache.from_model_config(KV_LEN, _model().config),
        mask=torch.zeros(1, 1, 1, KV_LEN),
    )
    program = torch.export.export(module, (), kwargs, strict=False)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "aten.scaled_dot_product_attention.default" in targets


def test_use_attention_rejects_bad_arguments_naming_them():
    """Bad fn, min_seq_q, model or kernel options raise errors that name the argument."""
    with pytest.raises(TypeError, match=r"fn \(42\) must be callable"):
        use_attention(_model(), 42)
    with pytest.raises(ValueError, match=r"min_seq_q \(0\) must be an int >= 1"):
        use_attention(_model(), flash_attention, min_seq_q=0)
    with pytest.raises(ValueError, match=r"model \(Linear\) has no CausalSelfAttention layer"):
        use_attention(torch.nn.Linear(2, 2), flash_attention)
    with pytest.raises(TypeError, match=r"unknown kernel option 'block' \(4\)"):
        enable_flash_attention(_model(), block=4)
    with pytest.raises(ValueError, match="kv_block_size"):
        enable_flash_attention(_model(), kv_block_size=0)
    with pytest.raises(TypeError, match=r"fn \('.*<lambda>'\) does not accept"):
        use_attention(_model(), lambda q, k, v, head_size: q, q_block_size=4)
    with pytest.raises(ValueError, match=r"use_flash_attention \('yes'\) must be True, False"):
        apply_attention_choice(_model(), "yes")
    assert np.isfinite(_forward(_model()).numpy()).all()  # The rejected calls changed nothing.
