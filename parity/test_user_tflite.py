"""``--tflite`` / ``--tflite_path``: a user's converted file is the TFLite leg, unconverted.

Files are made the way a user makes them, with ``python -m edge_flash.convert``;
the right one passes, one converted from other weights of the same shape fails
(so the file really is the leg), and a corrupt or ill-fitting one is one line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parity.user_tflite import Architecture, TFLiteFile, TFLiteFileError, match_model
from parity.zoo import TINY_RANDOM, TINY_RANDOM_SEED, write_tiny_random_llama

ROOT = Path(__file__).resolve().parents[1]
TINY_SIZES = ["--prefill_seq_lens", str(TINY_RANDOM.prefill_seq_len),
              "--kv_cache_max_len", str(TINY_RANDOM.kv_cache_max_len)]  # fmt: skip
TINY_FLASH_CASES = "tiny-random-llama-tflite_flash"
pytestmark = pytest.mark.tflite


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)  # fmt: skip


def _convert(checkpoint: Path, out: Path, *options: str) -> Path:
    """``python -m edge_flash.convert``; returns the file it wrote."""
    result = _run("-m", "edge_flash.convert", "--checkpoint_path", str(checkpoint),
                  "--output_path", str(out), *options)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(re.search(r"^wrote (\S+\.tflite) ", result.stdout, re.M).group(1))


@pytest.fixture(scope="module")
def tiny_flash_file(tiny_flash_tflite) -> Path:
    """The tiny zoo model converted with flash attention at the zoo's sizes."""
    return tiny_flash_tflite["file"]


@pytest.fixture(scope="module")
def other_weights_file(tmp_path_factory) -> Path:
    """The tiny architecture with other random weights (another seed), converted."""
    work = tmp_path_factory.mktemp("other-weights")
    checkpoint = write_tiny_random_llama(work / "tiny", seed=TINY_RANDOM_SEED + 1)
    return _convert(checkpoint, work / "out", *TINY_SIZES)


def _pytest(tmp_path, *args: str) -> tuple[int, str]:
    result = _run("-m", "pytest", "-p", "no:cacheprovider", "parity/test_chain_logits.py",
                  "parity/test_chain_greedy.py", "parity/test_chain_kv_cache.py",
                  "-k", TINY_FLASH_CASES, *args,
                  env={**os.environ, "PARITY_RESULTS": str(tmp_path / "r.jsonl")})  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_users_file_passes_as_the_tflite_leg(tiny_flash_file, tmp_path):
    """The converted tiny model, given by --tflite, passes every tflite_flash check."""
    status, output = _pytest(tmp_path, f"--tflite={tiny_flash_file}")
    assert status == pytest.ExitCode.OK, output[-3000:]
    assert f"tflite: {tiny_flash_file} as tiny-random-llama's tflite_flash leg" in output
    assert re.search(r"\b15 passed\b", output), output[-2000:]


def test_file_of_other_weights_fails_so_the_file_is_what_runs(other_weights_file, tmp_path):
    """A same-shaped file with other weights fits, runs, and fails against the oracle."""
    status, output = _pytest(tmp_path, f"--tflite={other_weights_file}", "-x")
    assert status == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    assert "tflite_flash is not close to the oracle_fp64" in output


def test_corrupt_file_is_one_line(tiny_flash_file, tmp_path):
    """A truncated file stops pytest before collection with one ERROR line."""
    broken = tmp_path / "truncated.tflite"
    broken.write_bytes(tiny_flash_file.read_bytes()[:4096])
    status, output = _pytest(tmp_path, f"--tflite={broken}")
    assert status == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(
        f"ERROR: --tflite: model_path '{broken}' is not a valid TFLite model"
    ), output[-2000:]


TINY_ARCH = Architecture(num_layers=3, num_kv_heads=2, head_dim=16, vocab_size=256)


def _file(architecture=TINY_ARCH, kv=100, prefill=88) -> TFLiteFile:
    return TFLiteFile(Path("user.tflite"), architecture, kv, prefill)


@pytest.mark.quick
@pytest.mark.parametrize(
    "file, message",
    [
        (_file(prefill=32), "its longest prefill signature takes 32 tokens, the prompts need 88;"
                            " convert the model's checkpoint with python -m edge_flash.convert"
                            " --checkpoint_path DIR --prefill_seq_lens 88 --kv_cache_max_len 100"),
        (_file(kv=64), "its KV cache has 64 slots, the prompts and tokens need 100"),
        (_file(Architecture(2, 2, 16, 256)), "has 2 layers, 2 KV heads of 16, vocab 256, which is"
                                             " no zoo model's (tiny: 3 layers"),
    ],
    ids=["short-prefill", "short-cache", "other-architecture"],
)  # fmt: skip
def test_ill_fitting_file_is_named_with_how_to_convert_one(file, message):
    """match_model says what differs and which conversion would fit."""
    with pytest.raises(TFLiteFileError) as raised:
        match_model(file, {"tiny": (TINY_ARCH, 88, 100)})
    assert message in str(raised.value)


@pytest.mark.quick
def test_fitting_file_matches_its_model_only():
    """A file fitting exactly one model is that model's."""
    other = Architecture(30, 3, 64, 49152)
    assert match_model(_file(), {"tiny": (TINY_ARCH, 88, 100), "big": (other, 64, 256)}) == "tiny"


@pytest.fixture(scope="module")
def verify_checkpoint_and_file(tmp_path_factory) -> tuple[Path, Path]:
    """A small Llama with a byte tokenizer (verify needs text prompts) and its conversion."""
    from parity.random_checkpoints import write_tiny_random_llama_checkpoint

    work = tmp_path_factory.mktemp("verify-tflite")
    checkpoint = write_tiny_random_llama_checkpoint(work / "ckpt", num_layers=2, seed=5)
    file = _convert(checkpoint, work / "out", "--prefill_seq_lens", "64", "--kv_cache_max_len", "128")
    return checkpoint, file


def _verify(checkpoint: Path, file: Path) -> subprocess.CompletedProcess:
    return _run("-m", "parity.verify", "--checkpoint_path", str(checkpoint), "--prompts", "hi",
                "--max_new_tokens", "4", "--tflite_path", str(file))  # fmt: skip


def test_verify_runs_a_users_file(verify_checkpoint_and_file):
    """``parity.verify --tflite_path`` verifies the file against HF and the oracle, unconverted."""
    result = _verify(*verify_checkpoint_and_file)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "PASSED verify TFLite with prompts 'hi'" in result.stdout
    assert "no conversion" in result.stderr and "converting" not in result.stderr


def test_verify_rejects_a_file_of_another_model_in_one_line(verify_checkpoint_and_file,
                                                            tiny_flash_file):  # fmt: skip
    """A file of another architecture: exit 2 and one line naming both shapes."""
    checkpoint, _ = verify_checkpoint_and_file
    result = _verify(checkpoint, tiny_flash_file)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("parity.verify: error")]
    assert len(errors) == 1 and "does not fit" in errors[0], result.stderr[-2000:]
    assert "it has 3 layers, 2 KV heads of 16, vocab 256; the model has 2 layers" in errors[0]
    assert result.stdout.strip() == ""
