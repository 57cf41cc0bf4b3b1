"""Dynamic-range int8 quantization (``dynamic_int8``) emulated on the float64 oracle.

``dynamic_int8`` makes every FULLY_CONNECTED of the converted graph read int8
weights (per output channel, symmetric) and quantize its float input row by row
at run time, then accumulate in int32 and scale back to float. That run-time
rounding of the activations to 255 levels is what makes two correct
implementations of the quantized model differ by far more than fp32 rounding:
an fp32-sized difference in an FC's input (flash's attention output vs
standard's) moves an element across a rounding boundary of its row now and then,
and that element then changes by a whole step, ``scale = range / 255``, about
1/127 of the row's largest value. A flash-vs-standard rule taken from the fp32
spread cannot hold under dynamic_int8 for any implementation (measured on
SmolLM2: 3000-3900x it).

``emulate_dynamic_int8(model)`` rewrites each ``nn.Linear`` of a float64 oracle
into that computation: weights rounded to int8 per output channel (scale
``max |w_c| / 127``, the quantizer's symmetric per-channel scheme), the input
quantized per row, the product of integers computed exactly (int64), and the two
scales applied in float. Run inside ``parity.rounding_noise`` every float step
gets its fp32 rounding error while the integer product stays exact, as in the
int8 kernel, so the noisy runs' spread (``parity.error_spread``) is the spread of
correct fp32 implementations *of the quantized model*. Its allowance bounds
flash vs standard under the recipe the way the fp32 spread bounds them in fp32.

The input's row quantization follows the kernel that runs it:

- ``asymmetric`` (XNNPACK's dynamically quantized FC, ``qd8``): the row's range
  ``[min(x, 0), max(x, 0)]`` on 255 steps with a zero point;
- ``symmetric`` (LiteRT's builtin hybrid FC, whose ``asymmetric_quantize_inputs``
  litert-torch leaves False): ``max |x| / 127``, no zero point.

The embedding table (EMBEDDING_LOOKUP of int8 rows, one scale per row) is a
lookup: its rows are rounded to int8 the same way and dequantized once, exactly.
"""

from __future__ import annotations

import torch
from torch import nn

ROW_SCHEMES = ("asymmetric", "symmetric")


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 levels in [-127, 127] of shape (out, in), float64 scales of shape (out, 1))."""
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = torch.round(weight / scale).clamp(-127, 127).to(torch.int64)
    return levels, scale


def quantize_rows(x: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 levels minus zero point, float scales (..., 1)) of ``x`` (..., K), per row.

    ``x ~ levels * scale``; the integer product with the weight levels is exact.
    """
    if scheme == "symmetric":
        scale = x.abs().amax(dim=-1, keepdim=True) / 127
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(x / scale).clamp(-127, 127).to(torch.int64), scale
    if scheme != "asymmetric":
        raise ValueError(f"row scheme {scheme!r} is none of {ROW_SCHEMES}")
    low = x.amin(dim=-1, keepdim=True).clamp(max=0)
    high = x.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = (high - low) / 255
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero_point = (-128 - torch.round(low / scale)).clamp(-128, 127).to(torch.int64)
    levels = (torch.round(x / scale).to(torch.int64) + zero_point).clamp(-128, 127)
    return levels - zero_point, scale


class DynamicInt8Linear(nn.Module):
    """``nn.Linear`` as the dynamic_int8 FULLY_CONNECTED computes it (module docstring)."""

    def __init__(self, linear: nn.Linear, scheme: str):
        super().__init__()
        if scheme not in ROW_SCHEMES:
            raise ValueError(f"row scheme {scheme!r} is none of {ROW_SCHEMES}")
        levels, scale = quantize_weight_per_channel(linear.weight.detach())
        self.register_buffer("weight_levels_t", levels.t().contiguous())  # (in, out)
        self.register_buffer("weight_scale", scale.reshape(-1))  # (out,)
        self.bias = linear.bias
        self.scheme = scheme
        # nn.Linear's interface, read by code that inspects layers (e.g. the oracle's dtype).
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels, row_scale = quantize_rows(x, self.scheme)
        shape = levels.shape
        products = torch.mm(levels.reshape(-1, shape[-1]), self.weight_levels_t)  # exact int64
        products = products.reshape(*shape[:-1], -1).to(x.dtype)
        out = products * (row_scale * self.weight_scale)
        return out if self.bias is None else out + self.bias


def emulate_dynamic_int8(model: nn.Module, scheme: str) -> nn.Module:
    """Replaces every ``nn.Linear`` of ``model`` (in place) by ``DynamicInt8Linear``; returns it.

    Every ``nn.Embedding``'s rows are rounded to int8 levels (a scale per row) and
    dequantized. A tied output head gets its own int8 copy, as in the converted file.

    Raises:
      ValueError: ``model`` has no ``nn.Linear`` (nothing the recipe would quantize).
    """
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear for dynamic_int8 to quantize")
    for parent, name, child in targets:
        setattr(parent, name, DynamicInt8Linear(child, scheme))
    for embedding in [m for m in model.modules() if isinstance(m, nn.Embedding)]:
        levels, scale = quantize_weight_per_channel(embedding.weight.detach())
        embedding.weight = nn.Parameter(levels.to(scale.dtype) * scale, requires_grad=False)
    return model


def row_scheme(litert_xnnpack: bool) -> str:
    """The input scheme of the FC kernel LiteRT runs: XNNPACK's, or the builtin one."""
    return "asymmetric" if litert_xnnpack else "symmetric"
