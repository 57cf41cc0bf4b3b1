"""The verify CLI (``python -m parity.verify``): PASSED/FAILED lines, exit codes, one-line errors.

Runs in-process on a TinyLlama-shaped checkpoint (2 layers, byte tokenizer)
written by the test; SmolLM2 itself is verified by the chain suites.
"""

from __future__ import annotations

import types

import pytest

import edge_flash
from parity import injected_bugs, verify
from parity.random_checkpoints import write_tinyllama_shaped_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tinyllama_shaped_checkpoint(tmp_path_factory.mktemp("verify"), seed=5)


def _run(capsys, *argv):
    status = verify.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "extra, kind",
    [([], "standard"), (["--use_flash_attention"], "flash"), (["--use-flash-attention=auto"], "auto")],
    ids=["standard", "flash", "auto"],
)
def test_verify_passes_with_one_line_per_check(checkpoint, capsys, extra, kind):
    """Each check prints one PASSED line with its measured difference; exit status 0."""
    status, out, _ = _run(capsys, "--checkpoint_path", checkpoint, "--max_new_tokens", 6, *extra)
    assert status == 0, out
    lines = [line for line in out.splitlines() if line.startswith(("PASSED", "FAILED"))]
    assert [line.split(":")[0] for line in lines] == [
        "PASSED verify with input IDs [1, 2, 3, 4]",
        "PASSED verify with prompts 'What is a turboprop?'",
        "PASSED verify_reauthored_model",
    ]
    assert "vs HF" in lines[0] and "vs float64 oracle" in lines[0] and "allowed" in lines[0]
    assert "6/6 greedy tokens identical" in lines[1]
    assert f"({kind} attention)" in lines[2]


@pytest.mark.tflite
def test_verify_tflite_adds_a_passing_litert_line(checkpoint, capsys):
    """--tflite converts the model under test and checks LiteRT's outputs too."""
    status, out, _ = _run(
        capsys, "--checkpoint_path", checkpoint, "--max_new_tokens", 6, "--use_flash_attention",
        "--tflite",
    )  # fmt: skip
    assert status == 0, out
    assert "PASSED verify TFLite with prompts 'What is a turboprop?'" in out
    assert "vs PyTorch (reauthored_flash)" in out


def test_verify_fails_with_exit_1_and_names_the_layer(checkpoint, capsys, monkeypatch):
    """A KV write one slot late in block 1 of the model under test: FAILED lines, exit 1."""
    build = edge_flash.build_model

    def broken_build(*args, **kwargs):
        return injected_bugs.inject(build(*args, **kwargs), "kv_write_shift", 1)

    monkeypatch.setattr(edge_flash, "build_model", broken_build)
    status, out, _ = _run(capsys, "--checkpoint_path", checkpoint, "--max_new_tokens", 4)
    assert status == 1
    assert "FAILED verify with input IDs" in out and "FAILED verify_reauthored_model" in out
    assert "first layer over budget: layer 1 of" in out  # hf, since the oracle shares the bug
    assert "a bug in the re-authored code" in out


@pytest.mark.quick
def test_missing_checkpoint_is_one_error_line_with_exit_2(tmp_path, capsys):
    """A path that does not exist: exit 2, one line naming it, no traceback."""
    status, out, err = _run(capsys, "--checkpoint_path", tmp_path / "nope")
    assert status == 2 and out == ""
    assert err.strip().count("\n") == 0 and "nope' does not exist" in err


@pytest.mark.quick
def test_checkpoint_without_tokenizer_is_one_error_line(tmp_path, capsys):
    """Prompts need a tokenizer: a checkpoint without one gives one clear line, exit 2."""
    bare = write_tinyllama_shaped_checkpoint(tmp_path / "bare", vocab_size=128)  # < 259: none
    status, _, err = _run(capsys, "--checkpoint_path", bare)
    assert status == 2 and "has no tokenizer" in err and err.strip().count("\n") == 0


@pytest.mark.quick
@pytest.mark.parametrize(
    "argv, expected",
    [([], False), (["--use_flash_attention"], True), (["--use_flash_attention=true"], True),
     (["--use_flash_attention", "FALSE"], False), (["--use-flash-attention=auto"], "auto")],
    ids=["absent", "alone", "true", "false", "auto"],
)  # fmt: skip
def test_use_flash_attention_takes_convert_values_and_the_bare_switch(argv, expected):
    """--use_flash_attention alone is true (the seed's switch); =true|false|auto as in convert."""
    assert verify.parse_args(argv).use_flash_attention == expected


@pytest.mark.quick
@pytest.mark.parametrize("choice, min_seq_q", [("true", 1), ("auto", edge_flash.AUTO_FLASH_MIN_SEQ_LEN)])
def test_model_builder_gets_flash_routed_per_choice(checkpoint, monkeypatch, choice, min_seq_q):
    """With --model-builder, true routes flash for every call, auto from AUTO_FLASH_MIN_SEQ_LEN."""
    calls = []
    monkeypatch.setattr(edge_flash, "use_attention",
                        lambda model, fn, **kw: calls.append((fn, kw.get("min_seq_q", 1))) or model)
    args = verify.parse_args(["--model_builder", "parity.model_builder:plain_builder",
                              f"--use_flash_attention={choice}"])  # fmt: skip
    prepared = types.SimpleNamespace(zoo=types.SimpleNamespace(kv_cache_max_len=64),
                                     checkpoint=checkpoint)  # fmt: skip
    verify._model_under_test(prepared, args)()
    assert calls == [(edge_flash.flash_attention, min_seq_q)]


@pytest.mark.quick
def test_bad_argument_exits_2_in_one_line(capsys):
    """An unknown flag or a non-positive --max_new_tokens: exit 2 with one line."""
    with pytest.raises(SystemExit) as raised:
        verify.main(["--bogus"])
    assert raised.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert verify.main(["--max_new_tokens", "0"]) == 2


def test_input_id_outside_the_vocab_is_one_error_line(checkpoint, capsys):
    """--input_ids 999999 on a 512-token vocab: exit 2, one line naming the ids, no traceback."""
    status, out, err = _run(capsys, "--checkpoint_path", checkpoint, "--input_ids", 1, 999999)
    assert status == 2 and out == ""
    assert "--input_ids ([999999]) must be token ids in [0, 512)" in err
    assert err.strip().splitlines()[-1].startswith("parity.verify: error: ValueError")
