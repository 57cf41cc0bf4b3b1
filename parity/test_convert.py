"""``edge_flash.convert``: argument errors by text, and no half-written .tflite ever.

Conversions that succeed are exercised (once, on the TinyLlama-shaped model)
in test_litert_runner.py; here every case fails before or during conversion.
"""

from __future__ import annotations

import pytest

from edge_flash import build_model, use_attention
from edge_flash.convert import convert_to_tflite, main
from parity.random_checkpoints import write_tiny_random_llama_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return write_tiny_random_llama_checkpoint(directory, tokenizer=False)


def _run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines()


@pytest.mark.quick
@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--checkpoint_path", "/no/such/dir"],
            "edge_flash.convert: error: CheckpointError: checkpoint_path '/no/such/dir' does not"
            " exist; expected an HF checkpoint directory with config.json and *.safetensors",
        ),
        (
            ["--model", "tiny_llama"],
            "edge_flash.convert: error: ValueError: --model tiny_llama needs --checkpoint_path"
            " (no TinyLlama is shipped)",
        ),
        (
            [
                "--checkpoint_path",
                "{ckpt}",
                "--prefill_seq_lens",
                "256",
                "--kv_cache_max_len",
                "128",
            ],
            "edge_flash.convert: error: ValueError: prefill_seq_lens entry 256 exceeds"
            " kv_cache_max_len (128)",
        ),
        (
            ["--checkpoint_path", "{ckpt}", "--q_block_size", "64"],
            "edge_flash.convert: error: ValueError: kernel options ['q_block_size'] need"
            " --use_flash_attention=true|auto",
        ),
        (
            ["--checkpoint_path", "{ckpt}", "--kv_cache_max_len", "4096"],
            "edge_flash.convert: error: ValueError: mask_cache_size (4096) must be in"
            " [0, max_seq_len = 512]",
        ),
    ],
    ids=[
        "missing-checkpoint",
        "tiny-llama-needs-checkpoint",
        "prefill-over-kv",
        "options-no-flash",
        "kv-over-max-positions",
    ],
)
def test_cli_reports_each_problem_in_one_line_and_exits_2(
    capsys, checkpoint, tmp_path, argv, message
):
    """Unusable input: exit status 2 and one line naming the problem; nothing written."""
    argv = [a.replace("{ckpt}", str(checkpoint)) for a in argv] + ["--output_path", str(tmp_path)]
    status, lines = _run_cli(capsys, *argv)
    assert status == 2
    assert lines[-1] == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.quick
def test_cli_rejects_unknown_choices_in_one_line(capsys):
    """An invalid choice exits 2 with argparse's one-line message (no usage dump)."""
    with pytest.raises(SystemExit) as raised:
        main(["--use_flash_attention=maybe"])
    assert raised.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "python -m edge_flash.convert: error: argument --use_flash_attention/--use-flash-attention:"
        " invalid choice:"
        " 'maybe' (choose from 'true', 'false', 'auto')"
    ]


@pytest.mark.quick
def test_library_checks_arguments_before_any_work(checkpoint, tmp_path):
    """convert_to_tflite names a bad quantize, length or a too-small mask cache."""
    model = build_model(checkpoint, mask_cache_size=64)
    with pytest.raises(ValueError, match=r"quantize \('int3'\) must be one of"):
        convert_to_tflite(model, tmp_path, [16], 64, quantize="int3")
    with pytest.raises(ValueError, match=r"prefill_seq_lens \(\[0\]\) must hold positive ints"):
        convert_to_tflite(model, tmp_path, [0], 64)
    with pytest.raises(ValueError, match="mask cache has size 64 but kv_cache_max_len is 128"):
        convert_to_tflite(model, tmp_path, [16], 128)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError("kernel exploded"), KeyboardInterrupt()])
def test_failed_or_interrupted_conversion_leaves_no_file(checkpoint, tmp_path, error):
    """A conversion that raises midway (or is interrupted) leaves no .tflite and no temp dir."""

    def exploding_attention(
        q, k, v, head_size, mask=None, scale=None, softcap=None, alibi_bias=None
    ):
        raise error

    model = use_attention(build_model(checkpoint, mask_cache_size=64), exploding_attention)
    with pytest.raises((type(error), Exception)) as raised:
        convert_to_tflite(model, tmp_path / "out.tflite", [16], 64, progress=False)
    assert _caused_by(raised.value, type(error))
    assert list(tmp_path.iterdir()) == []


def _caused_by(exception: BaseException, kind: type) -> bool:
    """Whether ``exception`` is, or was raised from, a ``kind`` (torch.export may wrap it)."""
    while exception is not None:
        if isinstance(exception, kind):
            return True
        exception = exception.__cause__ or exception.__context__
    return False


def test_kernel_error_message_survives_the_exporter(checkpoint, tmp_path):
    """The exporter keeps the kernel's own error text, so users see what failed."""

    def exploding_attention(
        q, k, v, head_size, mask=None, scale=None, softcap=None, alibi_bias=None
    ):
        raise RuntimeError("kernel exploded")

    model = use_attention(build_model(checkpoint, mask_cache_size=64), exploding_attention)
    with pytest.raises(Exception, match="kernel exploded"):
        convert_to_tflite(model, tmp_path, [16], 64, progress=False)
    assert list(tmp_path.iterdir()) == []
