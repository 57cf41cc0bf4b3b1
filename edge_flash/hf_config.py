"""Mapping a Hugging Face Llama-family ``config.json`` onto litert-torch's ``ModelConfig``.

``model_config_from_hf`` reads the fields that define a Llama decoder (layers,
heads, KV heads, head_dim, RoPE base, RMSNorm epsilon, tied embeddings, vocab,
intermediate size, max positions) and refuses, naming the field, anything the
re-authored litert-torch model cannot honour: another ``model_type``, a RoPE
scaling, attention or MLP biases, an activation other than SiLU.

``architecture_fields`` gives the same fields, in HF names, for a
``ModelConfig``; the fixed-architecture builders (``edge_flash.tiny_llama``,
``edge_flash.smollm``) compare a checkpoint's ``config.json`` with their own
architecture through it and name every field that differs.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import litert_torch.generative.layers.model_config as cfg

LLAMA_MODEL_TYPES = ("llama",)
LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)
# HF LlamaConfig defaults for fields a config.json may omit.
_HF_DEFAULTS = {
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
}
# RMSNorm epsilons stored in GGUF files are float32 (1e-5 -> 9.99999975e-06);
# relative differences below this are the same epsilon.
_EPS_REL_TOL = 1e-6


class ConfigMismatchError(ValueError):
    """A config.json does not describe a model the builder can build."""


def model_config_from_hf(hf: dict, source: str = "config.json") -> cfg.ModelConfig:
    """litert-torch ``ModelConfig`` of a Llama-family HF config.

    Args:
      hf: the parsed config.json.
      source: how to name the config in errors (its path).

    Raises:
      ConfigMismatchError: naming the first field that does not map (model_type,
        architectures, rope_scaling, attention_bias, mlp_bias, hidden_act, a
        missing required field, a head count that does not divide).
    """
    fields = architecture_fields_of_hf(hf, source)
    attn_config = cfg.AttentionConfig(
        num_heads=fields["num_attention_heads"],
        head_dim=fields["head_dim"],
        num_query_groups=fields["num_key_value_heads"],
        rotary_base=fields["rope_theta"],
        rotary_percentage=1.0,
    )
    ff_config = cfg.FeedForwardConfig(
        type=cfg.FeedForwardType.GATED,
        activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
        intermediate_size=fields["intermediate_size"],
    )
    norm_config = cfg.NormalizationConfig(
        type=cfg.NormalizationType.RMS_NORM, epsilon=fields["rms_norm_eps"]
    )
    block_config = cfg.TransformerBlockConfig(
        attn_config=attn_config,
        ff_config=ff_config,
        pre_attention_norm_config=norm_config,
        post_attention_norm_config=norm_config,
    )
    return cfg.ModelConfig(
        vocab_size=fields["vocab_size"],
        num_layers=fields["num_hidden_layers"],
        max_seq_len=int(hf.get("max_position_embeddings", _HF_DEFAULTS["max_position_embeddings"])),
        embedding_dim=fields["hidden_size"],
        block_configs=block_config,
        final_norm_config=norm_config,
        lm_head_share_weight_with_embedding=fields["tie_word_embeddings"],
    )


def architecture_fields_of_hf(hf: dict, source: str = "config.json") -> Dict[str, object]:
    """The architecture-defining fields of an HF config, in HF names, after checks.

    Raises:
      ConfigMismatchError: as ``model_config_from_hf``.
    """
    _check_family(hf, source)
    for name in ("attention_bias", "mlp_bias"):
        if hf.get(name):
            raise ConfigMismatchError(
                f"{source}: {name} is {hf[name]!r}; the litert-torch Llama builder has no"
                f" {name.replace('_', ' ')} (expected false)"
            )
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigMismatchError(f"{source}: hidden_act is {hf['hidden_act']!r}; expected 'silu'")
    fields = {
        name: _required_int(hf, name, source)
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        )
    }
    heads = fields["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ConfigMismatchError(
            f"{source}: num_attention_heads ({heads}) must be a multiple of"
            f" num_key_value_heads ({kv_heads})"
        )
    fields["num_key_value_heads"] = int(kv_heads)
    fields["head_dim"] = int(hf.get("head_dim") or fields["hidden_size"] // heads)
    fields["rope_theta"] = _rope_theta(hf, source)
    fields["rms_norm_eps"] = float(hf.get("rms_norm_eps", _HF_DEFAULTS["rms_norm_eps"]))
    tied = hf.get("tie_word_embeddings", _HF_DEFAULTS["tie_word_embeddings"])
    fields["tie_word_embeddings"] = bool(tied)
    fields["hidden_act"] = "silu"
    return fields


def architecture_fields(config: cfg.ModelConfig) -> Dict[str, object]:
    """The fields ``architecture_fields_of_hf`` reads, for a litert-torch Llama ``ModelConfig``."""
    block = config.block_config(0)
    attn = block.attn_config
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.embedding_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": attn.num_heads,
        "intermediate_size": block.ff_config.intermediate_size,
        "num_key_value_heads": attn.num_query_groups,
        "head_dim": attn.head_dim,
        "rope_theta": attn.rotary_base,
        "rms_norm_eps": block.pre_attention_norm_config.epsilon,
        "tie_word_embeddings": config.lm_head_share_weight_with_embedding,
        "hidden_act": "silu",
    }


def check_matches(hf: dict, config: cfg.ModelConfig, model_name: str, source: str) -> None:
    """Raises naming every architecture field of ``hf`` that differs from ``config``.

    Raises:
      ConfigMismatchError: e.g. "config.json '/x' does not match TinyLlama-1.1B:
        num_hidden_layers is 2 (expected 22); vocab_size is 256 (expected 32000)".
    """
    try:
        actual = architecture_fields_of_hf(hf, source)
    except ConfigMismatchError as error:
        raise ConfigMismatchError(f"{error} (building {model_name})") from None
    expected = architecture_fields(config)
    differences = [
        f"{name} is {actual[name]!r} (expected {want!r})"
        for name, want in expected.items()
        if not _same(actual[name], want)
    ]
    if differences:
        raise ConfigMismatchError(
            f"{source} does not match {model_name}: {'; '.join(differences)};"
            " use edge_flash.build_model for other Llama-family checkpoints"
        )


def _check_family(hf: dict, source: str) -> None:
    model_type = hf.get("model_type")
    if model_type not in LLAMA_MODEL_TYPES:
        raise ConfigMismatchError(
            f"{source}: model_type is {model_type!r} (architectures"
            f" {hf.get('architectures')!r}); expected a Llama-family model (model_type 'llama')"
        )
    architectures = hf.get("architectures")
    if architectures and not set(architectures) & set(LLAMA_ARCHITECTURES):
        raise ConfigMismatchError(
            f"{source}: architectures is {architectures!r}; expected {list(LLAMA_ARCHITECTURES)}"
        )


def _rope_theta(hf: dict, source: str):
    """RoPE base from ``rope_theta`` or transformers 5's ``rope_parameters``; no scaling."""
    parameters = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for name, spec in (("rope_scaling", scaling), ("rope_parameters", parameters)):
        rope_type = spec.get("rope_type", spec.get("type", "default"))
        if rope_type != "default":
            raise ConfigMismatchError(
                f"{source}: {name} has rope_type {rope_type!r}; litert-torch's Llama builder"
                " implements only unscaled RoPE (rope_type 'default')"
            )
    theta = parameters.get("rope_theta", hf.get("rope_theta", _HF_DEFAULTS["rope_theta"]))
    theta = float(theta)
    return int(theta) if theta.is_integer() else theta


def _required_int(hf: dict, name: str, source: str) -> int:
    value = hf.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigMismatchError(f"{source}: {name} is {value!r}; expected a positive int")
    return value


def _same(actual: object, expected: Optional[object]) -> bool:
    if isinstance(actual, float) or isinstance(expected, float):
        return math.isclose(float(actual), float(expected), rel_tol=_EPS_REL_TOL)
    return actual == expected
