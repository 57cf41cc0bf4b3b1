"""``--model-builder``: a user's builder replaces the re-authored legs, the oracle stays the zoo's.

Every builder with one of parity's model bugs (``parity.injected_bugs.BUGGY_BUILDERS``)
fails the chain checks with a diagnosis naming layer 1, where the bug is; the
plain builder passes; bad specs and bad models are one clear error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from parity import checks
from parity import injected_bugs as bugs
from parity import legs as L
from parity.chain import Chain
from parity.model_builder import ModelBuilderError, load_model_builder
from parity.zoo import TINY_RANDOM

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "parity.model_builder:plain_builder"


_CHAINS: dict = {}


def _chain(chains, spec: str) -> Chain:
    """The tiny model's chain with ``spec`` as builder, once per session; the session
    chain's oracle runs and spreads are reused (they do not depend on the builder)."""
    if spec not in _CHAINS:
        good = chains.get(TINY_RANDOM)
        builder = load_model_builder(spec)
        _CHAINS[spec] = Chain(good.prepared, chains.attention_impl, None, reuse=good,
                              model_builder=builder)  # fmt: skip
    return _CHAINS[spec]


def _failures(chain: Chain, leg: str) -> list:
    """The messages of the logits and KV cache checks that fail for ``leg``, every prompt."""
    failures = []
    for prompt in chain.prepared.prompt_ids:
        runs = chain.runs(prompt, [leg])
        common = dict(spread=chain.spread(prompt), case_id=f"builder-{prompt}",
                      model=TINY_RANDOM.name, record=lambda **row: None,
                      token_text=lambda token: f"tok{token}")  # fmt: skip
        for check, args in ((checks.check_logits, ("prefill",)), (checks.check_logits, ("decode",)),
                            (checks.check_kv_cache, ())):  # fmt: skip
            try:
                check(runs, leg, *args, **common)
            except AssertionError as error:
                failures.append(str(error))
    return failures


def test_every_model_bug_comes_as_a_builder():
    """BUGGY_BUILDERS has one loadable builder per model bug."""
    assert set(bugs.BUGGY_BUILDERS) == set(bugs.MODEL_BUGS)
    for spec in bugs.BUGGY_BUILDERS.values():
        assert callable(load_model_builder(spec).fn)


@pytest.mark.quick
@pytest.mark.parametrize("bug", sorted(bugs.BUGGY_BUILDERS))
@pytest.mark.parametrize("leg", [L.STD, L.FLASH])
def test_builder_with_a_model_bug_fails_and_names_its_layer(bug, leg, chains):
    """Both re-authored legs of a buggy builder fail; each failure names layer 1."""
    failures = _failures(_chain(chains, bugs.BUGGY_BUILDERS[bug]), leg)
    assert failures, f"no check failed {leg} of the builder with {bug}"
    for message in failures:
        assert "layer 1" in message, message


@pytest.mark.quick
@pytest.mark.parametrize("leg", [L.STD, L.FLASH])
def test_plain_builder_passes(leg, chains):
    """The plain builder's legs pass the same checks."""
    assert _failures(_chain(chains, PLAIN), leg) == []


@pytest.mark.quick
def test_oracle_is_built_by_the_zoo_not_by_the_candidate(chains):
    """A buggy builder leaves the oracle's runs exactly as the zoo builder gives them."""
    good = chains.get(TINY_RANDOM)
    builder = load_model_builder(bugs.BUGGY_BUILDERS["kv_write_shift"])
    buggy = Chain(good.prepared, chains.attention_impl, None, model_builder=builder)
    for prompt in good.prepared.prompt_ids:
        expected = good.runs(prompt, [])[L.ORACLE]
        actual = buggy.runs(prompt, [])[L.ORACLE]
        assert torch.equal(actual.step_logits, expected.step_logits)
        assert actual.chosen == expected.chosen


def _returns(value):
    def build(checkpoint_path, kv_cache_max_len):
        return value

    return build


@pytest.mark.quick
@pytest.mark.parametrize(
    "value, message",
    [
        (3, "returned a int, not a torch.nn.Module"),
        (torch.nn.Linear(2, 2), "returned a Linear without ['config', 'transformer_blocks']"),
    ],
    ids=["not-a-module", "not-a-decoder"],
)
def test_builder_returning_no_decoder_is_named(value, message, monkeypatch, tmp_path):
    """A model without the decoder interface fails with what it lacks."""
    import parity.model_builder as module

    monkeypatch.setattr(module, "plain_builder", _returns(value))
    with pytest.raises(ModelBuilderError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_model_builder(PLAIN).build(tmp_path, 16)


@pytest.mark.quick
@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-colon", "must look like package.module:function"),
        ("parity.no_such_module:f", "cannot import module 'parity.no_such_module'"),
        ("parity.model_builder:missing", "has no attribute 'missing'"),
        ("parity.model_builder:MODEL_BUILDER_ENV", "is a str, not callable"),
        ("parity.legs:run_leg", "must take (checkpoint_path, kv_cache_max_len)"),
    ],
)
def test_bad_spec_is_one_error_naming_it(spec, message):
    """Each bad --model-builder spec is a ModelBuilderError that says what is wrong."""
    with pytest.raises(ModelBuilderError) as raised:
        load_model_builder(spec)
    assert message in str(raised.value) and spec in str(raised.value)


def _pytest(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.quick
def test_suite_run_with_a_buggy_builder_fails_naming_the_layer(tmp_path, monkeypatch):
    """``pytest parity ... --model-builder=<buggy>``: the plug-in path fails and names layer 1."""
    monkeypatch.setenv("PARITY_RESULTS", str(tmp_path / "results.jsonl"))
    spec = bugs.BUGGY_BUILDERS["mask_for_shorter_cache"]
    result = _pytest("parity/test_chain_logits.py", "-m", "quick", "-k", "prefill and ids-88",
                     f"--model-builder={spec}")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    assert "first layer over budget: layer 1" in output, output[-3000:]
    assert f"--model-builder {spec}" in output, "the reproduce line must name the builder"


@pytest.mark.quick
def test_suite_run_with_a_bad_spec_stops_with_one_line(tmp_path, monkeypatch):
    """A spec that does not load stops pytest before collection with one ERROR line."""
    monkeypatch.setenv("PARITY_RESULTS", str(tmp_path / "results.jsonl"))
    result = _pytest("parity/test_chain_logits.py", "--model-builder=parity.model_builder:missing")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert lines == [
        "ERROR: --model-builder ('parity.model_builder:missing'): 'parity.model_builder'"
        " has no attribute 'missing'"
    ]
