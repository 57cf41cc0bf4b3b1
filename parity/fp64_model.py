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

Measured on SmolLM2-135M (37-token prompt): the lifted model agrees with the
HF model run in float64 to 1.9e-5 in the logits (HF keeps its RoPE in fp32
even in float64), while both fp32 models are ~9e-5 from it.
"""

from __future__ import annotations

import dataclasses
import functools

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
    model.config = dataclasses.replace(config, build_rope=build_rope_float64)
    if getattr(model, "mask_cache", None) is not None:
        model.mask_cache = model.mask_cache.to(torch.float64)
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.forward = functools.partial(_rms_norm_float64, module)
    return model


def build_rope_float64(input_pos: torch.Tensor, n_elem: int, base: int = 10_000):
    """litert-torch's ``build_rope`` computed in float64: cos, sin of shape (1, T, n_elem / 2)."""
    if n_elem <= 0:
        return None, None
    freq_exponents = (2.0 / n_elem) * torch.arange(n_elem // 2, dtype=torch.float64)
    timescale = float(base) ** freq_exponents
    positions = input_pos.to(torch.float64).unsqueeze(0).unsqueeze(-1)  # (1, T, 1)
    radians = positions / timescale.unsqueeze(0).unsqueeze(0)  # (1, T, n_elem / 2)
    return torch.cos(radians), torch.sin(radians)


def _rms_norm_float64(norm, x: torch.Tensor) -> torch.Tensor:
    """litert-torch's RMSNorm forward with every step in x's dtype (float64 here)."""
    weight = (1 + norm.weight) if norm.zero_centered_gamma else norm.weight
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    if norm.with_scale:
        out = out * (norm.scale + norm.scale_shift)
    return out * weight
