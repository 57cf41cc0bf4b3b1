"""Every tolerance of the harness, as data, in one table, each with its reason.

An ``ErrorModel`` says how far an implementation under test ("actual") may be
from the float64 oracle ("expected"), given how far a trusted baseline (the
standard implementation) is. For each element::

    allowed = factor * baseline_max_error + floor_units * unit_roundoff * rounding_scale
    allowed = min(allowed, owner_atol)            # when owner_atol is set

``rounding_scale`` comes from the oracle (``parity.oracle``): the first-order
error, per unit roundoff, that a correct implementation makes on these inputs
(0 where a correct implementation is exact, e.g. one-hot softmax rows).
``baseline_max_error`` is the baseline's own greatest error against the oracle
over the compared elements. Non-finite values on one side only always fail.

Unit roundoff u = eps / 2: fp32 5.96e-8, fp16 4.88e-4, bf16 3.91e-3.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class ErrorModel:
    """How far ``actual`` may be from the oracle (see the module docstring).

    Attributes:
      name: key in ``ERROR_MODELS``, printed in failure messages.
      unit_roundoff: u of the precision the implementations work in.
      floor_units: multiples of u * rounding_scale always allowed.
      factor: multiple of the baseline's own max error allowed on top.
      owner_atol: hard absolute cap on every element, or None where it does not apply.
      why: one line, printed with failures.
    """

    name: str
    unit_roundoff: float
    floor_units: float
    factor: float
    owner_atol: Optional[float]
    why: str


_U32 = torch.finfo(torch.float32).eps / 2
_U16 = torch.finfo(torch.float16).eps / 2
_UBF16 = torch.finfo(torch.bfloat16).eps / 2

# The owner's bound on attention outputs for fp32 inputs whose logits are in
# the range real models produce (issue 2).
OWNER_ATOL_FP32 = 1e-4

ERROR_MODELS = {
    # The gate. floor_units = 8: rounding_scale is a root-mean-square estimate
    # of independent rounding errors, and the greatest of n Gaussian errors sits
    # near sqrt(2 ln n) sigma (4.8 sigma for 1e5 elements); 8 leaves ~1.7x for
    # the estimate's first-order simplifications. Measured on 300 random cases
    # (T <= 130, S <= 430, logits up to std 30) torch's SDPA and edge_flash
    # reached 7.5 and 8.2 units. factor = 2: the candidate's rounding differs from
    # the baseline's (other summation order, one extra rescale per KV block),
    # so its error is a second draw of the same size; the max over many
    # elements of two such draws rarely differs by 2x, and where few elements
    # make it noisy the floor dominates. Small systematic bugs still fail: a
    # 1 + 3e-6 bias on a one-hot row is 50 u |o| against a floor of 16 u |o|.
    "fp32": ErrorModel(
        name="fp32",
        unit_roundoff=_U32,
        floor_units=8.0,
        factor=2.0,
        owner_atol=OWNER_ATOL_FP32,
        why="fp32 gate: owner's 1e-4 cap, 2x the standard's own error + 8 u of first-order rounding",
    ),
    # Logits of ~1e4 (issue 2: "no NaN/inf"). One fp32 ulp of a 1e4 logit is
    # 9.8e-4, so wherever two logits nearly tie, every fp32 implementation,
    # the standard included, is off by ~1e-3 and the owner's 1e-4 cannot apply.
    # The relative part (same factor and floor as the gate) still does.
    "fp32-huge-logits": ErrorModel(
        name="fp32-huge-logits",
        unit_roundoff=_U32,
        floor_units=8.0,
        factor=2.0,
        owner_atol=None,
        why="fp32 at ~1e4 logits: no absolute cap (one ulp of a logit is ~1e-3), relative part only",
    ),
    # fp16 / bf16 inputs. Both implementations round the output to the input
    # dtype (half an ulp: 0.5 u |o| relative at least) and litert's standard
    # path computes scores in the input dtype, so errors are ~u16 * scale,
    # ~8000x fp32's. Same reasoning for factor and floor as fp32; no absolute
    # cap (the owner's bound is for fp32), the floor carries the dtype's u.
    "fp16": ErrorModel(
        name="fp16",
        unit_roundoff=_U16,
        floor_units=8.0,
        factor=2.0,
        owner_atol=None,
        why="fp16: 2x the standard's own error + 8 u16 of first-order rounding",
    ),
    "bf16": ErrorModel(
        name="bf16",
        unit_roundoff=_UBF16,
        floor_units=8.0,
        factor=2.0,
        owner_atol=None,
        why="bf16: 2x the standard's own error + 8 u_bf16 of first-order rounding",
    ),
    # Candidate against itself (metamorphic properties: other block sizes,
    # batch rows alone, permuted keys, decode vs prefill). Two correct fp32
    # results differ by at most the sum of their errors, each within 8 u of the
    # rounding scale as above: 16 u. No baseline; the owner's cap still holds.
    "fp32-self": ErrorModel(
        name="fp32-self",
        unit_roundoff=_U32,
        floor_units=16.0,
        factor=0.0,
        owner_atol=OWNER_ATOL_FP32,
        why="candidate vs candidate: two fp32 results, each within 8 u of first-order rounding",
    ),
}

# Convex hull: a weighted mean of values computed in fp32 can leave the hull of
# those values only by rounding: the weights' sum is off by ~log2(S) u and the
# accumulation by as much again, each relative to max |v|. 4 u log2(2 + S) covers
# both with 2x to spare; a 1 + 3e-6 (50 u) normalisation bug exceeds it for S < 2**10.
HULL_SLACK_UNITS = 4.0


def error_model_for(dtype: torch.dtype) -> ErrorModel:
    """The gate's error model for inputs of ``dtype`` (fp32, fp16 or bf16).

    Raises:
      ValueError: for any other dtype.
    """
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    if dtype not in names:
        raise ValueError(f"dtype ({dtype}) has no error model; expected one of {list(names)}")
    return ERROR_MODELS[names[dtype]]
