"""parity.spread_cache: a kept error spread is the one a fresh measurement gives, and any
change to what it was measured on is a different key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from parity import legs as L
from parity.chain import Chain, TFLiteStore
from parity.spread_cache import load_spread, save_spread, spread_key
from parity.zoo import TINY_RANDOM

pytestmark = pytest.mark.quick


def _same(a, b) -> bool:
    parts = ("prefill_logits", "step_logits", "kv", "hidden")
    return a.samples == b.samples and all(
        torch.equal(getattr(a, p).row_max_rms, getattr(b, p).row_max_rms)
        and torch.equal(getattr(a, p).element_rms_max, getattr(b, p).element_rms_max)
        and getattr(a, p).null_ratio == getattr(b, p).null_ratio
        for p in parts
    )


@pytest.fixture
def fresh_chain(chains, tmp_path, attention_impl):
    """A new chain of the tiny model over an empty store directory, reusing the session
    chain's leg runs but none of its spreads."""
    session = chains.get(TINY_RANDOM)
    store = TFLiteStore(tmp_path, attention_impl, "edge_flash:flash_attention")

    def make():
        chain = Chain(session.prepared, attention_impl, store, reuse=session)
        chain._spreads = {}
        return chain

    return session, make, tmp_path / "spreads"


def test_a_kept_spread_equals_the_measured_one_and_is_read_back(fresh_chain):
    session, make, directory = fresh_chain
    prompt = "ids-9"
    measured = make().spread(prompt)
    (kept,) = directory.glob("*.pt")
    assert _same(measured, session.spread(prompt))  # the session's own measurement
    assert _same(load_spread(kept), measured)
    kept.write_bytes(b"")  # a later chain reads the file, so a damaged one must not load
    assert load_spread(kept) is None
    again = make().spread(prompt)  # measured again and replaced
    assert _same(again, measured) and _same(load_spread(kept), measured)


def test_save_then_load_round_trips_every_part(fresh_chain, tmp_path):
    session, _, _ = fresh_chain
    spread = session.spread("ids-1")
    save_spread(tmp_path / "x" / "s.pt", spread)
    assert _same(load_spread(tmp_path / "x" / "s.pt"), spread)
    assert load_spread(tmp_path / "missing.pt") is None


def test_the_key_changes_with_the_oracle_run_the_model_and_the_arguments(fresh_chain):
    session, _, _ = fresh_chain
    run = session.runs("ids-9", [])[L.ORACLE]
    key = spread_key(run, "model-a", z=4.0)
    assert spread_key(run, "model-a", z=4.0) == key
    assert spread_key(run, "model-b", z=4.0) != key
    assert spread_key(run, "model-a", z=5.0) != key
    nudged = run.prefill_logits.clone()
    nudged[0, 0] += 1e-12  # one element of what the deviations are taken from
    assert spread_key(dataclasses.replace(run, prefill_logits=nudged), "model-a", z=4.0) != key
    refed = dataclasses.replace(run, fed=[*run.fed[:-1], run.fed[-1] + 1])
    assert spread_key(refed, "model-a", z=4.0) != key
