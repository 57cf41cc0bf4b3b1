"""Properties added for mutants of edge_flash/kernel.py that survived the gate.

``python -m property_tests.mutation`` found these mutants changing results on
inputs the contract allows but no property drew:

- ``L89C37:==->!=`` (``q.dtype == torch.float64`` -> ``!=``): float64 inputs
  computed in fp32 (2.4e-7 from the oracle instead of 4e-16) and fp32 ones in
  float64; the gate drew no float64 input.
- ``L150C24:1->0`` (``bias.shape[4] != 1`` -> ``!= 0``): a mask broadcast over
  the keys ([B, 1, T, 1], valid per ``check_bias``) is sliced per KV block and
  the call raises; the gate's masks always had S columns.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import given

from parity.compare import assert_close_to_oracle
from parity.exact_random import exact_generator, uniform
from parity.oracle import reference_attention
from parity.tolerances import ERROR_MODELS
from property_tests.settings import GATE_SETTINGS
from property_tests.strategies import attention_cases, make_inputs

# float64 candidate vs the float64 oracle: the fp32-self reasoning (each result
# within 8 u of first-order rounding, 16 u for the pair) with u = u64 and no
# owner's cap (it is an fp32 bound). Belongs in parity/tolerances.py's table.
FP64_MODEL = dataclasses.replace(
    ERROR_MODELS["fp32-self"],
    name="fp64",
    unit_roundoff=torch.finfo(torch.float64).eps / 2,
    owner_atol=None,
    why="float64 candidate vs float64 oracle: each within 8 u64 of first-order rounding",
)
# Rows of the key-broadcast mask dropped entirely (-inf); the others get a
# finite per-row constant, which softmax ignores.
DROPPED_ROW_ODDS = 0.3


def _float64(inputs: dict) -> dict:
    """The inputs with every tensor in float64."""
    return {k: v.to(torch.float64) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@GATE_SETTINGS
@given(case=attention_cases())
def test_float64_inputs_are_computed_in_float64(gate, case):
    """float64 inputs give a float64 output within float64 rounding of the oracle."""
    inputs = _float64(make_inputs(case))
    oracle = reference_attention(**inputs)
    actual = gate.candidate(case, inputs)
    assert actual.dtype == torch.float64, f"float64 inputs gave a {actual.dtype} output"
    comparison = assert_close_to_oracle(
        actual, oracle.output, error_model=FP64_MODEL, rounding_scale=oracle.rounding_scale,
        where=oracle.determined, case_id=f"{case.case_id}-as-fp64",
        reproduce=gate.reproduce(case), names=("candidate-fp64", "", "oracle"),
    )  # fmt: skip
    gate.steer(comparison.worst_ratio, "fp64-vs-oracle")


def _key_broadcast_mask(case, dtype: torch.dtype) -> torch.Tensor:
    """A [B, 1, T, 1] mask: each row -inf (dropped) or a finite constant in (-4, 0]."""
    generator = exact_generator(case.seed + 2)
    shape = (case.batch, 1, case.seq_q, 1)
    dropped = uniform(shape, generator) < DROPPED_ROW_ODDS
    constant = -4.0 * uniform(shape, generator)
    return torch.where(dropped, -math.inf, constant).to(dtype)


@GATE_SETTINGS
@given(case=attention_cases(masks=("random",)))
def test_mask_broadcast_over_keys_equals_its_expansion(gate, case):
    """A [B, 1, T, 1] mask gives what the same mask expanded to [B, 1, T, S] gives."""
    inputs = make_inputs(case)
    mask = _key_broadcast_mask(case, inputs["q"].dtype)
    expanded = dict(inputs, mask=mask.expand(-1, -1, -1, case.seq_kv).contiguous())
    oracle = reference_attention(**expanded)
    names = ("mask-b1t1", "mask-expanded-b1ts")
    gate.check_same(
        case, gate.candidate(case, dict(inputs, mask=mask)), gate.candidate(case, expanded),
        oracle, names,
    )  # fmt: skip
