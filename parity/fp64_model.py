"""The model-level float64 oracle: a re-authored litert-torch model lifted to float64.

``model.double()`` alone is not a float64 model. Three steps of litert-torch
0.10 stay in float32, and one is silently wrong, so ``to_float64`` fixes each on
this instance only (other instances and litert-torch itself are untouched):

- RMSNorm computes ``_norm(x.float())``: the normalisation runs in fp32 and is
  cast back. Each ``RMSNorm`` of the instance gets a float64 forward.
- RoPE tables come from ``config.build_rope``, which builds the frequencies in
  fp32. The instance's config gets a copy whose ``build_rope`` works in float64.
- The causal mask cache is a plain fp32 tensor attribute (``.double()`` skips
  it). torch 2.13's ``scaled_dot_product_attention`` with float64 q/k/v and an
  fp32 additive mask returns wrong values (measured: 3.0 max abs error on a
  5x16 case), so the mask cache is converted to float64.

The decoder families (``edge_flash.families``) add three more:

- Gemma 2 and Gemma 3 build RoPE by calling litert-torch's module function
  ``rotary_position_embedding.build_rope`` (fp32), not ``config.build_rope``.
  The instance's forward is wrapped so that, during its own call only, that
  function is the float64 one (a process-wide patch for the duration of the
  call: the harness runs one model at a time per process).
- Llama 3.2's ``config.build_rope`` is litert-torch's ``_build_llama3_rope_cache``
  (fp32 frequencies with the ``llama3`` scaling); it is replaced by the same
  computation in float64, with the same scaling parameters.
- Phi-3.5's and Phi-4's ``config.build_rope`` (LongRoPE with the short factors and
  a scale) likewise, with the same factors and scale.
- Gemma 2's sliding-window mask cache is a second fp32 tensor attribute;
  every ``*mask_cache`` tensor is converted.

A ``build_rope`` that is none of these raises: the oracle would silently keep
fp32 tables (or drop a scaling), and every leg would be judged against it.

Measured on SmolLM2-135M (37-token prompt): the lifted model agrees with the
HF model run in float64 to 1.9e-5 in the logits (HF keeps its RoPE in fp32
even in float64), while both fp32 models are ~9e-5 from it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn


def to_float64(model: nn.Module) -> nn.Module:
    """Converts a litert-torch ``DecoderOnlyModel`` to a float64 oracle, in place; returns it.

    Raises:
      TypeError: ``model`` has no ``config`` with ``build_rope`` (not a litert-torch model).
    """
    from litert_torch.generative.layers.normalization import RMSNorm

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "build_rope"):
        raise TypeError(
            f"model ({type(model).__name__}) must be a litert-torch DecoderOnlyModel"
            " (with config.build_rope)"
        )
    model.double()
    model.config = dataclasses.replace(config, build_rope=_rope_float64(config.build_rope))
    for name, value in list(vars(model).items()):
        if name.endswith("mask_cache") and isinstance(value, torch.Tensor):
            setattr(model, name, value.to(torch.float64))
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.forward = functools.partial(_rms_norm_float64, module)
    if _calls_module_rope(model):
        model.forward = _with_float64_module_rope(model.forward)
    return model


def _rope_float64(build_rope):
    """The float64 version of a litert-torch ``config.build_rope``.

    Raises:
      TypeError: a RoPE builder this module has no float64 version of.
    """
    from litert_torch.generative.layers import rotary_position_embedding

    if build_rope is rotary_position_embedding.build_rope:
        return build_rope_float64
    name = build_rope.func.__name__ if isinstance(build_rope, functools.partial) else None
    keywords = build_rope.keywords if name else {}
    if keywords.get("condense_ratio", 1) != 1:
        raise TypeError(
            f"{name} with condense_ratio {keywords['condense_ratio']} has no float64 version"
        )
    if name == "_build_llama3_rope_cache":
        scaling = ("factor", "low_freq_factor", "high_freq_factor", "max_seq_len")
        return functools.partial(build_llama3_rope_float64, **{k: keywords[k] for k in scaling})
    if name in ("_build_phi3_rope", "_build_phi4_rope"):
        factors = keywords["theta_factors"].to(torch.float64)
        return functools.partial(
            build_longrope_float64, theta_factors=factors, scale=keywords["scale"]
        )
    raise TypeError(
        f"config.build_rope ({build_rope!r}) has no float64 version in parity.fp64_model;"
        " add one (an fp32 RoPE table would make the oracle an fp32 model)"
    )


def _calls_module_rope(model: nn.Module) -> bool:
    """Whether the model's module calls ``rotary_pos_emb.build_rope`` itself (Gemma 2, 3)."""
    import sys

    module = sys.modules.get(type(model).__module__)
    return module is not None and hasattr(module, "rotary_pos_emb")


def _with_float64_module_rope(forward):
    from litert_torch.generative.layers import rotary_position_embedding

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        original = rotary_position_embedding.build_rope
        rotary_position_embedding.build_rope = build_rope_float64
        try:
            return forward(*args, **kwargs)
        finally:
            rotary_position_embedding.build_rope = original

    return wrapped


def build_rope_float64(input_pos: torch.Tensor, n_elem: int, base: int = 10_000):
    """litert-torch's ``build_rope`` computed in float64: cos, sin of shape (1, T, n_elem / 2)."""
    if n_elem <= 0:
        return None, None
    freq_exponents = (2.0 / n_elem) * torch.arange(n_elem // 2, dtype=torch.float64)
    timescale = float(base) ** freq_exponents
    positions = input_pos.to(torch.float64).unsqueeze(0).unsqueeze(-1)  # (1, T, 1)
    radians = positions / timescale.unsqueeze(0).unsqueeze(0)  # (1, T, n_elem / 2)
    return torch.cos(radians), torch.sin(radians)


def build_llama3_rope_float64(
    input_pos: torch.Tensor,
    n_elem: int,
    base: int,
    *,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    max_seq_len: int,
):
    """litert-torch's ``_build_llama3_rope_cache`` (Llama 3's frequency scaling) in float64.

    Returns cos, sin of shape (T, n_elem / 2), as litert-torch's does.
    """
    theta = 1.0 / (float(base) ** (torch.arange(0, n_elem, 2, dtype=torch.float64) / n_elem))
    low_freq_wavelen = max_seq_len / low_freq_factor
    high_freq_wavelen = max_seq_len / high_freq_factor
    wavelen = 2 * math.pi / theta
    theta = torch.where(wavelen > low_freq_wavelen, theta / factor, theta)
    smooth = (max_seq_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * theta / factor + smooth * theta
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    theta = torch.where(is_medium, smoothed, theta)
    radians = torch.outer(input_pos.to(torch.float64), theta)
    return torch.cos(radians), torch.sin(radians)


def build_longrope_float64(input_pos, n_elem: int, base: int, *, theta_factors, scale: float):
    """litert-torch's ``_build_phi3_rope`` / ``_build_phi4_rope`` (LongRoPE, short factors) in float64."""
    theta = 1.0 / (float(base) ** (torch.arange(0, n_elem, 2, dtype=torch.float64) / n_elem))
    radians = torch.outer(input_pos.to(torch.float64), theta / theta_factors)
    return torch.cos(radians) * scale, torch.sin(radians) * scale


def _rms_norm_float64(norm, x: torch.Tensor) -> torch.Tensor:
    """litert-torch's RMSNorm forward with every step in x's dtype (float64 here)."""
    weight = (1 + norm.weight) if norm.zero_centered_gamma else norm.weight
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    if norm.with_scale:
        out = out * (norm.scale + norm.scale_shift)
    return out * weight
