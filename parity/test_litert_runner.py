"""The converted flash TFLite model of a TinyLlama-shaped checkpoint, run in LiteRT.

One conversion per session (through the CLI, so its success path is tested
too): TinyLlama-1.1B's config.json fields with 2 layers and a 512-token vocab,
flash attention, prefill signatures of 16 and 64 tokens, KV cache 128, fp32,
the causal mask computed from the positions (the CLI's default,
``edge_flash.causal_mask``; the zoo's conversions keep litert-torch's mask cache).
The runner's cache readback is compared with the PyTorch flash model and its
errors are tested by text, chunked prefill (``prefill_chunked``) included. The converted models' logits and greedy tokens are
judged against the float64 oracle by the chain suites (``parity/test_chain_*.py``,
TFLite legs of the zoo's models, with the derived error model).
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from edge_flash import LiteRTInputError, LiteRTModelError, LiteRTRunner, TorchRunner, build_model
from edge_flash.convert import main as convert_main
from edge_flash.runtime import tflite_op_counts
from parity.random_checkpoints import write_tinyllama_shaped_checkpoint

pytestmark = pytest.mark.tflite

SEED = 0
KV_LEN = 128
PREFILL_LENS = (16, 64)
DECODE_STEPS = 8
MODEL = "tinyllama-shaped-2l"
# 10 ids use prefill_16 (padded), 40 ids use prefill_64: both signatures.
PROMPTS = {
    "ids-10": [int(i) for i in np.random.default_rng(SEED).integers(3, 512, size=10)],
    "ids-40": [int(i) for i in np.random.default_rng(SEED + 1).integers(3, 512, size=40)],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tinyllama")
    return write_tinyllama_shaped_checkpoint(directory, seed=SEED, tokenizer=False)


@pytest.fixture(scope="module")
def tflite_path(checkpoint, tmp_path_factory):
    """Converts through the CLI and returns the path it reports."""
    output = tmp_path_factory.mktemp("tflite")
    argv = ["--model", "auto", "--checkpoint_path", str(checkpoint), "--use_flash_attention=true"]
    argv += ["--prefill_seq_lens", *map(str, PREFILL_LENS), "--kv_cache_max_len", str(KV_LEN)]
    argv += ["--quantize", "none", "--output_path", str(output)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = convert_main(argv)
    assert status == 0
    line = stdout.getvalue().strip().splitlines()[-1]
    match = re.fullmatch(r"wrote (\S+\.tflite) in [\d.]+ s \(([\d.]+) MB; ops: (.*)\)", line)
    assert match, f"unexpected CLI summary: {line!r}"
    path = match.group(1)
    assert [p.name for p in output.iterdir()] == ["decoderonlymodel_flash_f32_ekv128.tflite"]
    return path


@pytest.fixture(scope="module")
def flash_model(checkpoint):
    return build_model(checkpoint, use_flash_attention=True)


def _legs(prompt, tflite_path, flash_model):
    """Prefill + greedy decode on LiteRT and PyTorch fp32 (PyTorch's greedy tokens fed to both)."""
    legs = {"tflite": LiteRTRunner(tflite_path), "torch": TorchRunner(flash_model, KV_LEN)}
    results = {name: {"prefill": runner.prefill(prompt)} for name, runner in legs.items()}
    # Every leg decodes the oracle's greedy tokens, so the steps stay comparable.
    token = int(np.argmax(results["torch"]["prefill"][-1]))
    steps = {name: [] for name in legs}
    for _ in range(DECODE_STEPS):
        for name, runner in legs.items():
            steps[name].append(runner.decode(token))
        token = int(np.argmax(steps["torch"][-1]))
    for name in legs:
        results[name]["decode"] = np.stack(steps[name])
        results[name]["kv"] = legs[name].kv_cache()
    return results


@pytest.fixture(scope="module")
def runs(tflite_path, flash_model):
    return {name: _legs(prompt, tflite_path, flash_model) for name, prompt in PROMPTS.items()}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tflite_kv_cache_matches_pytorch_on_written_slots(runs, prompt):
    """After prefill and decode, LiteRT's cache equals PyTorch's on every written slot."""
    written = len(PROMPTS[prompt]) + DECODE_STEPS
    for layer, ((k_lite, v_lite), (k_torch, v_torch)) in enumerate(
        zip(runs[prompt]["tflite"]["kv"], runs[prompt]["torch"]["kv"], strict=True)
    ):
        # A readback of the wrong slot, layer or layout is off by O(1) (values of
        # size ~1); two correct fp32 runs differ by rounding, which the chain's
        # KV-cache check bounds (its allowance on these models is ~1e-5): 1e-4
        # lies between the two, so this tests the readback, not the precision.
        np.testing.assert_allclose(
            k_lite[0, :written], k_torch[0, :written], rtol=0, atol=1e-4, err_msg=f"layer {layer} K"
        )
        np.testing.assert_allclose(
            v_lite[0, :written], v_torch[0, :written], rtol=0, atol=1e-4, err_msg=f"layer {layer} V"
        )


def test_flash_tflite_has_no_sdpa_composite(tflite_path):
    """The flash model holds no odml.scaled_dot_product_attention composite body."""
    counts = tflite_op_counts(tflite_path)
    assert set(PREFILL_LENS) <= {int(n.split("_")[1]) for n in counts if n.startswith("prefill_")}
    assert not any("scaled_dot_product_attention" in name for name in counts)
    assert counts["decode"]["BATCH_MATMUL"] > 0


def _constant_shapes(path) -> list:
    """Shapes of the tensors that hold data in the file (weights and other constants)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    shapes = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            data = model.Buffers(tensor.Buffer())
            if data.DataLength() > 0 or data.Size() > 0:
                shapes.append(tuple(tensor.ShapeAsNumpy().tolist()))
    return shapes


def test_computed_mask_stores_no_mask_cache(tflite_path):
    """No constant of the cache's KV_LEN x KV_LEN rows: the file holds column indices only.

    (With ``--causal_mask cache`` the converter stores the cache as a (128, 1, 1, 128)
    constant, rows first for its gather; no weight of this model has two dimensions of 128.)
    """
    shapes = _constant_shapes(tflite_path)
    assert shapes, "the parser found no constants at all (weights are constants)"
    assert not [s for s in shapes if s.count(KV_LEN) >= 2]
    assert (KV_LEN,) in shapes or (1, KV_LEN) in shapes  # the column index the rows compare


def test_runner_errors_name_the_problem(tflite_path, tmp_path):
    """Missing or corrupt files and inputs the signatures cannot take: one clear line."""
    with pytest.raises(LiteRTModelError, match=f"model_path '{tmp_path}/none.tflite' does not"):
        LiteRTRunner(tmp_path / "none.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(LiteRTModelError, match="is not a valid TFLite model"):
        LiteRTRunner(corrupt)
    runner = LiteRTRunner(tflite_path)
    with pytest.raises(LiteRTInputError, match="prompt has 65 tokens; the longest prefill"):
        runner.prefill(list(range(65)))
    with pytest.raises(LiteRTInputError, match=r"token id 512 is outside the vocab \[0, 512\)"):
        runner.prefill([1, 512])
    with pytest.raises(LiteRTInputError, match="tokens is empty"):
        runner.prefill([])
    runner.prefill(list(range(64)))
    runner.prefill(list(range(60)))  # Positions 64..123 (padded to 64 rows: needs 128 slots).
    for _ in range(KV_LEN - 124):
        runner.decode(1)
    with pytest.raises(LiteRTInputError, match="decode at position 128 needs 129 KV slots"):
        runner.decode(1)


def test_chunked_prefill_returns_one_logits_row_per_prompt_token(tflite_path):
    """40 tokens through prefill_16 alone (16 + 16 + 8 padded): (40, vocab) logits, the
    position advanced by 40, the first chunk's rows bit-identical to prefill of its 16."""
    prompt = PROMPTS["ids-40"]
    runner = LiteRTRunner(tflite_path)
    chunked = runner.prefill_chunked(prompt, signature_lengths=[16])
    assert chunked.shape == (40, runner.vocab_size) and chunked.dtype == np.float32
    assert runner.position == 40
    runner.reset()
    first = runner.prefill(prompt[:16], signature_len=16)
    np.testing.assert_array_equal(chunked[:16], first)  # the same call on the same inputs


def test_chunked_prefill_through_one_signature_equals_prefill(tflite_path):
    """A prompt that fits one chunk (10 tokens with every signature: prefill_16) runs exactly
    the call prefill makes: logits and cache bit-identical."""
    prompt = PROMPTS["ids-10"]
    runner = LiteRTRunner(tflite_path)
    chunked, chunked_kv = runner.prefill_chunked(prompt), runner.kv_cache()
    runner.reset()
    one_shot = runner.prefill(prompt)
    np.testing.assert_array_equal(chunked, one_shot)
    for (k_chunked, v_chunked), (k, v) in zip(chunked_kv, runner.kv_cache(), strict=True):
        np.testing.assert_array_equal(k_chunked, k)
        np.testing.assert_array_equal(v_chunked, v)


def test_chunked_prefill_errors_name_the_problem(tflite_path):
    """Unknown signatures, bad lengths, an empty prompt, a padded last chunk past the cache:
    LiteRTInputError naming the problem, raised before any chunk runs."""
    runner = LiteRTRunner(tflite_path)
    with pytest.raises(LiteRTInputError, match=r"no prefill signature of \[8\] rows \(it has \[16, 64\]\)"):  # noqa: E501
        runner.prefill_chunked(list(range(1, 20)), signature_lengths=[8, 16])
    with pytest.raises(LiteRTInputError, match="signature_lengths is empty"):
        runner.prefill_chunked([1, 2], signature_lengths=[])
    with pytest.raises(LiteRTInputError, match="tokens is empty"):
        runner.prefill_chunked([])
    with pytest.raises(LiteRTInputError, match=r"prompt has 40 tokens; signature_len \(16\) takes"):
        runner.prefill(PROMPTS["ids-40"], signature_len=16)
    runner.prefill_chunked(list(range(1, 101)), signature_lengths=[64])  # 64 + 36 padded to 64
    before = runner.kv_cache()
    with pytest.raises(
        LiteRTInputError,
        match=r"chunked prefill of 20 tokens in chunks \[16, 4\] at position 100 needs 132 KV slots",
    ):
        runner.prefill_chunked(list(range(1, 21)), signature_lengths=[16])  # 100 + 16 + 16 > 128
    assert runner.position == 100
    for (k_before, v_before), (k, v) in zip(before, runner.kv_cache(), strict=True):
        np.testing.assert_array_equal(k_before, k)
        np.testing.assert_array_equal(v_before, v)
