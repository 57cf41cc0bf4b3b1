"""Localisation inside the TFLite graph: the first block over budget, both modes, the overlay.

A converted tiny model is perturbed after conversion (one weight matrix of
block ``PERTURBED_LAYER`` scaled in the flatbuffer), so only the file is wrong:
the diagnosis must name that block propagated and isolated, through the
``--tflite`` path, and write the Model Explorer overlays; the unperturbed file
must get no block named.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from parity import legs as L
from parity import tflite_layers as T
from parity.overlay import node_data
from parity.test_user_tflite import TINY_FLASH_CASES, _convert, _run
from parity.zoo import TINY_RANDOM

pytestmark = pytest.mark.tflite

PERTURBED_LAYER = 1  # a middle block: block 0 must stay within budget, block 2 follows it
# 1 % on the feed-forward down projection: a bug-sized change (the tiny model's
# hidden-state budgets are ~1e-5 on values of ~5, the change is ~2e-2), not a rounding one.
PERTURBATION = 1.01


def _perturb_block_weight(source: Path, target: Path, layer: int, factor: float) -> str:
    """Copies ``source`` to ``target`` with block ``layer``'s ``Linear_w2`` weight scaled by
    ``factor`` in its flatbuffer buffer (shared by every signature); returns the tensor name."""
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(source.read_bytes())
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        name = tensor.Name().decode()
        if T._block_of(name) == layer and "Linear_w2" in name.split(";")[0] and tensor.Buffer():
            weights = model.Buffers(tensor.Buffer()).DataAsNumpy().view(np.float32)  # a view
            weights *= factor
            target.write_bytes(bytes(data))
            return name
    raise AssertionError(f"{source} has no Linear_w2 weight of block {layer}")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_flash_tflite) -> dict:
    """The tiny zoo model converted with flash attention, and a copy with block 1 perturbed."""
    work = tmp_path_factory.mktemp("tflite-layers")
    clean = tiny_flash_tflite["file"]
    perturbed = work / "perturbed.tflite"
    _perturb_block_weight(clean, perturbed, PERTURBED_LAYER, PERTURBATION)
    return {"clean": clean, "perturbed": perturbed}


@pytest.fixture(scope="module")
def oracle(chains):
    """(the oracle's run, the spread) of the tiny model's 9-token prompt."""
    chain = chains.get(TINY_RANDOM)
    return chain.runs("ids-9", [])[L.ORACLE], chain.spread("ids-9")


def test_blocks_are_mapped_to_chained_add_outputs(files):
    """Each block's output is its last residual ADD, and block k reads block k-1's output."""
    blocks = T.map_blocks(files["clean"], f"prefill_{TINY_RANDOM.prefill_seq_len}", 3).blocks
    assert [b.output_op_type for b in blocks] == ["ADD"] * 3
    assert [b.input_tensor for b in blocks[1:]] == [b.output_tensor for b in blocks[:-1]]
    assert all(f"TransformerBlock_{b.layer}" in b.output_name.split(";")[0] for b in blocks)


def test_unmappable_graph_fails_loudly(files):
    """A layer count the tensor names do not show raises, naming what was found and the rule."""
    with pytest.raises(T.TFLiteLayerMapError) as raised:
        T.map_blocks(files["clean"], f"prefill_{TINY_RANDOM.prefill_seq_len}", 4)
    assert "found transformer blocks [0, 1, 2] by tensor names, expected 0..3" in str(raised.value)
    assert "cannot be mapped to layers" in str(raised.value)


# XNNPACK as on device, and LiteRT's builtin kernels (the false-alarm study's other setting):
# the block outputs are signature outputs of the edited copy, which every delegate writes back.
KERNELS = pytest.mark.parametrize("use_xnnpack", [True, False], ids=["xnnpack", "builtin"])


@KERNELS
def test_correct_file_names_no_block_in_either_mode(files, oracle, use_xnnpack):
    """No false alarm: the unperturbed conversion has every block within budget, both modes."""
    run, spread = oracle
    found = T.localise(files["clean"], run.prompt_ids, run.hidden, spread, use_xnnpack=use_xnnpack)
    assert [m.mode for m in found.modes] == [T.PROPAGATED, T.ISOLATED]
    assert [m.first_over for m in found.modes] == [None, None], found.describe()


@KERNELS
def test_perturbed_block_is_named_in_both_modes(files, oracle, use_xnnpack):
    """Block 1 is the first over budget propagated and isolated; isolated, block 2 is within."""
    run, spread = oracle
    found = T.localise(
        files["perturbed"], run.prompt_ids, run.hidden, spread, use_xnnpack=use_xnnpack
    )
    propagated, isolated = found.modes
    assert propagated.first_over == isolated.first_over == PERTURBED_LAYER, found.describe()
    assert propagated.ratios[2] > 1 and isolated.ratios[2] <= 1, found.describe()
    overlay = node_data(found, T.ISOLATED)[found.blocks.subgraph_name]["results"]
    values = [overlay[b.output_name]["value"] for b in found.blocks.blocks]
    assert [v > 1 for v in values] == [False, True, False]


def test_users_perturbed_file_is_diagnosed_through_tflite_option(files, tmp_path):
    """``--tflite`` with the perturbed file: the failure names block 1 in both modes and
    links the overlays, which are written."""
    overlays = tmp_path / "overlays"
    result = _run("-m", "pytest", "-p", "no:cacheprovider", "parity/test_chain_logits.py",
                  "-k", f"{TINY_FLASH_CASES} and prefill and ids-9", "-x",
                  f"--tflite={files['perturbed']}",
                  env={**os.environ, "PARITY_RESULTS": str(tmp_path / "r.jsonl"),
                       "PARITY_OVERLAY_DIR": str(overlays)})  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    for mode in (T.PROPAGATED, T.ISOLATED):
        assert re.search(rf"in the TFLite graph, {mode}: layer {PERTURBED_LAYER} \(", output), (
            output[-3000:]
        )
    written = sorted(overlays.glob("*.json"))
    assert [p.name.rsplit("-", 1)[1] for p in written] == ["isolated.json", "propagated.json"]
    assert str(written[0]) in output
    graph = next(iter(json.loads(written[1].read_text()).values()))
    assert sum(entry["value"] > 1 for entry in graph["results"].values()) == 2  # blocks 1 and 2


@pytest.fixture(scope="module")
def verify_files(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer Llama with a byte tokenizer (verify needs text prompts) and its conversion."""
    from parity.random_checkpoints import write_tiny_random_llama_checkpoint

    work = tmp_path_factory.mktemp("verify-layers")
    checkpoint = write_tiny_random_llama_checkpoint(work / "ckpt", num_layers=2, seed=5)
    sizes = ("--prefill_seq_lens", "64", "--kv_cache_max_len", "128")
    return checkpoint, _convert(checkpoint, work / "out", *sizes)


def test_verify_names_the_perturbed_block_of_a_users_file(verify_files, tmp_path):
    """``parity.verify --tflite_path`` with block 0 perturbed: exit 1 and block 0 named in
    both modes in its short failure lines."""
    checkpoint, file = verify_files
    perturbed = tmp_path / "perturbed.tflite"
    _perturb_block_weight(file, perturbed, 0, PERTURBATION)
    result = _run("-m", "parity.verify", "--checkpoint_path", str(checkpoint), "--prompts", "hi",
                  "--max_new_tokens", "4", "--tflite_path", str(perturbed),
                  env={**os.environ, "PARITY_OVERLAY_DIR": str(tmp_path / "overlays")})  # fmt: skip
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "FAILED verify TFLite with prompts 'hi'" in result.stdout
    for mode in (T.PROPAGATED, T.ISOLATED):
        assert f"in the TFLite graph, {mode}: layer 0 (" in result.stdout, result.stdout[-3000:]
    assert len(list((tmp_path / "overlays").glob("perturbed-tflite_std-*.json"))) == 2


@pytest.mark.quick
@pytest.mark.parametrize(
    "name, layer",
    [
        (("M/attention.TransformerBlock_1/attention.CausalSelfAttention_atten_func;;"
          "M/attention.TransformerBlock_0/attention.CausalSelfAttention_atten_func;"), 1),
        ("M/litert_torch.generative.layers.attention.TransformerBlock_0;1", 0),
        ("M/torch.nn.modules.sparse.Embedding_tok_embedding;3", None),
        ("prefill_88_kv_cache_k_1_output", None),
        ("M/attention.TransformerBlock_12/normalization.RMSNorm_post_atten_norm;", 12),
    ],
    ids=["fused-names-first-wins", "block-residual-add", "embedding", "kv-output", "two-digits"],
)  # fmt: skip
def test_a_tensor_belongs_to_the_block_of_its_first_location(name, layer):
    """Only the first ``;``-separated location of a name decides its block (fused ops list more)."""
    assert T._block_of(name) == layer


def test_unmappable_graph_is_one_diagnosis_line(files, oracle):
    """A failing leg whose graph cannot be mapped gets one line saying why, no traceback."""
    import torch

    from parity.overlay import tflite_lines

    run, spread = oracle
    four_layers = torch.cat([run.hidden, run.hidden[:1]])  # the file has 3 blocks
    lines = tflite_lines(files["clean"], L.TFLITE_FLASH, run.prompt_ids, four_layers, spread)
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "  first layer over budget in the TFLite graph: cannot be localised:"
    )
    assert "expected 0..3" in lines[0]
