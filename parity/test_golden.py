"""Golden files: the zoo's outputs against golden/test_golden/<model>.json, and the
golden machinery itself (missing file, changed outputs, update only after a full pass)."""

from __future__ import annotations

import json

import pytest

from parity import golden
from parity import injected_bugs as bugs
from parity import legs as L
from parity.chain import Chain
from parity.zoo import TINY_RANDOM, ZOO

GOLDEN_MODELS = [
    pytest.param(
        model,
        id=model.name,
        # with the model's chain cases on one pytest-xdist worker (parity/cases.py)
        marks=[
            *(getattr(pytest.mark, m) for m in model.marks),
            pytest.mark.xdist_group(model.name),
        ],
    )
    for model in ZOO
    if model.has_golden
]
MAX_GOLDEN_BYTES = 10 * 2**20  # the "well under 10 MB" for the whole directory


@pytest.mark.parametrize("model", GOLDEN_MODELS)
def test_golden_outputs_match_stored(model, chains, record_result):
    """Oracle logits summaries and greedy ids of every leg equal the stored golden file."""
    chain = chains.get(model)
    obtained = golden.chain_payload(chain)
    path = golden.golden_path(model.name)
    try:
        golden.check_against_golden(obtained)
        passed = True
    finally:
        record_result(suite="parity", case_id=f"{model.name}-golden", model=model.name,
                      legs=f"{L.ORACLE}-vs-golden", metric="golden_match",
                      value=float(locals().get("passed", False)), tolerance=1.0,
                      passed=locals().get("passed", False), details=str(path))  # fmt: skip


@pytest.mark.quick
def test_golden_directory_is_small():
    """Everything under golden/ stays well under 10 MB."""
    total = sum(p.stat().st_size for p in golden.golden_dir().rglob("*") if p.is_file())
    assert total < MAX_GOLDEN_BYTES, f"golden/ holds {total} bytes"


@pytest.fixture
def tiny_payload(chains):
    chain = chains.get(TINY_RANDOM)
    return golden.chain_payload(chain)


@pytest.mark.quick
def test_missing_golden_file_fails_and_says_how_to_create_it(tiny_payload, tmp_path):
    """No golden file: the check fails (never passes, never writes one) and names the command."""
    with pytest.raises(AssertionError, match="is missing") as raised:
        golden.check_against_golden(tiny_payload, tmp_path)
    assert "python -m parity.golden --update" in str(raised.value)
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.quick
def test_changed_outputs_fail_naming_the_change_and_write_obtained_file(tiny_payload, tmp_path):
    """A different model hash, greedy id and logit are each named; obtained values land beside."""
    stored = json.loads(json.dumps(tiny_payload))
    stored["provenance"]["model_hash"] = "0" * 16
    stored["provenance"]["packages"]["torch"] = "0.0.0"
    prompt = stored["prompts"]["ids-9"]
    prompt["greedy_ids"][3] += 1
    prompt["logits"]["generation step 0"]["top_values"][0] += 1e-6
    path = golden.golden_path(TINY_RANDOM.name, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(stored))
    with pytest.raises(AssertionError) as raised:
        golden.check_against_golden(tiny_payload, tmp_path)
    message = str(raised.value)
    assert "model hash changed: 0000000000000000 ->" in message
    assert "oracle_fp64 greedy ids differ from step 3" in message
    assert "generation step 0: top-8 logits moved by 1.000e-06" in message
    assert "torch 0.0.0 -> " in message and "python -m parity.golden --update" in message
    obtained = path.with_suffix(".obtained.json")
    assert json.loads(obtained.read_text()) == json.loads(golden._dumps(tiny_payload))


@pytest.mark.quick
def test_update_then_check_round_trips(chains, tmp_path):
    """update() verifies the chain, writes the file, and the check then passes."""
    chain = chains.get(TINY_RANDOM)
    written = golden.update([chain], tmp_path, say=lambda text: None)
    assert written == [golden.golden_path(TINY_RANDOM.name, tmp_path)]
    golden.check_against_golden(golden.chain_payload(chain), tmp_path)
    assert golden.update([chain], tmp_path, say=lambda text: None) == []  # unchanged: no rewrite


@pytest.mark.quick
def test_update_writes_nothing_when_a_chain_check_fails(chains, tmp_path):
    """A chain whose standard leg has a bug: update raises before writing any file."""
    good = chains.get(TINY_RANDOM)
    prepared, length = good.prepared, TINY_RANDOM.kv_cache_max_len

    def broken_standard():
        model = L.build_reauthored(prepared.checkpoint, TINY_RANDOM.builder, length)
        return L.ReauthoredLeg(bugs.inject(model, "kv_write_shift", 1), length, L.STD)

    golden.collect(good)  # the good chain's runs, reused by the broken one
    broken = Chain(prepared, good.attention_impl, None, {L.STD: broken_standard}, reuse=good)
    with pytest.raises(AssertionError, match="reauthored_std"):
        golden.update([good, broken], tmp_path, say=lambda text: None)
    assert not list(tmp_path.rglob("*.json"))


def _small_payload(model: str = "tiny-random-llama") -> dict:
    """A payload with every key compare() reads, one prompt and one row."""
    row = {"top_ids": [3, 1], "top_values": [2.0, 1.0], "row_len": 4, "row_sum": 3.5, "row_l2": 2.5}
    prompt = {"prompt_ids": [1, 2], "greedy_ids": [3], "greedy_ids_fp32_legs": {},
              "near_tie_from_step": None, "logits": {"generation step 0": row}}  # fmt: skip
    provenance = {"model": model, "model_hash": "ab" * 8, "date": "2026-12-02", "packages": {}}
    return {"provenance": provenance, "prompts": {"ids-9": prompt}}


def _plant(tmp_path, text: str):
    path = golden.golden_path("tiny-random-llama", tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_corrupt_golden_file_is_named_with_how_to_regenerate_it(tmp_path):
    """Not JSON: GoldenFileError naming the file, the JSON error and the --update command."""
    path = _plant(tmp_path, '{"provenance" {')
    with pytest.raises(golden.GoldenFileError) as raised:
        golden.check_against_golden(_small_payload(), tmp_path)
    message = str(raised.value)
    assert f"golden file {path} is not valid JSON (Expecting ':' delimiter" in message
    assert "python -m parity.golden --update" in message and "\n" not in message


def test_a_golden_file_missing_a_key_names_the_key_and_the_file(tmp_path):
    """A row without row_l2: GoldenFileError naming the file and the key's path, not KeyError."""
    stored = _small_payload()
    del stored["prompts"]["ids-9"]["logits"]["generation step 0"]["row_l2"]
    path = _plant(tmp_path, json.dumps(stored))
    with pytest.raises(golden.GoldenFileError) as raised:
        golden.check_against_golden(_small_payload(), tmp_path)
    assert str(raised.value).startswith(
        f"golden file {path} lacks the key 'prompts' / 'ids-9' / 'logits' /"
        " 'generation step 0' / 'row_l2'; regenerate it with `python -m parity.golden --update`"
    )


def test_update_replaces_a_corrupt_golden_file_and_keeps_it_beside(tmp_path, monkeypatch):
    """--update over a corrupt file: the new one is written, the old bytes kept as .corrupt."""
    path = _plant(tmp_path, "not json at all")
    payload = _small_payload()
    monkeypatch.setattr(golden, "verified_payload", lambda chain, say: payload)
    said = []
    assert golden.update([object()], tmp_path, say=said.append) == [path]
    assert golden.read_golden(path) == payload
    assert path.with_name(path.name + ".corrupt").read_text() == "not json at all"
    assert any("is not valid JSON" in line and ".corrupt" in line for line in said)


def test_golden_cli_exits_2_with_one_line_on_a_corrupt_golden_file(tmp_path, monkeypatch, capsys):
    """python -m parity.golden on an unreadable golden file: exit 2, one line naming it."""
    monkeypatch.setenv(golden.GOLDEN_DIR_ENV, str(tmp_path))
    path = _plant(tmp_path, "{")
    monkeypatch.setattr(golden, "_chains", lambda names, work: [object()])
    monkeypatch.setattr(golden, "chain_payload", lambda chain: _small_payload())
    assert golden.main(["--models", "tiny-random-llama"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"parity.golden: error: golden file {path} is not valid JSON")
