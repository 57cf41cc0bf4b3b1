"""Per-instance attention swapping for litert-torch models.

``use_attention(model, fn)`` makes every ``CausalSelfAttention`` of one model
instance call ``fn`` (the contract of ``edge_flash.flash_attention``) instead of
litert-torch's ``scaled_dot_product_attention``. Nothing global changes: each
attention module's class becomes ``RoutedCausalSelfAttention`` (a subclass, so
``isinstance`` checks still hold) and gets a registered submodule,
``attention_fn``, holding the function and its options. Other instances and
litert-torch itself are untouched.

State lives in registered modules on purpose: keeping the function in plain
dicts of copied module globals worked for non-strict ``torch.export`` but broke
strict export while Dynamo built guards (../shared/FACTS.md).

The routed forward is litert-torch 0.10's ``CausalSelfAttention.forward`` with
only the attention call changed; ``parity/test_integration.py`` checks that,
routed to litert-torch's own function, it reproduces the original bit for bit.

HLFB: the standard path (and the standard fallback of ``min_seq_q``) keeps
litert-torch's ``odml.scaled_dot_product_attention`` composite when the model
enables HLFB. The flash path is not wrapped in a composite; the measurement
behind that choice is in edge_flash/DECISIONS.md ("HLFB and the flash path").
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Tuple

import torch
from litert_torch.generative.layers import kv_cache as kv_utils
from litert_torch.generative.layers import rotary_position_embedding as rotary_pos_emb
from litert_torch.generative.layers import scaled_dot_product_attention as sdpa
from litert_torch.generative.layers.attention import CausalSelfAttention
from litert_torch.generative.layers.attention_utils import build_alibi_bias
from litert_torch.generative.layers.lora import apply_lora
from torch import nn

from edge_flash.kernel import flash_attention
from edge_flash.validation import check_block_size

AttentionFn = Callable[..., torch.Tensor]
_KERNEL_OPTIONS = ("q_block_size", "kv_block_size")


class AttentionFunction(nn.Module):
    """Holds the attention function of one attention layer (a registered submodule).

    Calls ``fn(q, k, v, head_size, mask=, softcap=, alibi_bias=, **options)``
    when the query length T is at least ``min_seq_q``, else litert-torch's
    standard function (with its HLFB composite if ``enable_hlfb``). T is static
    under ``torch.export``, so each exported signature contains one path.
    """

    def __init__(self, fn: AttentionFn, options: dict, min_seq_q: int, enable_hlfb: bool):
        super().__init__()
        self.fn = fn
        self.options = dict(options)
        self.min_seq_q = min_seq_q
        self.standard_fn = (
            sdpa.scaled_dot_product_attention_with_hlfb
            if enable_hlfb
            else sdpa.scaled_dot_product_attention
        )

    def uses_fn(self, seq_q: int) -> bool:
        """Whether a call with ``seq_q`` query rows goes to ``fn`` (else standard)."""
        return seq_q >= self.min_seq_q

    def forward(self, q, k, v, head_size: int, mask=None, softcap=None, alibi_bias=None):
        """q (B, T, N, H), k/v (B, S, G, H) -> (B, T, N, H)."""
        if self.uses_fn(q.shape[1]):
            return self.fn(
                q,
                k,
                v,
                head_size,
                mask=mask,
                softcap=softcap,
                alibi_bias=alibi_bias,
                **self.options,
            )
        return self.standard_fn(
            q, k, v, head_size, mask=mask, softcap=softcap, alibi_bias=alibi_bias
        )

    def extra_repr(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"fn={name}, options={self.options}, min_seq_q={self.min_seq_q}"


class RoutedCausalSelfAttention(CausalSelfAttention):
    """A ``CausalSelfAttention`` whose attention call goes through ``self.attention_fn``."""

    attention_fn: AttentionFunction

    def forward(
        self,
        x: torch.Tensor,
        rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
        kv_cache: Optional[kv_utils.KVCacheEntry] = None,
        lora=None,
    ):
        """x (B, T, D) -> (B, T, D), plus the updated KV cache entry if one was given."""
        batch, seq_q, _ = x.size()
        q, k, v, alibi_bias = _project_qkv(self, x, rope, mask, input_pos, lora)
        k, v, kv_cache = _update_kv_cache(kv_cache, input_pos, k, v)  # (B, S, G, H)
        out = self.attention_fn(
            q,
            k,
            v,
            self.config.head_dim,
            mask=mask,
            softcap=self.config.logit_softcap,
            alibi_bias=alibi_bias,
        )  # (B, T, N, H)
        out = out.reshape(batch, seq_q, -1)  # (B, T, N*H)
        y = self.output_projection(out)
        if lora is not None:
            y += apply_lora(out, lora.attention.output)
        return y if kv_cache is None else (y, kv_cache)


def use_attention(
    model: nn.Module, fn: AttentionFn, *, min_seq_q: int = 1, **fn_options
) -> nn.Module:
    """Makes every ``CausalSelfAttention`` of ``model`` call ``fn``; returns ``model``.

    Args:
      model: a litert-torch ``DecoderOnlyModel`` or any module tree holding
        ``CausalSelfAttention`` layers. Changed in place; other instances not.
      fn: ``fn(q, k, v, head_size, mask=None, scale=None, softcap=None,
        alibi_bias=None, **fn_options)`` with q (B, T, N, H), k/v (B, S, G, H),
        returning (B, T, N, H): the contract of ``edge_flash.flash_attention``.
      min_seq_q: calls with fewer query rows T use litert-torch's standard
        function instead (1 = always ``fn``). T is static at export, so an
        exported signature uses one path.
      fn_options: extra keyword arguments passed to every ``fn`` call.

    Calling it again replaces the previous function. Works with the default
    and the transposed KV-cache layout (the latter is read back as (B, S, G, H)).

    Raises:
      TypeError: if ``fn`` is not callable, does not accept ``fn_options``, or a
        layer is a ``CausalSelfAttention`` subclass this cannot route.
      ValueError: if ``model`` has no ``CausalSelfAttention`` or ``min_seq_q`` < 1.
    """
    if not callable(fn):
        raise TypeError(f"fn ({fn!r}) must be callable with the contract of flash_attention")
    if isinstance(min_seq_q, bool) or not isinstance(min_seq_q, int) or min_seq_q < 1:
        raise ValueError(f"min_seq_q ({min_seq_q!r}) must be an int >= 1")
    _check_accepts(fn, fn_options)
    layers = _attention_layers(model)
    for layer in layers:
        layer.__class__ = RoutedCausalSelfAttention
        layer.attention_fn = AttentionFunction(fn, fn_options, min_seq_q, layer.enable_hlfb)
    return model


def enable_flash_attention(model: nn.Module, *, min_seq_q: int = 1, **kernel_options) -> nn.Module:
    """``use_attention(model, flash_attention, ...)`` after checking the kernel options.

    Args:
      kernel_options: ``q_block_size`` / ``kv_block_size`` (positive ints).

    Raises:
      TypeError: on an unknown kernel option; ValueError on a bad block size.
    """
    for name, value in kernel_options.items():
        if name not in _KERNEL_OPTIONS:
            raise TypeError(
                f"unknown kernel option {name!r} ({value!r}); expected one of {_KERNEL_OPTIONS}"
            )
        check_block_size(name, value)
    return use_attention(model, flash_attention, min_seq_q=min_seq_q, **kernel_options)


def use_standard_attention(model: nn.Module) -> nn.Module:
    """Undoes ``use_attention``: every routed layer goes back to litert-torch's class."""
    for module in model.modules():
        if isinstance(module, RoutedCausalSelfAttention):
            del module.attention_fn
            module.__class__ = CausalSelfAttention
    return model


def attention_functions(model: nn.Module) -> list:
    """The ``AttentionFunction`` of every routed layer of ``model``, in module order."""
    return [m.attention_fn for m in model.modules() if isinstance(m, RoutedCausalSelfAttention)]


def _attention_layers(model: nn.Module) -> list:
    """The ``CausalSelfAttention`` layers of ``model``; refuses subclasses it cannot route."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model ({type(model).__name__}) must be a torch.nn.Module")
    layers = []
    for name, module in model.named_modules():
        if type(module) in (CausalSelfAttention, RoutedCausalSelfAttention):
            layers.append(module)
        elif isinstance(module, CausalSelfAttention):
            raise TypeError(
                f"layer {name!r} is a {type(module).__name__}, a CausalSelfAttention subclass"
                " with its own forward; only CausalSelfAttention layers can be routed"
            )
    if not layers:
        raise ValueError(
            f"model ({type(model).__name__}) has no CausalSelfAttention layer to route"
        )
    return layers


def _check_accepts(fn: AttentionFn, fn_options: dict) -> None:
    """Raises TypeError if ``fn`` cannot take the standard keywords plus ``fn_options``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # Builtins without a signature: the first call will tell.
    try:
        signature.bind(None, None, None, 1, mask=None, softcap=None, alibi_bias=None, **fn_options)
    except TypeError as error:
        raise TypeError(
            f"fn ({getattr(fn, '__qualname__', fn)!r}) does not accept"
            f" (q, k, v, head_size, mask=, softcap=, alibi_bias=, **{sorted(fn_options)}): {error}"
        ) from None


def _project_qkv(layer: CausalSelfAttention, x, rope, mask, input_pos, lora):
    """litert-torch 0.10's q/k/v projection, norms, ALiBi and RoPE (unchanged).

    x (B, T, D) -> q (B, T, N, H), k and v (B, T, G, H), alibi_bias or None.
    """
    config = layer.config
    batch, seq_q, _ = x.size()
    qkv = layer.qkv_projection(x)
    q_per_kv = config.num_heads // config.num_query_groups
    if config.qkv_transpose_before_split:
        qkv = qkv.view(batch, seq_q, -1, config.head_dim)  # (B, T, N+2G, H)
        sizes = (
            q_per_kv * config.num_query_groups,
            config.num_query_groups,
            config.num_query_groups,
        )
        q, k, v = qkv.split(sizes, dim=-2)
    else:
        qkv = qkv.view(batch, seq_q, config.num_query_groups, -1)  # (B, T, G, (R+2)*H)
        sizes = (q_per_kv * config.head_dim, config.head_dim, config.head_dim)
        q, k, v = qkv.split(sizes, dim=-1)
    if lora is not None:
        q += apply_lora(x, lora.attention.query, shape=q.shape)
        k += apply_lora(x, lora.attention.key, shape=k.shape)
        v += apply_lora(x, lora.attention.value, shape=v.shape)
    q, k, v = layer.query_norm(q), layer.key_norm(k), layer.value_norm(v)
    q = q.reshape(batch, seq_q, -1, config.head_dim)  # (B, T, N, H)
    k = k.reshape(batch, seq_q, -1, config.head_dim)  # (B, T, G, H)
    v = v.reshape(batch, seq_q, -1, config.head_dim)  # (B, T, G, H)
    alibi_bias = None
    if config.use_alibi:
        k_size = seq_q
        if mask is not None:
            k_size = mask.shape[-1]
        elif input_pos is not None:
            k_size = input_pos[-1].item() + 1
        alibi_bias = build_alibi_bias(
            n_heads=config.num_heads, k_size=k_size, dtype=x.dtype, device=x.device
        )
    elif rope is not None:
        cos, sin = rope
        q, k = rotary_pos_emb.apply_rope_inline(q, k, cos, sin)
    return q, k, v, alibi_bias


def _update_kv_cache(kv, input_pos, k, v):
    """Writes k, v (B, T, G, H) into the cache; returns the full k, v (B, S, G, H) and the entry.

    Without a cache the new k, v are the whole context. The transposed layout
    (k (B, G, S, H), v (B, G, H, S)) is updated as litert-torch's GPU path does
    (batch 1) and read back in the kernel's (B, S, G, H) layout.
    """
    if kv is None:
        return k, v, None
    if kv.kv_layout != kv_utils.KV_LAYOUT_TRANSPOSED:
        kv = kv_utils.update(kv, input_pos, k, v)
        return kv.k_cache, kv.v_cache, kv
    batch, seq_q, num_kv_heads, head_dim = k.shape
    k_new = k.permute(0, 2, 1, 3).reshape(1, -1, seq_q, head_dim)  # (1, B*G, T, H)
    v_new = v.permute(0, 2, 3, 1).reshape(1, -1, head_dim, seq_q)  # (1, B*G, H, T)
    kv = kv_utils.update_transposed(kv, input_pos, k_new, v_new)
    k_all = kv.k_cache.reshape(batch, num_kv_heads, -1, head_dim).transpose(1, 2)  # (B, S, G, H)
    v_all = kv.v_cache.reshape(batch, num_kv_heads, head_dim, -1).permute(
        0, 3, 1, 2
    )  # (B, S, G, H)
    return k_all, v_all, kv
