"""The decoder families litert-torch ships, and how an HF ``config.json`` maps onto each.

A ``Family`` names litert-torch's own example module for an architecture: its
model class, its tensor names (the HF safetensors names its loader reads) and a
``ModelConfig`` built from the checkpoint's ``config.json`` by starting from
that module's own config function and replacing the sizes. The structure
(norm kind, gated or sequential MLP, QK norm, qkv bias, softcaps, sliding-window
layers, partial rotary, the RoPE variant) is litert-torch's; only the numbers
come from the checkpoint, and every field that would change the structure is
checked against it (``ConfigMismatchError`` names the family and the field).

``family_for(hf)`` picks the family of an HF config by ``model_type`` (and, for
``phi3``, by ``partial_rotary_factor``: Phi-3.5 rotates every dimension, Phi-4-mini
three quarters; for ``llama``, Llama 3.2 by its ``llama3`` RoPE scaling); ``FAMILIES`` lists them all by name, so a caller may also name
the family (DeepSeek-R1-Distill-Qwen and Hammer are ``qwen2`` checkpoints built
by their own litert-torch modules).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
from collections.abc import Callable

import litert_torch.generative.layers.model_config as cfg

from edge_flash.hf_config import ConfigMismatchError, model_config_from_hf

_EXAMPLES = "litert_torch.generative.examples."


@dataclasses.dataclass(frozen=True)
class Family:
    """One litert-torch decoder family.

    Attributes:
      name: e.g. "qwen3", "gemma3".
      model_types: the HF ``model_type`` values it builds.
      module: litert-torch's example module (under ``litert_torch.generative.examples``).
      model_class: the module's model class.
      tensor_names: the module attribute holding its HF tensor names.
      template: the module's full-size config function the structure comes from.
      adapt: maps (template config, HF config, source) onto the checkpoint's sizes.
    """

    name: str
    model_types: tuple[str, ...]
    module: str
    model_class: str
    tensor_names: str
    template: str
    adapt: Callable[[cfg.ModelConfig, dict, str], cfg.ModelConfig]

    def litert_module(self):
        return importlib.import_module(_EXAMPLES + self.module)

    def model_config(self, hf: dict, source: str = "config.json") -> cfg.ModelConfig:
        """The litert-torch ``ModelConfig`` of this family with ``hf``'s sizes.

        Raises:
          ConfigMismatchError: a field of ``hf`` this family's re-authoring cannot honour.
        """
        template = getattr(self.litert_module(), self.template)()
        return self.adapt(copy.deepcopy(template), hf, f"{source} ({self.name})")

    def model_class_and_names(self):
        """(model class, TensorNames) of the litert-torch module."""
        module = self.litert_module()
        names = getattr(module, self.tensor_names)
        if isinstance(names, dict):  # Gemma modules: {"safetensors": ..., "kaggle": ...}
            names = names["safetensors"]
        return getattr(module, self.model_class), names

    def tensor_names_for(self, config: cfg.ModelConfig):
        """The module's tensor names, without ``lm_head`` when the head is the embedding
        (litert-torch's Qwen 3 names one even though its checkpoints tie it)."""
        names = self.model_class_and_names()[1]
        if config.lm_head_share_weight_with_embedding and names.lm_head is not None:
            names = dataclasses.replace(names, lm_head=None)
        return names


# ---- fields every family reads ---------------------------------------------


def _int(hf: dict, name: str, source: str) -> int:
    value = hf.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigMismatchError(f"{source}: {name} is {value!r}; expected a positive int")
    return value


def _expect(hf: dict, name: str, allowed, default, source: str, why: str) -> None:
    value = hf.get(name, default)
    if value not in allowed:
        raise ConfigMismatchError(f"{source}: {name} is {value!r}; {why} (expected {allowed})")


def _rope(hf: dict, layer_type: str | None = None) -> dict:
    """RoPE parameters of ``hf`` (transformers 5 ``rope_parameters`` or older flat fields)."""
    parameters = dict(hf.get("rope_parameters") or {})
    if layer_type is not None and layer_type in parameters:
        parameters = dict(parameters[layer_type])
    if hf.get("rope_scaling"):
        parameters = {**hf["rope_scaling"], **parameters}
    parameters.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    parameters.setdefault("rope_type", parameters.get("type", "default"))
    return parameters


def _base(theta) -> float | int:
    theta = float(theta)
    return int(theta) if theta.is_integer() else theta


def _default_rope(hf: dict, source: str, layer_type: str | None = None) -> float | int:
    parameters = _rope(hf, layer_type)
    if parameters["rope_type"] != "default":
        raise ConfigMismatchError(
            f"{source}: rope type is {parameters['rope_type']!r}; this family's litert-torch"
            " module implements only unscaled RoPE ('default')"
        )
    return _base(parameters["rope_theta"])


def _set_sizes(config: cfg.ModelConfig, hf: dict, source: str, blocks: list) -> cfg.ModelConfig:
    """Sets the model-level sizes and the given per-layer block configs."""
    hidden = _int(hf, "hidden_size", source)
    config.vocab_size = _int(hf, "vocab_size", source)
    config.num_layers = _int(hf, "num_hidden_layers", source)
    config.max_seq_len = int(hf.get("max_position_embeddings", config.max_seq_len))
    config.embedding_dim = hidden
    if config.embedding_scale is not None:  # Gemma: embeddings times sqrt(hidden)
        config.embedding_scale = hidden**0.5
    config.block_configs = blocks if len(blocks) > 1 else blocks[0]
    tied = bool(hf.get("tie_word_embeddings", config.lm_head_share_weight_with_embedding))
    if (
        tied != config.lm_head_share_weight_with_embedding
        and config.lm_head_share_weight_with_embedding
    ):
        raise ConfigMismatchError(
            f"{source}: tie_word_embeddings is {tied}; this family's litert-torch module"
            " always ties the LM head to the embedding"
        )
    config.lm_head_share_weight_with_embedding = tied
    return config


def _block(template: cfg.TransformerBlockConfig, hf: dict, source: str, eps_name: str):
    """A copy of ``template`` with the attention and MLP sizes and the norm epsilon of ``hf``."""
    block = copy.deepcopy(template)
    attn = block.attn_config
    heads = _int(hf, "num_attention_heads", source)
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ConfigMismatchError(
            f"{source}: num_attention_heads ({heads}) must be a multiple of"
            f" num_key_value_heads ({kv_heads})"
        )
    attn.num_heads = heads
    attn.num_query_groups = kv_heads
    attn.head_dim = int(hf.get("head_dim") or hf["hidden_size"] // heads)
    block.ff_config.intermediate_size = _int(hf, "intermediate_size", source)
    eps = float(hf.get(eps_name, 1e-6))
    for norm in _norm_configs(block):
        norm.epsilon = eps
    return block


def _norm_configs(block: cfg.TransformerBlockConfig) -> list:
    attn, ff = block.attn_config, block.ff_config
    norms = [
        block.pre_attention_norm_config,
        block.post_attention_norm_config,
        attn.query_norm_config,
        attn.key_norm_config,
        ff.pre_ff_norm_config,
        ff.post_ff_norm_config,
    ]
    return [n for n in norms if n is not None and n.type != cfg.NormalizationType.NONE]


def _final_norm_eps(config: cfg.ModelConfig, hf: dict, eps_name: str) -> None:
    config.final_norm_config = copy.deepcopy(config.final_norm_config)
    config.final_norm_config.epsilon = float(hf.get(eps_name, 1e-6))


# ---- the families -------------------------------------------------------------


def _uniform_family(*, act: str, act_field: str = "hidden_act", bias: bool | None = None):
    """A family with one block config for every layer (Qwen, Llama-like, Phi-3)."""

    def adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
        _expect(hf, act_field, (act,), act, source, "the family's MLP activation is fixed")
        if bias is not None:
            _expect(hf, "attention_bias", (bias,), bias, source, "qkv bias is fixed in the family")
        block = _block(config.block_config(0), hf, source, "rms_norm_eps")
        block.attn_config.rotary_base = _default_rope(hf, source)
        _final_norm_eps(config, hf, "rms_norm_eps")
        return _set_sizes(config, hf, source, [block])

    return adapt


def _gemma(act_field: str):
    """Gemma's adapter; transformers reads the MLP activation from ``act_field``
    (``hidden_act`` in Gemma 1, ``hidden_activation`` in Gemma 2 and 3)."""

    def adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
        _expect(
            hf, act_field, ("gelu_pytorch_tanh",), "gelu_pytorch_tanh", source,
            "litert-torch's Gemma MLP is GELU (tanh)",
        )  # fmt: skip
        return _gemma_adapt(config, hf, source)

    return adapt


def _gemma_adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
    """Gemma 1, 2 and 3: sliding and global layers from ``layer_types``; softcaps checked."""
    head_dim = int(hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"])
    scalar = hf.get("query_pre_attn_scalar", head_dim)
    if scalar != head_dim:
        raise ConfigMismatchError(
            f"{source}: query_pre_attn_scalar is {scalar!r}; litert-torch scales queries by"
            f" 1/sqrt(head_dim) (expected {head_dim})"
        )
    template = config.block_config(0)
    attn = template.attn_config
    _expect(hf, "attn_logit_softcapping", (attn.logit_softcap,), None, source,
            "the attention softcap is fixed in the family")  # fmt: skip
    _expect(hf, "final_logit_softcapping", (config.final_logit_softcap,), None, source,
            "the final softcap is fixed in the family")  # fmt: skip
    layers = _int(hf, "num_hidden_layers", source)
    layer_types = list(hf.get("layer_types") or ["full_attention"] * layers)
    if len(layer_types) != layers:
        raise ConfigMismatchError(
            f"{source}: layer_types has {len(layer_types)} entries for {layers} layers"
        )
    blocks = []
    for layer_type in layer_types:
        block = _block(template, hf, source, "rms_norm_eps")
        sliding = layer_type == "sliding_attention"
        if sliding and attn.attn_type is None:
            raise ConfigMismatchError(f"{source}: layer_types has sliding layers; Gemma 1 has none")
        if attn.attn_type is not None:
            block.attn_config.attn_type = (
                cfg.AttentionType.LOCAL_SLIDING if sliding else cfg.AttentionType.GLOBAL
            )
            block.attn_config.sliding_window_size = _int(hf, "sliding_window", source)
        block.attn_config.rotary_base = _default_rope(hf, source, layer_type)
        blocks.append(block)
    _final_norm_eps(config, hf, "rms_norm_eps")
    return _set_sizes(config, hf, source, blocks)


def _llama3_adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
    """Llama 3.2: the ``llama3`` RoPE scaling, whose parameters litert-torch reads from here."""
    rope = _rope(hf)
    if rope["rope_type"] != "llama3":
        raise ConfigMismatchError(
            f"{source}: rope type is {rope['rope_type']!r}; expected 'llama3'"
        )
    block = _block(config.block_config(0), hf, source, "rms_norm_eps")
    block.attn_config.rotary_base = _base(rope["rope_theta"])
    config.build_rope = functools.partial(
        config.build_rope.func,
        **{
            **config.build_rope.keywords,
            "factor": float(rope["factor"]),
            "low_freq_factor": float(rope["low_freq_factor"]),
            "high_freq_factor": float(rope["high_freq_factor"]),
            "max_seq_len": int(rope["original_max_position_embeddings"]),
        },
    )
    _final_norm_eps(config, hf, "rms_norm_eps")
    return _set_sizes(config, hf, source, [block])


def _phi2_adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
    """Phi-2: LayerNorm, parallel residual, partial rotary, qkv and LM-head biases."""
    _expect(hf, "hidden_act", ("gelu_new",), "gelu_new", source, "Phi-2's MLP is GELU (tanh)")
    _expect(hf, "qk_layernorm", (False,), False, source, "litert-torch's Phi-2 has no QK norm")
    rope = _rope(hf)
    block = _block(config.block_config(0), hf, source, "layer_norm_eps")
    block.attn_config.rotary_base = _default_rope(hf, source)
    block.attn_config.rotary_percentage = float(
        rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.5))
    )
    _final_norm_eps(config, hf, "layer_norm_eps")
    return _set_sizes(config, hf, source, [block])


def _phi3_adapt(module: str):
    """Phi-3.5 and Phi-4-mini: LongRoPE with litert-torch's fixed short-factor table.

    litert-torch's modules hard-code the full models' table (``ROPE_SHORT_FACTOR``),
    the ratio ``max_position_embeddings / original_max_position_embeddings``
    (``ROPE_SCALE_FACTOR``) and 4096 original positions, and always use the short
    factors (transformers does too up to the original length). A checkpoint is
    built only when its RoPE is exactly that; anything else is named.
    """

    def adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
        litert = importlib.import_module(_EXAMPLES + module)
        _expect(hf, "hidden_act", ("silu",), "silu", source, "Phi-3's MLP is SiLU-GLU")
        rope = _rope(hf)
        original = hf.get(
            "original_max_position_embeddings", rope.get("original_max_position_embeddings")
        )
        checks = {
            "rope type": (rope["rope_type"], "longrope"),
            "short_factor": (list(map(float, rope.get("short_factor") or [])),
                             list(map(float, litert.ROPE_SHORT_FACTOR))),
            "original_max_position_embeddings": (original, config.max_seq_len),
            "max_position_embeddings / original_max_position_embeddings": (
                hf.get("max_position_embeddings", 0) / (original or 1), litert.ROPE_SCALE_FACTOR),
        }  # fmt: skip
        for field, (value, expected) in checks.items():
            if value != expected:
                raise ConfigMismatchError(
                    f"{source}: {field} is {value!r}; litert-torch's module fixes it to"
                    f" {expected!r} (the full model's LongRoPE)"
                )
        block = _block(config.block_config(0), hf, source, "rms_norm_eps")
        block.attn_config.rotary_base = _base(rope["rope_theta"])
        block.attn_config.rotary_percentage = float(rope.get("partial_rotary_factor", 1.0))
        _final_norm_eps(config, hf, "rms_norm_eps")
        return _set_sizes(config, hf, source, [block])

    return adapt


def _make_divisible(value: float, divisor: int) -> int:
    """OpenELM's rounding of a layer's MLP width (its modeling_openelm.py, as litert-torch's)."""
    rounded = int(value + divisor / 2) // divisor * divisor
    return rounded + divisor if rounded < 0.9 * value else rounded


def _openelm_adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
    """OpenELM: per-layer query and KV head counts and MLP widths (its own config.json names)."""
    for name, expected in (("normalize_qk_projections", True), ("share_input_output_layers", True),
                           ("ffn_with_glu", True)):  # fmt: skip
        _expect(hf, name, (expected,), expected, source, "litert-torch's OpenELM is built so")
    layers = _int(hf, "num_transformer_layers", source)
    per_layer = {
        name: list(hf.get(name) or [])
        for name in ("num_query_heads", "num_kv_heads", "ffn_multipliers")
    }
    for name, values in per_layer.items():
        if len(values) != layers:
            raise ConfigMismatchError(
                f"{source}: {name} has {len(values)} entries for {layers} layers"
            )
    hidden, divisor = _int(hf, "model_dim", source), _int(hf, "ffn_dim_divisor", source)
    blocks = []
    for layer in range(layers):
        block = copy.deepcopy(config.block_config(0))
        heads, kv_heads = per_layer["num_query_heads"][layer], per_layer["num_kv_heads"][layer]
        if heads % kv_heads:
            raise ConfigMismatchError(
                f"{source}: layer {layer} has {heads} query heads for {kv_heads} KV heads"
            )
        block.attn_config.num_heads, block.attn_config.num_query_groups = heads, kv_heads
        block.attn_config.head_dim = _int(hf, "head_dim", source)
        block.attn_config.rotary_base = _base(hf.get("rope_freq_constant", 10000))
        block.ff_config.intermediate_size = _make_divisible(
            per_layer["ffn_multipliers"][layer] * hidden, divisor
        )
        blocks.append(block)
    sizes = {"hidden_size": hidden, "vocab_size": hf.get("vocab_size"), "num_hidden_layers": layers,
             "max_position_embeddings": hf.get("max_context_length", config.max_seq_len),
             "tie_word_embeddings": True}  # fmt: skip
    return _set_sizes(config, sizes, source, blocks)


def _llama_family(name: str, module: str, model_class: str, template: str) -> Family:
    """A Llama-architecture module (SmolLM, TinyLlama, AMD-Llama): ``hf_config``'s mapping."""

    def adapt(config: cfg.ModelConfig, hf: dict, source: str) -> cfg.ModelConfig:
        return model_config_from_hf(hf, source)

    return Family(name, ("llama",), module, model_class, "TENSOR_NAMES", template, adapt)


FAMILIES: tuple[Family, ...] = (
    Family("gemma1", ("gemma",), "gemma.gemma1", "Gemma1", "TENSOR_NAMES_DICT",
           "get_model_config_2b", _gemma("hidden_act")),
    Family("gemma2", ("gemma2",), "gemma.gemma2", "Gemma2", "TENSOR_NAMES_DICT",
           "get_model_config_2b", _gemma("hidden_activation")),
    Family("gemma3", ("gemma3_text",), "gemma3.decoder", "Decoder", "TENSOR_NAMES_DICT",
           "get_decoder_config_1b", _gemma("hidden_activation")),
    Family("qwen2.5", ("qwen2",), "qwen.qwen", "Qwen", "TENSOR_NAMES",
           "get_3b_model_config", _uniform_family(act="silu")),
    Family("deepseek", (), "deepseek.deepseek", "DeepSeekDistillQwen", "TENSOR_NAMES",
           "get_model_config", _uniform_family(act="silu")),
    Family("hammer", (), "hammer.hammer", "Hammer", "TENSOR_NAMES",
           "get_1_5b_model_config", _uniform_family(act="silu")),
    Family("qwen3", ("qwen3",), "qwen.qwen3", "Qwen3", "TENSOR_NAMES",
           "get_4b_model_config", _uniform_family(act="silu", bias=False)),
    Family("llama3.2", (), "llama.llama", "Llama", "TENSOR_NAMES",
           "get_1b_model_config", _llama3_adapt),
    Family("phi2", ("phi",), "phi.phi2", "Phi2", "TENSOR_NAMES",
           "get_model_config", _phi2_adapt),
    Family("phi3", ("phi3",), "phi.phi3", "Phi3_5Mini", "TENSOR_NAMES",
           "get_model_config", _phi3_adapt("phi.phi3")),
    Family("phi4", (), "phi.phi4", "Phi4Mini", "TENSOR_NAMES",
           "get_model_config", _phi3_adapt("phi.phi4")),
    Family("openelm", ("openelm",), "openelm.openelm", "OpenELM", "TENSOR_NAMES",
           "get_model_config", _openelm_adapt),
    _llama_family("smollm", "smollm.smollm", "SmolLM", "get_model_config"),
    _llama_family("tinyllama", "tiny_llama.tiny_llama", "TinyLlama", "get_model_config"),
    _llama_family("amd-llama-135m", "amd_llama_135m.amd_llama_135m", "AmdLlama", "get_model_config"),
)  # fmt: skip

# Families litert-torch 0.10 ships that this mapping does not build, and why.
UNMAPPED: dict[str, str] = {}

# Families built here whose Hugging Face model transformers does not have: no HF leg.
NO_HF_MODEL = {
    "openelm": "OpenELM's modeling code is remote code on the Hub (trust_remote_code);"
    " transformers has no OpenELM class, and nothing is downloaded here",
}


def family_named(name: str) -> Family:
    """The family called ``name``.

    Raises:
      ConfigMismatchError: no family has that name (names the known ones).
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    why = f": {UNMAPPED[name]}" if name in UNMAPPED else ""
    raise ConfigMismatchError(
        f"family {name!r} is not built{why}; known families: {[f.name for f in FAMILIES]}"
    )


def family_for(hf: dict, source: str = "config.json") -> Family | None:
    """The family of an HF config by its ``model_type``; None for plain Llama (``hf_config``).

    Raises:
      ConfigMismatchError: a ``model_type`` no family builds, naming it and the known ones.
    """
    model_type = hf.get("model_type")
    if model_type == "llama":
        return family_named("llama3.2") if _rope(hf)["rope_type"] == "llama3" else None
    if model_type == "phi3":  # Phi-4-mini rotates 3/4 of each head, Phi-3.5 all of it
        partial = float(
            _rope(hf).get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        )
        return family_named("phi3" if partial == 1.0 else "phi4")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = sorted({t for f in FAMILIES for t in f.model_types} | {"llama"})
    reason = UNMAPPED.get(str(model_type), "")
    raise ConfigMismatchError(
        f"{source}: model_type is {model_type!r} (architectures {hf.get('architectures')!r});"
        f" edge_flash builds {known}{': ' + reason if reason else ''}"
    )


def is_sliding(config: cfg.ModelConfig) -> bool:
    """Whether any layer of ``config`` attends through a sliding window."""
    return any(
        config.block_config(i).attn_config.attn_type == cfg.AttentionType.LOCAL_SLIDING
        for i in range(config.num_layers)
    )
