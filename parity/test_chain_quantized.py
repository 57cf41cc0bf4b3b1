"""Chain suite, quantized legs: the TFLite legs converted with litert-torch's
quantization recipes (``edge_flash.convert.QUANTIZE_CHOICES``).

Quantization changes the model on purpose, so nothing bounds a quantized leg
against the fp32 model's float64 oracle; its next-token distributions are
measured as llama.cpp's ``perplexity --kl-divergence`` measures a quantized model
(``parity.quant_stats``: mean and 99th-percentile KL(P_oracle || P_leg), top-1
agreement, first greedy divergence) and recorded. What must hold:

- flash and standard under the same recipe agree as closely as fp32 rounding of
  the quantized network allows: the quantizer rewrites the same ops in both
  graphs, and the flash leg stays within the sum of both legs' allowances from
  the error spread of the recipe's quantized oracle (dynamic_int8,
  ``parity.quant_emulation``) or, for weight-only recipes, of the fp32 oracle
  (derivation in ``parity.tolerances`` beside ``FLASH_VS_STANDARD_ATOL``);
- under dynamic_int8 each leg is within its allowance of that quantized oracle,
  as the fp32 TFLite legs are of ``oracle_fp64``.

A plain session runs dynamic_int8 on tiny-random-llama; ``PARITY_QUANTIZE=all``
runs every recipe on tiny-random-llama and SmolLM2 (``parity.cases``).
"""

from __future__ import annotations

import math

import pytest
import torch

from parity import legs as L
from parity.cases import QUANTIZE_ENV, quantized_cases, selected_quantized
from parity.checks import check_flash_vs_standard, check_logits
from parity.error_spread import OracleSpread, Spread
from parity.quant_graph import quantized_op_difference, quantized_ops
from parity.quant_stats import kv_onset, quant_stats, stat_fields


def _runs_of_every_prompt(chain, leg: str) -> tuple[dict, dict]:
    """({prompt: the leg's run}, {prompt: the oracle's run})."""
    runs = {prompt: chain.runs(prompt, [leg]) for prompt in chain.prepared.prompt_ids}
    return (
        {prompt: both[leg] for prompt, both in runs.items()},
        {prompt: both[L.ORACLE] for prompt, both in runs.items()},
    )


def _files(chain, tflite_store, flash_leg: str):
    """(standard file, flash file) of ``flash_leg``'s recipe."""
    _, recipe = L.QUANTIZED_OF[flash_leg]
    return tuple(tflite_store.path(chain.prepared, variant, recipe) for variant in ("std", "flash"))


@pytest.mark.parametrize("case", quantized_cases(("std", "flash"), per_prompt=False))
def test_quantized_leg_kl_statistics_against_oracle_are_recorded(case, chains, record_result):
    """Mean and p99 KL, top-1 agreement and first greedy divergence over every prompt's
    prefill positions and decode steps are recorded; KL must be finite (no threshold)."""
    chain = chains.get(case.model)
    runs, oracles = _runs_of_every_prompt(chain, case.leg)
    stats = quant_stats(runs, oracles)
    for fields in stat_fields(stats):
        record_result(suite="parity", case_id=case.case_id, model=case.model.name,
                      legs=f"{case.leg}-vs-{L.ORACLE}", tolerance=None, passed=True,
                      shapes=f"{stats.rows} rows", **fields)  # fmt: skip
    # A NaN or infinite KL is a broken leg (a NaN logit, a token given probability 0),
    # not a quantization error.
    assert math.isfinite(stats.mean_kl) and math.isfinite(stats.max_kl), (
        f"{case.case_id}: KL(P_oracle || P_leg) is not finite (mean {stats.mean_kl}, max"
        f" {stats.max_kl}): the leg's logits hold NaN or give a token probability 0"
    )


@pytest.mark.parametrize("case", quantized_cases(("flash",), per_prompt=False))
def test_quantizer_rewrites_the_same_ops_in_flash_and_standard(case, chains, tflite_store):
    """Both files of a recipe read quantized tensors in every signature, in the same ops."""
    chain = chains.get(case.model)
    standard, flash = _files(chain, tflite_store, case.leg)
    for path in (standard, flash):
        signatures = {name: ops for name, ops in quantized_ops(path).items() if "." not in name}
        unquantized = sorted(name for name, ops in signatures.items() if not ops)
        assert not unquantized, f"{path.name}: no quantized op in signatures {unquantized}"
    difference = quantized_op_difference(standard, flash)
    assert not difference, (
        f"{case.case_id}: the quantizer treated the flash graph differently from the standard"
        f" graph ({standard.name} vs {flash.name}):\n  " + "\n  ".join(difference)
    )


@pytest.mark.parametrize("case", quantized_cases(("flash",)))
def test_quantized_flash_within_fp32_allowance_of_quantized_standard(
    case, chains, tflite_store, record_result, judge
):
    """Under one recipe flash and standard logits differ by at most the sum of both legs'
    allowances from the quantized network's fp32 rounding spread (the fp32 model's, for
    weight-only recipes), as at the fp32 TFLite stage: quantization excuses no flash error
    beyond what rounding the quantized network in fp32 does."""
    chain = chains.get(case.model)
    standard = L.QUANTIZED_STANDARD_OF[case.leg]
    runs = chain.runs(case.prompt, [case.leg, standard])
    _, recipe = L.QUANTIZED_OF[case.leg]
    spread = chain.spread(case.prompt, recipe if recipe in L.QUANTIZED_ORACLE_OF else "none")
    difference = quantized_op_difference(*_files(chain, tflite_store, case.leg))
    context = "quantized ops: " + ("the same in both graphs" if not difference else
                                   "differ: " + "; ".join(difference))  # fmt: skip
    # Where the two caches part: one position of one layer first is a rounding flip of a
    # quantized activation (parity.tolerances), a drift from layer 0 on is attention's.
    kv_allowance = 2 * judge.error_model.allowance(spread.kv)  # (L, 2, T): both legs'
    context += "; " + kv_onset(runs[case.leg], runs[standard], kv_allowance)
    check_flash_vs_standard(
        runs, case.leg, spread=spread, case_id=case.case_id,
        model=case.model.name, record=record_result, context=context,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge,
    )  # fmt: skip


@pytest.mark.parametrize(
    "case", quantized_cases(("std", "flash"), recipes=tuple(L.QUANTIZED_ORACLE_OF))
)
@pytest.mark.parametrize("stage", ["prefill", "decode"])
def test_quantized_leg_within_allowance_of_the_quantized_oracle(
    case, stage, chains, record_result, judge
):
    """A dynamic-range leg's logits are within the allowance of the float64 oracle of the
    quantized network (``parity.quant_emulation``, row quantization of the kernel LiteRT
    runs) from that oracle's own rounding spread: the quantized model is computed right."""
    chain = chains.get(case.model)
    _, recipe = L.QUANTIZED_OF[case.leg]
    oracle = L.QUANTIZED_ORACLE_OF[recipe]
    runs = chain.runs(case.prompt, [case.leg, oracle])
    check_logits(
        runs, case.leg, stage, spread=chain.spread(case.prompt, recipe),
        case_id=f"{case.case_id}-{stage}", model=case.model.name, record=record_result,
        token_text=lambda token: chain.prepared.decode([token]), judge=judge, oracle=oracle,
    )  # fmt: skip


@pytest.mark.parametrize(
    "case", quantized_cases(("std",), per_prompt=False, recipes=tuple(L.QUANTIZED_ORACLE_OF))
)
def test_quantized_oracle_emulates_every_quantized_fully_connected_layer(
    case, chains, tflite_store
):
    """The emulation quantizes as many layers as the converted decode graph has
    FULLY_CONNECTED ops reading integer weights (each layer runs once per decode call)."""
    from parity.quant_emulation import DynamicInt8Linear

    chain = chains.get(case.model)
    _, recipe = L.QUANTIZED_OF[case.leg]
    decode = quantized_ops(tflite_store.path(chain.prepared, "std", recipe))["decode"]
    in_file = sum(n for op, n in decode.items() if op.startswith("FULLY_CONNECTED(FLOAT32,INT"))
    model = chain.quantized_oracle_model(recipe)
    emulated = sum(isinstance(m, DynamicInt8Linear) for m in model.modules())
    assert emulated == in_file > 0, f"{case.case_id}: {emulated} emulated, {in_file} in {decode}"


@pytest.mark.tflite
@pytest.mark.skipif(
    ("tiny-random-llama", "dynamic_int4_block128") not in selected_quantized(),
    reason=f"converts for about 20 s; set {QUANTIZE_ENV}=dynamic_int4_block128 (or all) to run it",
)
def test_int4_block128_refuses_a_model_whose_hidden_size_is_not_a_multiple_of_128(
    chains, tflite_store
):
    """litert-torch 0.10's dynamic_int4_block128 cannot quantize tiny-random-llama
    (hidden size 64): the error names the dimension and the block size."""
    from parity.zoo import zoo_model

    chain = chains.get(zoo_model("tiny-random-llama"))
    with pytest.raises(ValueError, match=r"not divisible by block size 128"):
        tflite_store.path(chain.prepared, "std", "dynamic_int4_block128")


@pytest.mark.parametrize("case", quantized_cases(("std",), per_prompt=False))
def test_quantized_op_difference_names_ops_quantized_in_one_graph_only(case, chains, tflite_store):
    """Against the fp32 file of the same model, the quantized file's weight ops are listed."""
    chain = chains.get(case.model)
    _, recipe = L.QUANTIZED_OF[case.leg]
    fp32 = tflite_store.path(chain.prepared, "std")
    quantized = tflite_store.path(chain.prepared, "std", recipe)
    lines = quantized_op_difference(fp32, quantized)
    assert any(line.startswith("decode: ") and " standard 0, flash " in line for line in lines), (
        f"{case.case_id}: no op of the decode signature is listed as quantized in {quantized.name}"
        f" only: {lines}"
    )


def _run(logits: torch.Tensor, leg: str) -> L.LegRun:
    """A run of one prompt token and two generation steps with the given (3, V) logits."""
    return L.LegRun(
        leg=leg, prompt_ids=[0], chosen=[int(row.argmax()) for row in logits[1:]], fed=[1],
        prefill_logits=logits[:1], step_logits=logits[1:], kv=None, hidden=None,
    )  # fmt: skip


def _spread(prompt_len: int, steps: int, allowance: float) -> OracleSpread:
    """A spread whose every logit row has the same allowance (row_max_rms; no element term)."""

    def part(rows: int) -> Spread:
        return Spread(torch.full((rows,), allowance, dtype=torch.float64), torch.zeros(rows), 0.0)

    return OracleSpread(part(prompt_len), part(steps), part(1), part(1), samples=8)


def _logits_and_shifted(row: int, column: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 2) logits (a prompt token and two steps) and a copy 3e-5 off at (row, column)."""
    logits = torch.tensor([[1.0, 2.0], [0.5, 0.0], [0.0, 3.0]], dtype=torch.float64)
    shifted = logits.clone()
    shifted[row, column] += 3e-5
    return logits, shifted


def test_quantized_flash_check_fails_beyond_both_allowances_and_names_the_context():
    """A quantized flash leg 3e-5 from its standard leg fails an allowance of 1e-5 per leg."""
    flash, standard = (
        L.quantized_leg("flash", "dynamic_int8"),
        L.quantized_leg("std", "dynamic_int8"),
    )
    logits, shifted = _logits_and_shifted(2, 1)
    runs = {L.ORACLE: _run(logits, L.ORACLE), standard: _run(logits, standard),
            flash: _run(shifted, flash)}  # fmt: skip
    rows = []
    with pytest.raises(AssertionError) as failure:
        check_flash_vs_standard(
            runs, flash, spread=_spread(1, 2, 1e-5), case_id="made-up", model="m",
            record=lambda **row: rows.append(row), context="quantized ops: differ: X",
        )  # fmt: skip
    message = str(failure.value)
    assert f"{flash} differs from {standard} by more than the sum of both legs'" in message
    assert "decode step 1" in message and "3.000e-05 > 2.000e-05" in message
    assert "  quantized ops: differ: X\n" in message
    assert rows[0]["passed"] is False and rows[0]["ratio"] == pytest.approx(1.5)
    assert rows[0]["legs"] == f"{flash}-vs-{standard}"


def test_quantized_legs_cover_every_recipe_litert_torch_names():
    """The legs' recipes are edge_flash.convert's choices but "none", which are litert-torch's."""
    from litert_torch.generative.utilities.converter import QuantizationName

    from edge_flash.convert import QUANTIZE_CHOICES

    assert QUANTIZE_CHOICES == tuple(name.value for name in QuantizationName)
    assert L.QUANTIZE_RECIPES == tuple(c for c in QUANTIZE_CHOICES if c != "none")
    assert L.QUANTIZED_OF["tflite_flash_dynamic_int8"] == ("flash", "dynamic_int8")


def test_a_leg_beyond_its_allowance_of_the_quantized_oracle_fails_naming_that_oracle():
    """check_logits with ``oracle=``: the leg is compared with that oracle's logits, not the
    fp32 oracle's, and the record names the pair."""
    leg, oracle = L.quantized_leg("std", "dynamic_int8"), L.QUANTIZED_ORACLE_OF["dynamic_int8"]
    logits, shifted = _logits_and_shifted(0, 1)
    runs = {L.ORACLE: _run(shifted, L.ORACLE), oracle: _run(logits, oracle),
            leg: _run(shifted, leg)}  # fmt: skip
    rows = []
    with pytest.raises(AssertionError, match="prefill logits"):
        check_logits(runs, leg, "prefill", spread=_spread(1, 2, 1e-5), case_id="made-up",
                     model="m", record=lambda **row: rows.append(row), oracle=oracle)  # fmt: skip
    assert rows[0]["passed"] is False and rows[0]["legs"] == f"{leg}-vs-{oracle}"
