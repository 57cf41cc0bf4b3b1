"""The harness itself: injected model bugs and broken kernels fail, with the right diagnosis.

Each bug goes into one leg of the tiny random Llama (``parity.injected_bugs``,
``property_tests.broken_kernels``); the chain's checks must fail and their
message must name the leg, the token and the layer where the bug is. Model
bugs go into block 1 of 3, so "layer 1" can only come from the per-layer search.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from parity import checks
from parity import injected_bugs as bugs
from parity import legs as L
from parity.chain import Chain
from parity.chunked import ChunkedReauthoredLeg, ChunkedTFLiteLeg, planned_chunks
from parity.diagnose import first_divergence, top_two
from parity.error_spread import OracleSpread, Spread
from parity.zoo import TINY_RANDOM
from property_tests import broken_kernels

BUGGY_LAYER = 1
LENGTH = TINY_RANDOM.kv_cache_max_len


def _chain_with(chains, leg: str, make_model) -> Chain:
    """The tiny model's session chain with ``leg`` replaced (other legs' runs reused)."""
    good = chains.get(TINY_RANDOM)
    prepared = good.prepared

    def factory():
        return L.ReauthoredLeg(make_model(prepared), LENGTH, leg)

    for prompt in prepared.prompt_ids:
        good.runs(prompt, [L.HF, L.STD, L.FLASH])
    return Chain(prepared, chains.attention_impl, None, {leg: factory}, reuse=good)


def _chain_with_chunker(chains, leg: str, chunker) -> Chain:
    """The tiny model's session chain with chunked ``leg`` fed ``chunker``'s chunks."""
    good = chains.get(TINY_RANDOM)
    prepared, lengths = good.prepared, TINY_RANDOM.chunk_seq_lens

    def factory():
        if L.is_tflite(leg):
            path = good.tflite_store.path(prepared, "std")
            return ChunkedTFLiteLeg(path, leg, lengths, chunker=chunker)
        model = L.build_reauthored(prepared.checkpoint, TINY_RANDOM.builder, LENGTH)
        return ChunkedReauthoredLeg(model, LENGTH, leg, lengths, chunker=chunker)

    return Chain(prepared, chains.attention_impl, good.tflite_store, {leg: factory}, reuse=good)


def _with_model_bug(bug: str):
    def make(prepared):
        model = L.build_reauthored(prepared.checkpoint, TINY_RANDOM.builder, LENGTH)
        return bugs.inject(model, bug, BUGGY_LAYER)

    return make


def _with_kernel(kernel):
    def make(prepared):
        model = L.build_reauthored(prepared.checkpoint, TINY_RANDOM.builder, LENGTH)
        return L.route_attention(model, kernel, TINY_RANDOM.kernel_options)

    return make


def _legs_read_by_checks(leg: str) -> list:
    """The leg, and for a flash leg its standard (``check_flash_vs_standard`` reads both)."""
    return [leg, *([L.STANDARD_OF[leg]] if leg in L.STANDARD_OF else [])]


def _failure(check, chain: Chain, prompt: str, leg: str, *args) -> str:
    runs = chain.runs(prompt, _legs_read_by_checks(leg))
    with pytest.raises(AssertionError) as raised:
        check(runs, leg, *args, spread=chain.spread(prompt), case_id=f"injected-{prompt}",
              model=TINY_RANDOM.name, record=lambda **row: None,
              token_text=lambda token: f"tok{token}")  # fmt: skip
    return str(raised.value)


def _passes(check, chain: Chain, prompt: str, leg: str, *args) -> None:
    runs = chain.runs(prompt, _legs_read_by_checks(leg))
    check(runs, leg, *args, spread=chain.spread(prompt), case_id=f"injected-{prompt}",
          model=TINY_RANDOM.name, record=lambda **row: None,
          token_text=lambda token: f"tok{token}")  # fmt: skip


LAYER_1 = f"first layer over budget: layer {BUGGY_LAYER} of reauthored_std"


def test_kv_cache_written_one_slot_late_fails_prefill_at_layer_1(chains):
    """A KV write at input_pos + 1 in block 1: prefill logits, cache and greedy tokens all fail."""
    chain = _chain_with(chains, L.STD, _with_model_bug("kv_write_shift"))
    message = _failure(checks.check_logits, chain, "ids-9", L.STD, "prefill")
    assert "reauthored_std is not close to the oracle_fp64" in message
    assert "Greatest error at: prompt position" in message and "(input token" in message
    # Where greedy first diverges depends on the weights (step 6, position 14, for the
    # zoo's tiny model); that the diagnosis names a step and its position does not.
    assert re.search(r"first divergent token: generation step \d+ \(logits at position \d+\)",
                     message)  # fmt: skip
    assert LAYER_1 in message
    kv_message = _failure(checks.check_kv_cache, chain, "ids-9", L.STD)
    # The shifted write leaves layer 1's rows out of place (k or v, whichever is
    # further off with these weights); earlier layers' caches are right.
    assert re.search(r"Greatest error at: layer 1 [kv] cache", kv_message)
    greedy = _failure(checks.check_greedy, chain, "ids-9", L.STD)
    assert "not a rounding near-tie" in greedy and LAYER_1 in greedy


def test_rope_shifted_in_decode_fails_decode_logits_not_prefill(chains):
    """RoPE for position + 1 on decode steps in block 1: prefill passes, decode fails at layer 1."""
    chain = _chain_with(chains, L.STD, _with_model_bug("decode_rope_shift"))
    _passes(checks.check_logits, chain, "ids-9", L.STD, "prefill")
    message = _failure(checks.check_logits, chain, "ids-9", L.STD, "decode")
    assert "decode logits" in message
    assert "Greatest error at: decode step" in message and "fed token" in message
    assert LAYER_1 in message


def test_rope_shifted_everywhere_is_caught_by_the_kv_cache_only(chains):
    """q.k depends on position differences only, so a uniform shift leaves logits; k rows do not."""
    chain = _chain_with(chains, L.STD, _with_model_bug("rope_shift"))
    _passes(checks.check_logits, chain, "ids-9", L.STD, "prefill")
    _passes(checks.check_logits, chain, "ids-9", L.STD, "decode")
    message = _failure(checks.check_kv_cache, chain, "ids-9", L.STD)
    assert "Greatest error at: layer 1 k cache, prompt position" in message


def test_mask_built_for_shorter_cache_fails_prefill_at_layer_1(chains):
    """A causal mask for S - 16 slots, zero-padded to S, in block 1: prefill fails at layer 1."""
    chain = _chain_with(chains, L.STD, _with_model_bug("mask_for_shorter_cache"))
    message = _failure(checks.check_logits, chain, "ids-88", L.STD, "prefill")
    assert "prefill logits" in message and "(input token" in message
    assert LAYER_1 in message


def test_kernel_drifting_by_1e_3_breaks_the_owner_bound_at_layer_0(chains):
    """flash_attention x (1 + 1e-3): flash vs standard and flash vs oracle fail, layer 0 named."""
    chain = _chain_with(chains, L.FLASH, _with_kernel(bugs.drifting_flash_attention))
    message = _failure(checks.check_flash_vs_standard, chain, "ids-9", L.FLASH)
    assert "reauthored_flash differs from reauthored_std by more than the owner's bound" in message
    assert "vocab id" in message and "sequence position" in message
    assert "first layer over budget: layer 0 of reauthored_flash" in message
    oracle_message = _failure(checks.check_logits, chain, "ids-9", L.FLASH, "prefill")
    assert "error model 'model-fp32-spread'" in oracle_message


def test_kernel_dropping_the_partial_kv_block_fails_once_decode_reaches_it(chains):
    """drops_partial_kv_block (S = 100, kv blocks of 32): decode fails at positions >= 96 only."""
    chain = _chain_with(chains, L.FLASH, _with_kernel(broken_kernels.drops_partial_kv_block))
    _passes(checks.check_logits, chain, "ids-9", L.FLASH, "decode")
    _passes(checks.check_logits, chain, "ids-88", L.FLASH, "prefill")
    message = _failure(checks.check_logits, chain, "ids-88", L.FLASH, "decode")
    assert "Greatest error at: decode step" in message
    step = int(message.split("Greatest error at: decode step ")[1].split()[0])
    assert step >= 9, "positions < 96 never see the partial block [96, 100)"
    assert "first layer over budget: layer 0 of reauthored_flash" in message


def _assert_chunk_bug_caught(chains, leg: str) -> str:
    """The right chunks pass every chunked check on ids-9 (7 + 2 tokens, two chunks); the
    same leg fed each later chunk one position early fails them. Returns the prefill failure."""
    right = _chain_with_chunker(chains, leg, planned_chunks)
    wrong = _chain_with_chunker(chains, leg, bugs.chunks_starting_one_early)
    _passes(checks.check_logits, right, "ids-9", leg, "prefill")
    _passes(checks.check_logits, right, "ids-9", leg, "decode")
    _passes(checks.check_kv_cache, right, "ids-9", leg)
    message = _failure(checks.check_logits, wrong, "ids-9", leg, "prefill")
    assert f"{leg} is not close to the oracle_fp64" in message
    # Rows before the first chunk boundary ran before the wrong position did any harm.
    position = int(re.search(r"Greatest error at: prompt position (\d+)", message).group(1))
    assert position >= max(TINY_RANDOM.chunk_seq_lens), message
    kv_message = _failure(checks.check_kv_cache, wrong, "ids-9", leg)
    assert re.search(r"Greatest error at: layer \d+ [kv] cache, prompt position", kv_message)
    _failure(checks.check_logits, wrong, "ids-9", leg, "decode")
    return message


def test_chunk_fed_one_position_early_fails_the_chunked_pytorch_leg_at_layer_0(chains):
    """reauthored_std_chunked with every chunk after the first one position early: prefill
    logits after the boundary, the cache and decode fail, layer 0 named; right chunks pass."""
    message = _assert_chunk_bug_caught(chains, L.STD_CHUNKED)
    # Every layer writes its cache one slot early, so the first layer is already off.
    assert "first layer over budget: layer 0 of reauthored_std_chunked" in message


@pytest.mark.tflite
def test_chunk_fed_one_position_early_fails_the_chunked_tflite_leg(chains):
    """tflite_std_chunked fed the same wrong chunks through LiteRT fails the same checks; its
    PyTorch source on the right chunks is within budget, so the diagnosis blames the runtime.
    The harness's own chunk loop on the right chunks gives the runner method's logits exactly."""
    message = _assert_chunk_bug_caught(chains, L.TFLITE_STD_CHUNKED)
    assert "so the difference arises in conversion or in the LiteRT runtime" in message
    own_loop = _chain_with_chunker(chains, L.TFLITE_STD_CHUNKED, planned_chunks)
    method = chains.get(TINY_RANDOM)
    for prompt in TINY_RANDOM.prompts:
        expected = method.runs(prompt.name, [L.TFLITE_STD_CHUNKED])[L.TFLITE_STD_CHUNKED]
        actual = own_loop.runs(prompt.name, [L.TFLITE_STD_CHUNKED])[L.TFLITE_STD_CHUNKED]
        assert torch.equal(actual.prefill_logits, expected.prefill_logits), prompt.name


@pytest.mark.quick
def test_near_tie_flip_is_allowed_and_clear_flip_is_not():
    """A flip where the oracle's margin is within 2x the allowance passes; a wide one fails."""
    vocab, rows = 4, torch.zeros(2, 4, dtype=torch.float64)

    def run(leg, chosen, step_logits):
        return L.LegRun(leg, [1], chosen, [chosen[0]], step_logits[:1], step_logits, None, None)

    def runs_with(margin):
        oracle_logits = rows.clone()
        oracle_logits[:, 0], oracle_logits[:, 1] = 1.0, 1.0 - margin  # oracle picks 0 by margin
        leg_logits = oracle_logits.clone()
        leg_logits[1, 1] = 1.0 + 1e-9  # the leg picks 1 at step 1
        return {
            L.ORACLE: run(L.ORACLE, [0, 0], oracle_logits),
            L.STD: run(L.STD, [0, 1], leg_logits),
            L.HF: run(L.HF, [0, 0], oracle_logits),
        }

    # Each step's logit allowance is 1e-7 (row max rms 1e-7, no element spread).
    steps = Spread(torch.full((2,), 1e-7, dtype=torch.float64), torch.zeros(2), 0.0)
    spread = OracleSpread(steps, steps, steps, steps, samples=8)

    def check(runs):
        return checks.check_greedy(runs, L.STD, spread=spread, case_id="synthetic",
                                   model="synthetic", record=lambda **row: None)  # fmt: skip

    assert vocab == rows.shape[1]
    assert check(runs_with(1e-8)) == 1  # margin 1e-8 <= 2 x 1e-7: a near-tie
    with pytest.raises(AssertionError, match="not a rounding near-tie"):
        check(runs_with(1e-2))


@pytest.mark.quick
def test_first_divergence_reports_both_margins():
    """first_divergence names the step, both tokens and both top-2 margins."""
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.5, 0.0]], dtype=torch.float64)
    mine = torch.tensor([[0.0, 2.0, 1.0], [0.0, 0.5, 3.0]], dtype=torch.float64)
    oracle = L.LegRun(L.ORACLE, [5, 6], [1, 0], [1], logits, logits, None, None)
    leg = L.LegRun(L.FLASH, [5, 6], [1, 2], [1], mine, mine, None, None)
    found = first_divergence(leg, oracle)
    assert (found.step, found.position, found.leg_token, found.oracle_token) == (1, 2, 2, 0)
    assert found.leg_top.margin == pytest.approx(2.5) and found.oracle_top.margin == 2.5
    assert top_two(logits[0]).first == 1 and top_two(logits[0]).second == 2


def test_broken_kernel_given_by_attention_impl_fails_the_suite(tmp_path):
    """`pytest --attention-impl <drifting kernel>` on the chain suite exits 1, naming the layer."""
    command = [
        sys.executable, "-m", "pytest", "parity/test_chain_logits.py", "-q",
        "-p", "no:cacheprovider",
        "--attention-impl", "parity.injected_bugs:drifting_flash_attention",
        "-k", "tiny-random-llama-reauthored_flash-ids-9 and owner_bound",
    ]  # fmt: skip
    env = {**os.environ, "PARITY_RESULTS": str(tmp_path / "results.jsonl")}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert (
        "reauthored_flash differs from reauthored_std by more than the owner's bound" in done.stdout
    )
    assert "first layer over budget: layer 0 of reauthored_flash" in done.stdout
