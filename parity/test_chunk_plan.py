"""``edge_flash.runtime.chunk_plan``: LiteRT-LM's chunking of a long prompt, as a pure function.

The rule: the largest signature while the rest of the prompt exceeds it, then
the smallest signature that fits the rest (the last chunk is padded to it).
The expected plans below are worked out by hand from that rule, not computed.
No model is converted here (marker ``quick``).
"""

from __future__ import annotations

import pytest

from edge_flash.runtime import chunk_plan, smallest_fitting_signature

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("prompt_len", "signatures", "plan"),
    [
        pytest.param(16, (8, 32), [16], id="t16-fits-32-one-chunk"),
        pytest.param(88, (5, 7), [7] * 12 + [4], id="t88-sig5-7-twelve-full-then-4"),
        pytest.param(9, (5, 7), [7, 2], id="t9-sig5-7"),
        pytest.param(120, (10, 28), [28, 28, 28, 28, 8], id="t120-sig10-28"),
        pytest.param(70, (8, 32), [32, 32, 6], id="t70-sig8-32"),
        pytest.param(37, (16,), [16, 16, 5], id="t37-sig16"),
    ],
)
def test_plan_takes_the_largest_signature_while_the_rest_exceeds_it(prompt_len, signatures, plan):
    """Full chunks of the largest signature, then the rest as one chunk; sizes sum to T."""
    assert chunk_plan(prompt_len, signatures) == plan


@pytest.mark.parametrize(
    ("rest", "signatures", "signature"),
    [
        pytest.param(4, (5, 7), 5, id="rest4-padded-to-5"),
        pytest.param(6, (5, 7), 7, id="rest6-padded-to-7"),
        pytest.param(8, (10, 28), 10, id="rest8-padded-to-10"),
        pytest.param(5, (5, 7), 5, id="rest5-exact"),
    ],
)
def test_rest_that_fits_no_signature_exactly_goes_to_the_smallest_that_fits(
    rest, signatures, signature
):
    """The last chunk runs through the shortest signature with at least its rows."""
    assert smallest_fitting_signature(rest, signatures) == signature


def test_multiple_of_the_largest_signature_ends_with_a_full_chunk_not_an_empty_one():
    """Remainder 0: 64 tokens with (8, 32) are two chunks of 32, no third chunk of 0."""
    assert chunk_plan(64, (8, 32)) == [32, 32]
    assert chunk_plan(32, (8, 32)) == [32]


def test_prompt_shorter_than_every_signature_is_one_padded_chunk():
    """3 tokens with (8, 32): one chunk of 3, run through the 8-row signature."""
    assert chunk_plan(3, (8, 32)) == [3]
    assert smallest_fitting_signature(3, (8, 32)) == 8


def test_signature_order_and_duplicates_do_not_change_the_plan():
    """Signature lengths are a set: (32, 8, 8) plans like (8, 32)."""
    assert chunk_plan(70, (32, 8, 8)) == chunk_plan(70, (8, 32)) == [32, 32, 6]


@pytest.mark.parametrize(
    ("prompt_len", "signatures", "error", "match"),
    [
        pytest.param(0, (8,), ValueError, r"prompt_len \(0\) must be >= 1", id="empty-prompt"),
        pytest.param(-3, (8,), ValueError, r"prompt_len \(-3\) must be >= 1", id="negative"),
        pytest.param(4.0, (8,), TypeError, r"prompt_len \(4.0\) must be an int", id="float-len"),
        pytest.param(True, (8,), TypeError, r"prompt_len \(True\) must be an int", id="bool-len"),
        pytest.param(4, (), ValueError, r"signature_lengths is empty", id="no-signatures"),
        pytest.param(4, (8, 0), ValueError, r"\(\[8, 0\]\) must hold lengths >= 1",
                     id="zero-signature"),  # fmt: skip
        pytest.param(4, (8, 2.5), TypeError, r"must hold ints, not 2.5", id="float-signature"),
        pytest.param(4, 8, TypeError, r"signature_lengths \(8\) must be a sequence", id="int-sigs"),
    ],
)
def test_bad_input_raises_naming_the_argument_and_its_value(prompt_len, signatures, error, match):
    """Bad prompt lengths or signature lengths raise TypeError / ValueError naming them."""
    with pytest.raises(error, match=match):
        chunk_plan(prompt_len, signatures)


def test_rows_beyond_every_signature_raise():
    """No signature of 40 rows among (8, 32): ValueError naming the rows and the lengths."""
    with pytest.raises(ValueError, match=r"rows \(40\) exceeds every signature length \[8, 32\]"):
        smallest_fitting_signature(40, (8, 32))


def test_planned_chunks_tile_the_prompt_each_at_its_own_position():
    """The harness's chunks of 88 tokens with (5, 7): contiguous, fed where they start,
    each through the signature chunk_plan's rule picks (7, and 5 for the last 4)."""
    from parity.chunked import Chunk, planned_chunks

    chunks = planned_chunks(88, (5, 7))
    assert chunks[0] == Chunk(0, 7, 0, 7) and chunks[-1] == Chunk(84, 88, 84, 5)
    assert all(c.start == c.position for c in chunks)
    assert [c.start for c in chunks[1:]] == [c.stop for c in chunks[:-1]]


def test_injected_chunker_moves_every_chunk_after_the_first_one_position_early():
    """parity.injected_bugs.chunks_starting_one_early: same tokens, later positions - 1."""
    from parity.chunked import planned_chunks
    from parity.injected_bugs import chunks_starting_one_early

    right, wrong = planned_chunks(9, (5, 7)), chunks_starting_one_early(9, (5, 7))
    assert [(c.start, c.stop) for c in wrong] == [(c.start, c.stop) for c in right]
    assert [c.position for c in wrong] == [0, 6]
