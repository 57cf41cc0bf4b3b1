"""The strategies draw what the gate claims to cover, and cases name their inputs exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, settings
from hypothesis.errors import NoSuchExample

from parity.cpu_capabilities import cpu_capabilities, run_under_capability
from property_tests.strategies import (
    CI_LONG_WORK_LIMIT,
    LONG_MAX_LEN,
    LONG_MIN_LEN,
    THOROUGH_LENGTHS,
    AttentionCase,
    attention_cases,
    long_work_limit,
    make_inputs,
    max_seq_len,
)
from property_tests.test_metamorphic import CAUSAL_MASKS, DECODE_MAX_ROWS
from property_tests.window_masks import WINDOW_KINDS, WINDOW_MASKS, window_kinds

# find() searches until the condition holds; these bound the search, not the test.
_FIND = settings(
    max_examples=2000, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


# One case per random draw make_inputs makes (normals; integers for pad-left and
# pad-right; uniforms for random and full-rows; none, but litert-torch's mask
# code, for gemma3-window), in fp32, fp16 and bf16, with ALiBi; prints
# {case_id: sha256 of every tensor's bytes}.
_INPUTS_CHILD = """
import hashlib, json
import torch
from property_tests.strategies import AttentionCase, make_inputs
base = AttentionCase(batch=2, seq_q=37, seq_kv=100, offset=20, num_heads=8, num_kv_heads=2,
                     head_dim=64, mask_shape="bnts", window=7, seed=5)
cases = [base.replace(mask=mask, dtype=dtype, alibi=dtype != "fp32")
         for mask in ("random", "full-rows", "pad-left", "pad-right", "gemma3-window")
         for dtype in ("fp32", "fp16", "bf16")]
digests = {}
for case in cases:
    digest = hashlib.sha256()
    for name, value in sorted(make_inputs(case).items()):
        if isinstance(value, torch.Tensor):
            digest.update(name.encode() + value.contiguous().view(torch.uint8).numpy().tobytes())
    digests[case.case_id] = digest.hexdigest()
print(json.dumps(digests))
"""


@pytest.fixture
def thorough_profile():
    """Loads the thorough profile for one test and restores the previous one."""
    previous = settings.get_current_profile_name()
    settings.load_profile("thorough")
    yield
    settings.load_profile(previous)


def test_thorough_profile_reaches_past_the_ci_lengths(thorough_profile):
    """Under ``thorough`` a case with S past 2048 (and one with T >= 2048) is drawn."""
    assert max_seq_len() == THOROUGH_LENGTHS[-1]
    past_ci = find(attention_cases(), lambda case: case.seq_kv > LONG_MAX_LEN, settings=_FIND)
    long_q = find(attention_cases(), lambda case: case.seq_q >= 2048, settings=_FIND)
    assert LONG_MAX_LEN < past_ci.seq_kv <= THOROUGH_LENGTHS[-1] and long_q.seq_q >= 2048


def _work(case: AttentionCase) -> int:
    return case.batch * case.num_heads * case.seq_q * case.seq_kv * case.head_dim


@pytest.mark.parametrize(
    "condition",
    [
        lambda c: c.seq_kv == LONG_MIN_LEN,  # the first length past 512
        lambda c: c.seq_kv > 1100 and c.seq_kv % 128 != 0,  # long, a partial default kv block
        lambda c: c.seq_q > 512 and c.q_block_size < c.seq_q,  # long prefill over query blocks
        lambda c: c.seq_kv > 1024 and c.seq_q == 1 and 0 < c.offset < 512,  # decode in a long cache
        lambda c: c.seq_kv > 512 and c.seq_q > 1 and c.mask == "pad-right",  # padded long prefill
    ],
    ids=["s513", "partial-kv-block-past-1100", "prefill-past-512", "decode-before-512-in-long-cache",
         "padded-long-prefill"],
)  # fmt: skip
def test_strategy_reaches_long_sequences_in_every_profile(condition):
    """ci, dev and thorough all draw S past 512, at block edges and between them."""
    assert condition(find(attention_cases(), condition, settings=_FIND))


def test_long_cases_stay_within_the_ci_length_and_work_limit():
    """Outside ``thorough`` no case has S past 2048 or work past CI_LONG_WORK_LIMIT (the budget)."""
    if settings.get_current_profile_name() == "thorough":
        pytest.skip("run without --hypothesis-profile=thorough to check the ci bounds")
    assert long_work_limit() == CI_LONG_WORK_LIMIT
    # The strictest strategies for the work limit: batch >= 2 and R >= 2 at their floors.
    for strategy in (attention_cases(), attention_cases(min_batch=2, ratios=(2, 3))):
        too_big = lambda c: c.seq_kv > LONG_MAX_LEN or _work(c) > CI_LONG_WORK_LIMIT
        with pytest.raises(NoSuchExample):
            find(strategy, too_big, settings=_FIND)


@pytest.mark.parametrize(
    "condition",
    [
        lambda c: c.seq_q == 1 and c.seq_kv > 1 and c.offset > 0,  # decode at a cache position
        lambda c: c.num_kv_heads == 1 and c.num_heads >= 4,  # MQA
        lambda c: c.num_heads // c.num_kv_heads == 8 and c.num_kv_heads > 1,  # GQA ratio 8
        lambda c: c.seq_kv % c.kv_block_size != 0 and c.seq_kv > c.kv_block_size,  # partial block
        lambda c: c.mask == "full-rows" and c.mask_shape == "ts" and c.fill == "min",
        lambda c: c.head_dim in (7, 33, 65) and c.softcap is not None and c.alibi,
    ],
    ids=["decode-at-offset", "mqa", "gqa-ratio-8", "partial-kv-block", "full-rows-ts-min",
         "odd-head-softcap-alibi"],
)  # fmt: skip
def test_strategy_reaches(condition):
    """The default strategy can draw each of the contract's corners."""
    assert condition(find(attention_cases(), condition, settings=_FIND))


def _in_window_kind(case: AttentionCase, kind: str) -> bool:
    return case.mask in WINDOW_MASKS and kind in window_kinds(case.seq_q, case.offset, case.window)


# The strategy of the decode = prefill property, where a window must wrap or sit in the cache too.
_DECODE_CASES = attention_cases(masks=CAUSAL_MASKS, max_len=DECODE_MAX_ROWS,
                                long_max_seq_q=DECODE_MAX_ROWS)  # fmt: skip


@pytest.mark.parametrize("mask", WINDOW_MASKS)
@pytest.mark.parametrize("kind", WINDOW_KINDS)
@pytest.mark.parametrize(
    "strategy",
    [attention_cases(), _DECODE_CASES, attention_cases(masks=WINDOW_MASKS)],
    ids=["default", "decode", "windows-only"],
)
def test_strategy_draws_every_kind_of_sliding_window(strategy, kind, mask):
    """Each decoder's window mask is drawn with the cache in front, wrapping in the block, and in decode."""
    condition = lambda c: c.mask == mask and _in_window_kind(c, kind)
    assert condition(find(strategy, condition, settings=_FIND))


def test_strategy_draws_a_window_narrower_than_a_query_block_that_spans_kv_blocks():
    """A window shorter than its query block, which holds whole KV blocks (where block skipping errs)."""
    condition = lambda c: (_in_window_kind(c, "wraps-in-block") and c.q_block_size >= c.seq_q
                           and c.window + 2 * c.kv_block_size <= c.seq_q)  # fmt: skip
    assert condition(find(attention_cases(), condition, settings=_FIND))


def test_strategy_draws_windows_inside_long_caches():
    """A window whose lower edge lies in a cache of more than 512 keys in front of the block."""
    condition = lambda c: c.seq_kv > LONG_MIN_LEN and _in_window_kind(c, "cache-in-front")
    assert condition(find(attention_cases(), condition, settings=_FIND))


def test_case_id_is_readable_and_inputs_are_deterministic():
    """The id reads like b2-t37-s100-...; the same case gives the same tensors."""
    case = AttentionCase(batch=2, seq_q=37, seq_kv=100, offset=20, num_heads=8, num_kv_heads=2,
                         head_dim=64, mask="causal", softcap=30.0, seed=5)  # fmt: skip
    assert case.case_id.startswith("b2-t37-s100-p20-n8g2-h64-causal-b1ts-softcap30-")
    first, second = make_inputs(case), make_inputs(case)
    assert all(torch.equal(first[name], second[name]) for name in ("q", "k", "v", "mask"))


def test_inputs_are_the_same_bytes_on_every_cpu_path():
    """make_inputs gives identical tensors under every CPU path torch can be forced onto.

    One child process per path (about 5 s each, mostly importing litert-torch):
    a derandomized run then tests the same inputs on every machine.
    """
    digests = {capability: run_under_capability(_INPUTS_CHILD, capability)
               for capability in cpu_capabilities()}  # fmt: skip
    first = next(iter(digests.values()))
    assert len(first) == 15
    differing = {case_id for d in digests.values() for case_id in d if d[case_id] != first[case_id]}
    assert not differing, f"inputs differ between CPU paths {list(digests)} for {sorted(differing)}"


@pytest.mark.parametrize(
    "mask_shape, expected", [("b1ts", (2, 1, 3, 6)), ("bnts", (2, 4, 3, 6)), ("11ts", (1, 1, 3, 6)),
                             ("ts", (3, 6)), ("1nts", (1, 4, 3, 6))],
)  # fmt: skip
def test_masks_have_their_broadcast_shape_and_are_causal_at_the_offset(mask_shape, expected):
    """Each mask shape is built as named; query row i (at offset + i) never sees a later key."""
    case = AttentionCase(batch=2, seq_q=3, seq_kv=6, offset=2, num_heads=4, num_kv_heads=2,
                         mask="causal", mask_shape=mask_shape)  # fmt: skip
    mask = make_inputs(case)["mask"]
    assert tuple(mask.shape) == expected
    grid = mask.reshape(-1, 3, 6)[0]
    for row in range(3):
        assert torch.isinf(grid[row, case.offset + row + 1 :]).all()
        assert (grid[row, : case.offset + row + 1] == 0).all()
