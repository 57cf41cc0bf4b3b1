"""Monte Carlo arithmetic: the float64 oracle rerun with the rounding errors of fp32.

A correct fp32 implementation of a network differs from the float64 oracle only
by rounding: every arithmetic operation rounds its result, every K-term sum
rounds K - 1 partial sums. ``Fp32RoundingNoise`` is a ``TorchDispatchMode``
that, while a float64 model runs inside it, gives every arithmetic result a
random error of exactly that size. A few such runs with different seeds show how
far a correct fp32 implementation of *this* network, on *these* inputs, may land
from the oracle: ``parity.error_spread`` turns the runs into a spread per row of
each compared tensor and ``parity.tolerances`` allows a fixed multiple of it.

The error of each kind of operation (u = 2**-24, fp32's unit roundoff; "U(a)" is
uniform on [-a, a], whose variance is a**2 / 3, exactly that of round-to-nearest
when the result is uniform within its binade interval):

- basic arithmetic (add, sub, mul, div, square), correctly rounded by IEEE 754:
  ``y (1 + U(u))``;
- transcendental functions (exp, tanh, sigmoid, silu, rsqrt, cos, sin, pow, ...):
  not correctly rounded; libm and XNNPACK's vector kernels stay within 2 ulp = 4 u
  of the exact result (XNNPACK documents its f32 kernels' ULP bounds; glibc's
  single-precision functions are within 1 ulp), so ``y (1 + U(4 u))``;
- a K-term dot product or sum (mm, bmm, addmm, sum, mean): the worst common
  order, one accumulator along K (XNNPACK's GEMM kernels do this; blocked and
  pairwise sums round less), with each product rounded too (no FMA). Its error
  sum_k d_k s_k + sum_k e_k p_k over partial sums s_k and products p_k has
  variance (u**2 / 3) (sum_k s_k**2 + sum_k p_k**2). For terms in random order,
  sum_k s_k**2 ~ K (sum p**2 / 6 + y**2 / 3) (y the total; the mean drift gives
  K y**2 / 3, the random walk K sum p**2 / 6), so the error is drawn from
  ``N(0, (u**2 / 3) (K (P / 6 + y**2 / 3) + P))`` with ``P = sum_k p_k**2``
  computed exactly (a second matmul of the squared operands). K terms of
  independent rounding make the sum Gaussian (central limit theorem);
- softmax: recomputed step by step from its input with the errors above (the
  shift by the row max rounds relative to |x - max|, which is what makes peaky
  fp32 softmax inexact);
- data movement (views, copies, cat, index, embedding, where, masked_fill,
  clamp, maximum, neg, abs) and rounding to an integer (``round``, which
  ``parity.quant_emulation`` uses for int8 levels): exact in every precision,
  left alone.

Any other floating operation raises ``UnmodelledOperationError``: a spread that
silently left an operation out would be too small and the gate would fail
correct models.

Errors are first order in u, which is what the rounding of a correct fp32
implementation is (second-order terms are ~u**2 relative). The noise is drawn
with ``torch.rand`` on a seeded generator (bit-identical on every CPU, unlike
``torch.randn``) through the inverse normal CDF where a Gaussian is needed.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

U32 = torch.finfo(torch.float32).eps / 2
# Transcendental functions: at most 2 ulp = 4 u from the exact result (see above).
TRANSCENDENTAL_UNITS = 4.0

_aten = torch.ops.aten


class UnmodelledOperationError(RuntimeError):
    """A floating-point operation that ``Fp32RoundingNoise`` has no error model for."""


def _ops(*names: str) -> frozenset:
    return frozenset(getattr(_aten, name) for name in names if hasattr(_aten, name))


# Results of these are exact in any precision (or integer / boolean).
_EXACT = _ops(
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "clone",
    "contiguous", "squeeze", "unsqueeze", "select", "slice", "narrow", "split", "split_with_sizes",
    "chunk", "unbind", "cat", "stack", "index", "index_select", "index_put", "index_put_",
    "index_copy", "index_copy_", "copy_", "_to_copy", "to", "detach", "alias", "lift_fresh",
    "embedding", "where", "masked_fill", "masked_fill_", "clamp", "clamp_min", "clamp_max",
    "maximum", "minimum", "max", "amax", "min", "amin", "argmax", "argmin", "neg", "abs",
    "zeros_like", "ones_like", "full_like", "empty_like", "zeros", "ones", "full", "empty",
    "arange", "scalar_tensor", "fill_", "zero_", "new_zeros", "new_ones", "new_empty",
    "new_full", "triu", "tril", "flip", "roll", "repeat", "repeat_interleave", "gather",
    "scatter", "_local_scalar_dense", "eq", "ne", "lt", "le", "gt", "ge", "logical_not",
    "logical_and", "logical_or", "isinf", "isnan", "isfinite", "bitwise_not", "sym_size",
    "expand_as", "view_as", "as_strided", "unfold", "topk", "sort", "diagonal", "lift_fresh_copy",
    "_reshape_alias", "slice_scatter", "select_scatter", "constant_pad_nd", "pad", "resize_",
    "set_", "item", "dim", "is_nonzero", "_assert_tensor_metadata", "bitwise_and", "bitwise_or",
    "type_as", "round",
)  # fmt: skip
# litert-torch's own operations: the KV cache write and the composite markers (no arithmetic).
_EXACT_NAMES = frozenset({"litert_torch::dynamic_update_slice", "litert_torch::mark_tensor"})
# Composite operations that reach the mode whole: run their decomposition inside it.
_DECOMPOSED = _ops(
    "scaled_dot_product_attention", "_scaled_dot_product_attention_math", "layer_norm"
)
# Kernels with no implicit decomposition: run torch's reference decomposition inside the mode
# (Phi-2's LayerNorm: a mean, a variance, rsqrt and an affine map, each op with its own model).
_TABLE_DECOMPOSED = _ops("native_layer_norm")
# Correctly rounded basic arithmetic: one rounding of the result.
_BASIC = _ops(
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "reciprocal", "sqrt",
    "square",
)  # fmt: skip
# Not correctly rounded: within TRANSCENDENTAL_UNITS u.
_TRANSCENDENTAL = _ops(
    "exp", "tanh", "sigmoid", "silu", "gelu", "rsqrt", "cos", "sin", "log", "erf", "pow",
    "pow_", "exp_", "tanh_", "log1p", "expm1",
)  # fmt: skip
_MATMULS = _ops("mm", "bmm", "matmul", "linear", "addmm", "baddbmm")
_REDUCTIONS = _ops("sum", "mean")
_SOFTMAX = _ops("_softmax", "softmax", "_safe_softmax")


class Fp32RoundingNoise(TorchDispatchMode):
    """Every float64 arithmetic result inside gets a random fp32-sized rounding error.

    Args:
      seed: seeds the noise; the same seed and inputs give the same results
        on every machine.
      unit_roundoff: the precision emulated (default fp32's u).

    Raises (from the model's forward, inside the mode):
      UnmodelledOperationError: a floating operation with no error model.
    """

    def __init__(self, seed: int, unit_roundoff: float = U32):
        super().__init__()
        self.unit_roundoff = unit_roundoff
        self.generator = torch.Generator().manual_seed(seed)
        # Squared weights, reused across calls: id -> (parameter, version, squares).
        self._squares: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _MATMULS:
            return self._matmul(func, args, kwargs)
        if packet in _SOFTMAX:
            probs = self._softmax(*args)
            if packet is _aten._safe_softmax:  # rows with every key at -inf give 0, not NaN
                dim = args[1]
                probs = torch.where(torch.isneginf(args[0]).all(dim, keepdim=True), 0.0, probs)
            return probs
        if packet in _DECOMPOSED:
            with self:
                return func.decompose(*args, **kwargs)
        if packet is _aten.var_mean:
            return self._var_mean(func, *args, **kwargs)
        if packet in _TABLE_DECOMPOSED:
            from torch._decomp import decomposition_table

            with self:
                return decomposition_table[func](*args, **kwargs)
        out = func(*args, **kwargs)
        if packet in _EXACT or packet._qualified_op_name in _EXACT_NAMES or _no_floats(out):
            return out
        if packet in _BASIC and isinstance(out, torch.Tensor):
            return self._relative(out, 1.0, in_place=packet._qualified_op_name.endswith("_"))
        if func is _aten.pow.Tensor_Scalar and args[1] == 2:
            return self._relative(out, 1.0, in_place=False)  # a square rounds once
        if packet in _TRANSCENDENTAL and isinstance(out, torch.Tensor):
            return self._relative(out, TRANSCENDENTAL_UNITS, in_place=False)
        if packet in _REDUCTIONS and isinstance(out, torch.Tensor):
            return self._reduction(func, packet, out, args, kwargs)
        raise UnmodelledOperationError(
            f"{func} has no fp32 error model in parity.rounding_noise; add it to the exact,"
            " basic, transcendental, matmul or reduction operations there"
        )

    # ---- noise draws -------------------------------------------------------

    def _uniform(self, like: torch.Tensor) -> torch.Tensor:
        """U(1) noise of ``like``'s shape: 2 rand - 1, from the CPU-independent generator."""
        return 2 * torch.rand(like.shape, generator=self.generator, dtype=torch.float64) - 1

    def _normal(self, like: torch.Tensor) -> torch.Tensor:
        """N(0, 1) noise by the inverse CDF of ``torch.rand`` (see the module docstring)."""
        uniform = torch.rand(like.shape, generator=self.generator, dtype=torch.float64)
        uniform = uniform.clamp(1e-16, 1 - 1e-16)
        return math.sqrt(2.0) * torch.special.erfinv(2 * uniform - 1)

    def _relative(self, out: torch.Tensor, units: float, in_place: bool) -> torch.Tensor:
        factor = 1 + units * self.unit_roundoff * self._uniform(out).to(out.dtype)
        if in_place:
            return out.mul_(factor)
        return out * factor

    def _accumulation(self, out: torch.Tensor, terms: int, squares: torch.Tensor) -> torch.Tensor:
        """``out`` plus the error of a one-accumulator ``terms``-term sum (module docstring)."""
        variance = (self.unit_roundoff**2 / 3) * (
            terms * (squares / 6 + out.square() / 3) + squares
        )
        return out + variance.sqrt() * self._normal(out).to(out.dtype)

    def _square(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor ** 2``; for parameters (weights) computed once per mode and version."""
        if not isinstance(tensor, torch.nn.Parameter):
            return tensor.square()
        cached = self._squares.get(id(tensor))
        if cached is None or cached[0] is not tensor or cached[1] != tensor._version:
            cached = (tensor, tensor._version, tensor.square())
            self._squares[id(tensor)] = cached
        return cached[2]

    # ---- operations with inner structure -----------------------------------

    def _matmul(self, func, args, kwargs):
        packet = func.overloadpacket
        out = func(*args, **kwargs)
        if not _is_float(out):
            return out
        if packet in (_aten.mm, _aten.bmm, _aten.matmul):
            first, second = args[0], args[1]
            squares = func(self._square(first), self._square(second))
            has_bias = False
        elif packet is _aten.linear:  # (x, weight, bias=None): x @ weight.T + bias
            first, second = args[0], args[1]
            squares = _aten.linear(self._square(first), self._square(second))
            has_bias = len(args) > 2 and args[2] is not None
        else:  # addmm / baddbmm (bias, a, b, beta=, alpha=)
            first, second = args[1], args[2]
            alpha = float(kwargs.get("alpha", 1))
            plain = _aten.mm if packet is _aten.addmm else _aten.bmm
            squares = plain(first.square(), second.square()) * alpha**2
            has_bias = True
        noisy = self._accumulation(out, first.shape[-1], squares)
        if has_bias:
            noisy = self._relative(noisy, 1.0, in_place=False)  # the bias add
        return noisy

    def _reduction(self, func, packet, out, args, kwargs):
        values = args[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(values.dim()))
        dims = [dims] if isinstance(dims, int) else list(dims)
        terms = math.prod(values.shape[d] for d in dims)
        keepdim = bool(args[2]) if len(args) > 2 else bool(kwargs.get("keepdim", False))
        squares = values.square().sum(dim=dims, keepdim=keepdim)
        if packet is _aten.mean:
            total = self._accumulation(out * terms, terms, squares)
            return self._relative(total / terms, 1.0, in_place=False)  # the division
        return self._accumulation(out, terms, squares)

    def _var_mean(self, func, x: torch.Tensor, dim=None, *rest, correction=None, keepdim=False):
        """Two-pass variance and mean (LayerNorm's), each step inside the mode with its model.

        ``var_mean.dim`` passes (dim, unbiased, keepdim) positionally; ``var_mean.correction``
        passes correction and keepdim by keyword.
        """
        if func._overloadname == "dim" and rest:
            correction = 1 if rest[0] else 0
            keepdim = rest[1] if len(rest) > 1 else keepdim
        dims = list(range(x.dim())) if dim is None else list(dim)
        count = math.prod(x.shape[d] for d in dims)
        correction = 1 if correction is None else correction
        with self:
            mean = x.mean(dims, keepdim=True)
            var = ((x - mean) * (x - mean)).sum(dims, keepdim=keepdim) / (count - correction)
        return var, (mean if keepdim else mean.squeeze(dims))

    def _softmax(self, values: torch.Tensor, dim: int, *_):
        row_max = values.amax(dim=dim, keepdim=True)
        shifted = self._relative(values - row_max, 1.0, in_place=False)
        exps = self._relative(shifted.exp(), TRANSCENDENTAL_UNITS, in_place=False)
        total = self._accumulation(
            exps.sum(dim=dim, keepdim=True), values.shape[dim], exps.square().sum(dim, True)
        )
        return self._relative(exps / total, 1.0, in_place=False)


def _is_float(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _no_floats(value) -> bool:
    """Whether an operation's result holds no floating tensor (integers, booleans, shapes)."""
    if isinstance(value, (tuple, list)):
        return all(_no_floats(item) for item in value)
    return not _is_float(value)


@contextlib.contextmanager
def fp32_rounding_noise(noise: Fp32RoundingNoise):
    """Runs the block inside ``noise`` with torch's math SDPA backend.

    The math backend spells attention out in matmuls and a softmax that the mode
    can see; the fused CPU kernel would be one opaque operation. One mode may be
    entered for many calls in turn: its generator and squared weights carry over.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), noise:
        yield
