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

``dynamic_int4_block32`` (``weight_block=32``) differs only in the weights:
int4 levels in [-8, 7] per block of 32 input columns, the block's scale
``max |w| / 7`` rounded through bfloat16 (ai-edge-quantizer's
``tensor_zp_scale_from_min_max`` for blockwise granularity). Each block's
product of integers is exact; the blocks' products are scaled and summed in
float, as the blockwise kernel does.
"""

from __future__ import annotations

import torch
from torch import nn

ROW_SCHEMES = ("asymmetric", "symmetric")
# litert-torch recipe -> the weights' block (None: int8 per output channel).
WEIGHT_BLOCK_OF = {"dynamic_int8": None, "dynamic_int4_block32": 32}


def quantize_weight_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 levels in [-127, 127] of shape (out, in), float64 scales of shape (out, 1))."""
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    levels = torch.round(weight / scale).clamp(-127, 127).to(torch.int64)
    return levels, scale


def quantize_weight_blockwise(
    weight: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 levels in [-8, 7] of shape (out, in / block, block), float64 scales of shape
    (out, in / block, 1)): int4 per block of ``block`` input columns.

    Raises:
      ValueError: the input dimension is not a multiple of ``block`` (the quantizer
        refuses such a weight too).
    """
    out_features, in_features = weight.shape
    if in_features % block:
        raise ValueError(f"input dimension {in_features} is not divisible by block size {block}")
    blocks = weight.reshape(out_features, in_features // block, block)
    scale = blocks.abs().amax(dim=-1, keepdim=True).clamp(min=1e-9) / 7
    scale = scale.to(torch.bfloat16).to(torch.float64)  # the quantizer's 7-bit mantissa
    levels = torch.round(blocks / scale).clamp(-8, 7).to(torch.int64)
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
    """``nn.Linear`` as a dynamic-range FULLY_CONNECTED computes it (module docstring):
    int8 weights per channel, or with ``weight_block`` int4 weights per block."""

    # Rows x blocks x outputs of integer products materialised at once (bounds memory
    # for a large output head under the Monte Carlo batch).
    _PRODUCTS_PER_CHUNK = 1 << 22

    def __init__(self, linear: nn.Linear, scheme: str, weight_block: int | None = None):
        super().__init__()
        if scheme not in ROW_SCHEMES:
            raise ValueError(f"row scheme {scheme!r} is none of {ROW_SCHEMES}")
        weight = linear.weight.detach()
        if weight_block is None:
            levels, scale = quantize_weight_per_channel(weight)
            levels, scale = levels.unsqueeze(1), scale.unsqueeze(1)  # one block per row
        else:
            levels, scale = quantize_weight_blockwise(weight, weight_block)
        self.register_buffer("weight_levels", levels)  # (out, blocks, block)
        self.register_buffer("weight_scale", scale.squeeze(-1).t().contiguous())  # (blocks, out)
        self.bias = linear.bias
        self.scheme = scheme
        # nn.Linear's interface, read by code that inspects layers (e.g. the oracle's dtype).
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels, row_scale = quantize_rows(x, self.scheme)
        shape = levels.shape
        out_features, blocks, block = self.weight_levels.shape
        rows = levels.reshape(-1, blocks, block)
        step = max(1, self._PRODUCTS_PER_CHUNK // (blocks * out_features))
        scaled = []
        for r0 in range(0, rows.shape[0], step):
            # Each block's product of integers is exact (int64), as in the int8 kernel.
            products = torch.einsum("rnk,onk->rno", rows[r0 : r0 + step], self.weight_levels)
            products = products.to(x.dtype) * self.weight_scale.to(x.dtype)  # (r, n, out)
            scaled.append(products[:, 0] if blocks == 1 else products.sum(dim=1))
        out = torch.cat(scaled).reshape(*shape[:-1], out_features) * row_scale
        return out if self.bias is None else out + self.bias


def emulate_dynamic_int8(
    model: nn.Module, scheme: str, weight_block: int | None = None
) -> nn.Module:
    """Replaces every ``nn.Linear`` of ``model`` (in place) by ``DynamicInt8Linear``; returns it.
    ``weight_block``: None for dynamic_int8, 32 for dynamic_int4_block32.

    Every ``nn.Embedding``'s rows are rounded to the recipe's weight levels (int8 with a
    scale per row, or int4 per block) and dequantized. A tied output head gets its own int8 copy, as in the converted file.

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
        setattr(parent, name, DynamicInt8Linear(child, scheme, weight_block))
    for embedding in [m for m in model.modules() if isinstance(m, nn.Embedding)]:
        weight = embedding.weight.detach()
        if weight_block is None:
            levels, scale = quantize_weight_per_channel(weight)
        else:  # int4 rows in blocks, as the file's EMBEDDING_LOOKUP(INT32,INT4)
            levels, scale = quantize_weight_blockwise(weight, weight_block)
        dequantized = (levels.to(scale.dtype) * scale).reshape(weight.shape)
        embedding.weight = nn.Parameter(dequantized, requires_grad=False)
    return model


def emulate_recipe(model: nn.Module, recipe: str, scheme: str) -> nn.Module:
    """``emulate_dynamic_int8`` with the weights of ``recipe`` (a key of ``WEIGHT_BLOCK_OF``).

    Raises:
      ValueError: a recipe that is not emulated.
    """
    if recipe not in WEIGHT_BLOCK_OF:
        raise ValueError(
            f"recipe {recipe!r} is not emulated; those emulated: {list(WEIGHT_BLOCK_OF)}"
        )
    return emulate_dynamic_int8(model, scheme, WEIGHT_BLOCK_OF[recipe])


def row_scheme(litert_xnnpack: bool, recipe: str = "dynamic_int8") -> str:
    """The input scheme of the FC kernel LiteRT runs for ``recipe``: for int8 weights
    XNNPACK's (asymmetric) or the builtin kernel's (symmetric); for int4 blocks
    asymmetric under both (measured: the builtin path's int4 FC matches the asymmetric
    emulation to 1e-7..7e-7, the symmetric one misses by 8e-2..1e-1)."""
    if WEIGHT_BLOCK_OF.get(recipe) is not None:
        return "asymmetric"
    return "asymmetric" if litert_xnnpack else "symmetric"
