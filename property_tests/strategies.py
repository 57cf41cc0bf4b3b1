"""Hypothesis strategies for attention cases, and the inputs each case stands for.

A case is an ``AttentionCase``: a small frozen record of shapes, mask kind,
options, magnitudes, block sizes and a seed. ``make_inputs(case)`` turns it
into tensors deterministically, so a case id names an exact input, a failing
case can be pinned with ``@example(case=AttentionCase(...))``, and hypothesis
shrinks over readable fields rather than raw tensors. The tensors are drawn
by ``parity.exact_random`` (integer arithmetic only), so a case names the same
bytes on every CPU and a derandomized run tests the same inputs everywhere;
``torch.randn`` differs in the last bits between CPU vector widths.

About one case in eight is long: S past 512 (where the project recommends
flash, so where it must be right), up to 2048 in every profile, and under
``thorough`` also 2051 and 2304, past the longest default cache. Long cases
get their own work limit, smaller outside ``thorough`` (``long_work_limit``);
``long_lengths`` reads the current profile at draw time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
from hypothesis import settings
from hypothesis import strategies as st
from litert_torch.generative.layers.attention_utils import build_alibi_bias

from parity.exact_random import ExactGenerator, exact_generator, integers, normal, uniform
from property_tests.window_masks import WINDOW_MASKS, decoder_window_mask, window_sizes

# Mask kinds. All but "none", "random" and "bidirectional" are causal at the
# cache offset: query row i sits at position offset + i and sees keys <= it.
MASK_KINDS = (
    "none",  # mask=None: litert's top-left causal
    "causal",  # explicit causal mask at the cache offset
    "pad-left",  # causal, and each batch row's first keys are padding
    "pad-right",  # causal, and each batch row's keys past its length are padding
    "gemma2-window",  # sliding window, built by Gemma 2's code (property_tests/window_masks.py)
    "gemma3-window",  # sliding window, built by Gemma 3's code
    "random",  # random visible pattern with random additive values (not causal)
    "full-rows",  # causal, with some query rows masked entirely
    "bidirectional",  # all keys visible (zeros)
)
# Broadcast shapes of the mask, as litert-torch models build them.
MASK_SHAPES = ("b1ts", "bnts", "11ts", "ts", "1nts")
# How masked entries are filled: -inf, or the finite large negatives models use.
MASK_FILLS = ("-inf", "-1e9", "min")
# Head sizes of real models, and odd ones.
HEAD_DIMS = (32, 64, 80, 96, 128, 256, 1, 7, 33, 65)
# Standard deviation of the raw logits scale * q.k, by name. "large" is the
# edge of the owner's 1e-4: torch's SDPA stayed under it (5.4e-5 at logit std 16,
# values std 2), but at H = 256 fp32 rounding alone allows more (edge_flash
# measured 1.05e-4, 0.41 of its rounding floor), so there the gate enforces the
# derived allowance, not the cap (parity.compare._owner_capped); "huge" is for
# the no-NaN test.
LOGIT_SCALES = {"tiny": 1e-3, "unit": 1.0, "peaky": 4.0, "large": 16.0}
HUGE_LOGIT_SCALES = {"100": 1e2, "1e3": 1e3, "1e4": 1e4}
VALUE_SCALES = (1.0, 0.01, 2.0)
SOFTCAPS = (None, 30.0, 5.0, 50.0)
SCALES = (None, 0.05, 0.3, 1.0)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Sequence lengths. Short cases: T and S up to SHORT_LEN. Long cases (one in
# LONG_CASE_ODDS): S in (LONG_MIN_LEN - 1, 2048], drawn at the edges in
# LONG_EDGES or anywhere between; thorough adds THOROUGH_LENGTHS.
SHORT_LEN = 160
LONG_CASE_ODDS = 8
# 512 is where the project recommends flash; a path taken only past it must be
# tested past it, and 513 is the first length that takes it.
LONG_MIN_LEN = 513
LONG_MAX_LEN = 2048
# Edges of the default blocks (q 256, kv 128) and of powers of two: one past
# 512, a whole number of kv blocks and one key past it, one short of 2048.
LONG_EDGES = (513, 640, 641, 1024, 1025, 1537, 2047, 2048)
# thorough only: 2048 and past it, dividing the default blocks or not.
THOROUGH_LENGTHS = (2048, 2051, 2304)
# Largest B * N * T * S * H per case: the float64 oracle holds several
# (B, N, T, S) tensors, does B * N * T * S * H multiply-adds a few times and the
# hull test builds (B, N, T, S, H) temporaries. 2**24 (e.g. B1 N8 T128 S128
# H128) keeps one short example near 0.2 s on one core.
WORK_LIMIT = 2**24
# Long cases, by profile. thorough: 2**29, e.g. B1 N4 G2 T=S=2048 H32, 134 MB
# per score tensor, ~2-4 s per example on one core. Every other profile (ci
# runs every property on each commit, twice counting the teeth test's run):
# WORK_LIMIT, so a long case costs no more than the largest short one. Measured
# on the loaded 2-core machine, one fp32-vs-oracle check: T=S=2048 N1 H16
# (2**26) 0.9 s, N2 (2**27) 5.5 s; and the whole gate with 2**26 ran past the
# 8-minute budget. At 2**24 ``_fit_work`` keeps S and shortens T instead: a
# 512-row prefill over 2048 keys, a full 1024-row prefill at S = 1024.
THOROUGH_LONG_WORK_LIMIT = 2**29
CI_LONG_WORK_LIMIT = WORK_LIMIT
# No more than this many query blocks and KV blocks each: block loops run in
# Python, and 16 x 16 keeps one call well under a second at ci sizes.
MAX_BLOCKS_PER_AXIS = 16


@dataclasses.dataclass(frozen=True)
class AttentionCase:
    """One attention call, described by readable fields (see ``make_inputs``)."""

    batch: int = 1
    seq_q: int = 1
    seq_kv: int = 1
    offset: int = 0  # cache position of query row 0
    num_heads: int = 1
    num_kv_heads: int = 1
    head_dim: int = 32
    mask: str = "none"
    window: int = 0  # sliding window of the gemma*-window masks (keys pos - window < k <= pos)
    mask_shape: str = "b1ts"
    fill: str = "-inf"
    softcap: Optional[float] = None
    scale: Optional[float] = None
    alibi: bool = False
    logits: str = "unit"  # key of LOGIT_SCALES or HUGE_LOGIT_SCALES
    values: float = 1.0  # standard deviation of v
    dtype: str = "fp32"
    q_block_size: int = 256
    kv_block_size: int = 128
    seed: int = 0

    @property
    def case_id(self) -> str:
        """Readable id, e.g. ``b2-t37-s100-p20-n8g2-h64-causal-b1ts-softcap30``."""
        parts = [
            f"b{self.batch}-t{self.seq_q}-s{self.seq_kv}-p{self.offset}",
            f"n{self.num_heads}g{self.num_kv_heads}-h{self.head_dim}",
            self.mask + (f"-w{self.window}" if self.mask in WINDOW_MASKS else ""),
        ]
        if self.mask != "none":
            parts.append(self.mask_shape)
            if self.fill != "-inf":
                parts.append(f"fill{self.fill}")
        if self.softcap is not None:
            parts.append(f"softcap{self.softcap:g}")
        if self.scale is not None:
            parts.append(f"scale{self.scale:g}")
        if self.alibi:
            parts.append("alibi")
        parts += [f"logit-{self.logits}", f"v{self.values:g}", self.dtype]
        parts += [f"qb{self.q_block_size}-kb{self.kv_block_size}", f"seed{self.seed}"]
        return "-".join(parts)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def replace(self, **changes) -> "AttentionCase":
        return dataclasses.replace(self, **changes)


def make_inputs(case: AttentionCase) -> dict:
    """The keyword arguments of one attention call for ``case`` (without block sizes).

    Returns a dict with q [B, T, N, H], k and v [B, S, G, H] in the case's
    dtype, head_size, mask (broadcast shape per ``case.mask_shape``, or None),
    scale, softcap and alibi_bias ([1, N, 1, S] as litert-torch builds it, or None).
    """
    generator = exact_generator(case.seed)
    effective_scale = case.scale if case.scale is not None else 1.0 / math.sqrt(case.head_dim)
    logit_std = {**LOGIT_SCALES, **HUGE_LOGIT_SCALES}[case.logits]
    # scale * q.k sums head_dim products of two N(0, sigma^2): std scale * sigma^2 * sqrt(H).
    sigma = math.sqrt(logit_std / (effective_scale * math.sqrt(case.head_dim)))
    dtype = case.torch_dtype
    q_shape = (case.batch, case.seq_q, case.num_heads, case.head_dim)
    kv_shape = (case.batch, case.seq_kv, case.num_kv_heads, case.head_dim)
    q = normal(q_shape, generator) * sigma
    k = normal(kv_shape, generator) * sigma
    v = normal(kv_shape, generator) * case.values
    alibi = build_alibi_bias(case.num_heads, case.seq_kv) if case.alibi else None
    return dict(
        q=q.to(dtype),
        k=k.to(dtype),
        v=v.to(dtype),
        head_size=case.head_dim,
        mask=make_mask(case, generator),
        scale=case.scale,
        softcap=case.softcap,
        alibi_bias=None if alibi is None else alibi.to(dtype),
    )


def make_mask(case: AttentionCase, generator: ExactGenerator) -> Optional[torch.Tensor]:
    """The case's additive mask in its broadcast shape and dtype, or None."""
    if case.mask == "none":
        return None
    has_batch = case.mask_shape in ("b1ts", "bnts")
    has_heads = case.mask_shape in ("bnts", "1nts")
    b = case.batch if has_batch else 1
    n = case.num_heads if has_heads else 1
    t, s = case.seq_q, case.seq_kv
    fill = {"-inf": -math.inf, "-1e9": -1e9, "min": torch.finfo(case.torch_dtype).min}[case.fill]
    if case.mask in WINDOW_MASKS:
        mask = decoder_window_mask(case.mask, t, s, case.offset, case.window, fill)
        mask = mask.expand(b, n, t, s).contiguous()  # (b, n, T, S), like the other kinds
        return _broadcast(mask.to(case.torch_dtype), case.mask_shape)
    positions = case.offset + torch.arange(t).view(1, 1, t, 1)  # (1, 1, T, 1)
    keys = torch.arange(s).view(1, 1, 1, s)  # (1, 1, 1, S)
    visible = (keys <= positions).expand(b, n, t, s)  # causal at the offset
    additive = torch.zeros(b, n, t, s)
    if case.mask == "pad-left":
        pads = torch.tensor(integers(0, case.offset + t + 1, b, generator)).view(b, 1, 1, 1)
        visible = visible & (keys >= pads)
    elif case.mask == "pad-right":
        lengths = torch.tensor(integers(1, s + 1, b, generator)).view(b, 1, 1, 1)
        visible = visible & (keys < lengths)
    elif case.mask == "random":
        visible = uniform((b, n, t, s), generator) < 0.8
        additive = -4.0 * uniform((b, n, t, s), generator)
    elif case.mask == "full-rows":
        dropped = uniform((b, n, t, 1), generator) < 0.3
        visible = visible & ~dropped
    elif case.mask == "bidirectional":
        visible = torch.ones(b, n, t, s, dtype=torch.bool)
    mask = torch.where(visible, additive, fill).to(case.torch_dtype)
    return _broadcast(mask, case.mask_shape)


def _broadcast(mask: torch.Tensor, mask_shape: str) -> torch.Tensor:
    """A (b, n, T, S) mask as ``mask_shape`` holds it: (T, S) for "ts", else as is."""
    return mask[0, 0] if mask_shape == "ts" else mask  # (T, S) or 4-D


def explicit_mask(case: AttentionCase, inputs: dict) -> torch.Tensor:
    """The case's mask as a tensor, 4-D: ``mask=None`` becomes what it means.

    None means top-left causal ([1, 1, T, S], row i sees keys <= i), or no mask
    at all when an alibi bias is given (litert-torch's rule).
    """
    mask = inputs["mask"]
    if mask is not None:
        return mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    rows = torch.arange(case.seq_q).view(1, 1, -1, 1)
    keys = torch.arange(case.seq_kv).view(1, 1, 1, -1)
    zeros = torch.zeros(1, 1, case.seq_q, case.seq_kv, dtype=case.torch_dtype)
    return zeros if case.alibi else zeros.masked_fill(keys > rows, -math.inf)


def query_positions(case: AttentionCase) -> list:
    """Cache position of each query row: offset + i with an explicit mask, i with ``mask=None``."""
    start = 0 if case.mask == "none" else case.offset
    return [start + i for i in range(case.seq_q)]


def _thorough() -> bool:
    return settings.get_current_profile_name() == "thorough"


def max_seq_len() -> int:
    """Longest KV length a case may have: 2304 under ``thorough``, else 2048."""
    return THOROUGH_LENGTHS[-1] if _thorough() else LONG_MAX_LEN


def long_work_limit() -> int:
    """Largest B * N * T * S * H of a long case under the current profile."""
    return THOROUGH_LONG_WORK_LIMIT if _thorough() else CI_LONG_WORK_LIMIT


def long_lengths() -> st.SearchStrategy:
    """KV lengths of long cases: past 512, at block edges or anywhere up to ``max_seq_len()``."""
    edges = LONG_EDGES + (THOROUGH_LENGTHS if _thorough() else ())
    return st.one_of(st.sampled_from(edges), st.integers(LONG_MIN_LEN, max_seq_len()))


def block_sizes(length: int) -> st.SearchStrategy:
    """Block sizes for an axis of ``length``: dividing it or not, at most MAX_BLOCKS_PER_AXIS blocks."""
    divisors = [d for d in range(1, length + 1) if length % d == 0]
    least = math.ceil(length / MAX_BLOCKS_PER_AXIS)
    return st.one_of(
        st.sampled_from((256, 128, 64, 32, 16, 8, 7, 5, 3, 2, 1)),
        st.sampled_from(divisors),
        st.integers(1, length + 2),
    ).map(lambda size: max(size, least))


def _lengths(draw, max_len: int, min_extra_kv: int, long_max_seq_q: Optional[int]) -> tuple:
    """(seq_q, offset, seq_kv) with seq_kv >= offset + seq_q + min_extra_kv.

    One case in LONG_CASE_ODDS is long: S from ``long_lengths()`` with a
    single decode row, a short prefill or the longest prefill that fits
    (capped at ``long_max_seq_q`` when given), at any cache offset. Otherwise
    T and S stay within ``max_len`` (at most SHORT_LEN).
    """
    # Short first: hypothesis starts from, and shrinks toward, the first choice,
    # so a failure seen at any length is reported at a short, fast length.
    if draw(st.sampled_from((False,) * (LONG_CASE_ODDS - 1) + (True,))):
        seq_kv = draw(long_lengths())
        longest_q = seq_kv - min_extra_kv
        if long_max_seq_q is not None:
            longest_q = min(longest_q, long_max_seq_q)
        short_q = st.integers(1, min(SHORT_LEN, longest_q))
        seq_q = draw(st.one_of(st.just(1), short_q, st.just(longest_q)))
        offset = draw(st.integers(0, seq_kv - min_extra_kv - seq_q))
        return seq_q, offset, seq_kv
    max_len = min(max_len, SHORT_LEN)
    seq_q = draw(st.one_of(st.just(1), st.integers(1, max_len)))
    offset = draw(st.integers(0, max(0, max_len - seq_q)))
    extra = draw(st.integers(min_extra_kv, max(min_extra_kv, max_len - seq_q - offset)))
    return seq_q, offset, offset + seq_q + extra


def _fit_work(dims: dict, seq_q: int, seq_kv: int, min_ratio: int, min_batch: int) -> tuple:
    """(dims, seq_q) with B * N * T * S * H within the limit of the case's size.

    Shrinks G, then batch, then R, then head_dim, each to its floor, then T:
    at S = 2048 a full-length prefill does not fit CI_LONG_WORK_LIMIT even at
    the floors (B1 N1 H16 is 2**26), and a shorter prefill over the same long
    cache still takes the long path. Short cases fit at the floors
    (3 * 2 * 16 * 160 * 160 < WORK_LIMIT), so their T never shrinks.
    """
    limit = long_work_limit() if seq_q * seq_kv > SHORT_LEN * SHORT_LEN else WORK_LIMIT
    dims = dict(dims)
    floors = dict(num_kv_heads=1, batch=min_batch, ratio=min_ratio, head_dim=16)
    for name in ("num_kv_heads", "batch", "ratio", "head_dim"):
        while math.prod(dims.values()) * seq_q * seq_kv > limit and dims[name] // 2 >= floors[name]:
            dims[name] //= 2
    while math.prod(dims.values()) * seq_q * seq_kv > limit and seq_q > 1:
        seq_q //= 2
    return dims, seq_q


@st.composite
def attention_cases(
    draw,
    *,
    dtypes: Sequence[str] = ("fp32",),
    logits: Sequence[str] = tuple(LOGIT_SCALES),
    masks: Sequence[str] = MASK_KINDS,
    min_extra_kv: int = 0,
    max_len: int = SHORT_LEN,
    long_max_seq_q: Optional[int] = None,
    ratios: Sequence[int] = (1, 2, 4, 8, 3, 5, 6, 7),
    min_batch: int = 1,
) -> AttentionCase:
    """Attention cases over every axis of the contract (see the module docstring).

    Args:
      dtypes, logits, masks: the choices to draw from (keys of DTYPES,
        LOGIT_SCALES / HUGE_LOGIT_SCALES, MASK_KINDS).
      min_extra_kv: at least this many cache slots after the last query position.
      max_len: longest T and S of the short cases (at most SHORT_LEN).
      long_max_seq_q: longest T of the long cases (default: as long as S
        allows); their S always comes from ``long_lengths()``.
      ratios: query heads per KV head to draw from (1 = MHA; with G = 1, MQA).
      min_batch: smallest batch.
    """
    seq_q, offset, seq_kv = _lengths(draw, max_len, min_extra_kv, long_max_seq_q)
    dims = dict(
        num_kv_heads=draw(st.sampled_from((1, 2, 4, 3, 8))),
        ratio=draw(st.sampled_from(tuple(ratios))),
        head_dim=draw(st.sampled_from(HEAD_DIMS)),
        batch=draw(st.integers(min_batch, max(min_batch, 3))),
    )
    dims, seq_q = _fit_work(dims, seq_q, seq_kv, min(ratios), min_batch)
    batch, num_kv_heads, ratio, head_dim = (
        dims["batch"],
        dims["num_kv_heads"],
        dims["ratio"],
        dims["head_dim"],
    )
    mask = draw(st.sampled_from(masks))
    window = draw(window_sizes(seq_q, offset, seq_kv)) if mask in WINDOW_MASKS else 0
    return AttentionCase(
        batch=batch,
        seq_q=seq_q,
        seq_kv=seq_kv,
        offset=offset,
        num_heads=num_kv_heads * ratio,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        mask=mask,
        window=window,
        mask_shape=draw(st.sampled_from(MASK_SHAPES)),
        fill=draw(st.sampled_from(MASK_FILLS)),
        softcap=draw(st.sampled_from(SOFTCAPS)),
        scale=draw(st.sampled_from(SCALES)),
        alibi=draw(st.booleans()),
        logits=draw(st.sampled_from(tuple(logits))),
        values=draw(st.sampled_from(VALUE_SCALES)),
        dtype=draw(st.sampled_from(tuple(dtypes))),
        q_block_size=draw(block_sizes(seq_q)),
        kv_block_size=draw(block_sizes(seq_kv)),
        seed=draw(st.integers(0, 2**16)),
    )
