"""Which transformer block of a converted .tflite first goes wrong: localisation in the graph.

``map_blocks`` finds, in one prefill signature of a litert-torch decoder, the
tensor that is each transformer block's output and the one that is its input.
The rule (``MAPPING_RULE``, checked on litert-torch 0.10 conversions): every
tensor name is a ``;``-joined list of locations, the first being the module path
of the operator that writes it (``.../DecoderOnlyModel_module/...TransformerBlock_<k>/...``).
An operator belongs to block k when the first location of its first output's
name has the path segment ``<Class>Block_<k>`` (``TransformerBlock``, or a family's own
block class: Gemma 3's ``DecoderBlock``, checked on its conversion). Block k's input is the float
tensor its first operator reads that an operator outside block k writes (or the
signature takes); its output is the last tensor in operator order that block
k writes with the input's shape and that an operator outside the block reads.
The blocks must be 0..L-1 with L the KV cache's layer count, and block k's
input must be block k-1's output; anything else raises ``TFLiteLayerMapError``
(a graph of other module names, or fused across blocks, cannot be mapped).

``localise`` then runs the prefill of one prompt two ways and judges each
block output, at every prompt position, against the hidden-state allowance of
the oracle's error spread (``parity.tolerances.MODEL_FP32``, the same rows as
``parity.diagnose.first_layer_over_budget``):

- propagated: the graph as it is, each block on the previous block's TFLite
  output, compared to the float64 oracle's block output;
- isolated: each block k >= 1 fed the oracle's block k-1 output (rounded to
  fp32) in place of its TFLite input, so every block is judged on its own;
  block 0 reads the graph's own embedding lookup (a gather, exact in fp32, so
  a wrong embedding table is named as block 0).

Both are made by editing a copy of the flatbuffer (the file itself is not
touched): the block outputs become signature outputs (``parity_block_<k>``),
and in the isolated copy each block k >= 1 reads a new signature input
(``parity_block_input_<k>``) instead of block k-1's output. Signature outputs
are written back by every delegate, so this works with XNNPACK as on device.
(``Interpreter(experimental_preserve_all_tensors=True)`` also keeps every
intermediate readable: on the tiny model under XNNPACK every float tensor
matched the builtin kernels' within 1e-4 relative, measured; but a tensor inside
a delegate partition is not guaranteed to be written back, and the isolated run
needs a graph edit anyway, so the signature outputs serve both modes.)

Budget of the isolated mode: the propagated allowance of layer k, derived. To
first order the spread's deviation at layer k is a sum of independent rounding
contributions of every operation of layers 0..k; the isolated block's own
rounding is the subset made in block k (plus the one rounding of its fp32 input,
which the spread also makes there). Adding an independent centred term Y to X
cannot lower the row maximum's mean square (for fixed x, E_Y max_i |x_i + Y_i|
>= max_i |x_i| by Jensen, the max of |.| being convex), nor any element's
standard deviation, so the layer-k allowance bounds the isolated block's too:
no correct block is named; a small fault may go unnamed in isolation and still
be named propagated.

``ai_edge_quantizer.model_validator.compare_model`` compares same-named tensors
of two .tflite files; it is not used here because the reference is the float64
PyTorch oracle, not a second .tflite (a user's file has none), and it reduces
each tensor to one mean metric (MSE, SNR), not rows judged against budgets.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from parity.tolerances import MODEL_FP32, SpreadErrorModel

MAPPING_RULE = (
    "an operator is in block k when the first location of its first output's name has the"
    " path segment <Class>Block_<k> (TransformerBlock, Gemma 3's DecoderBlock, Gemma 2's"
    " Gemma2Block); block k's output is the last tensor it writes with"
    " its input's shape that an operator outside it reads"
)
_BLOCK = re.compile(r"(?:^|[/.])\w*Block_(\d+)$")  # TransformerBlock, Gemma DecoderBlock, ...
OUTPUT_NAME = "parity_block_{}"
INPUT_NAME = "parity_block_input_{}"
PROPAGATED, ISOLATED = "propagated", "isolated"


class TFLiteLayerMapError(ValueError):
    """The graph's tensors cannot be mapped to transformer blocks (see ``MAPPING_RULE``)."""


@dataclasses.dataclass(frozen=True)
class BlockTensors:
    """Where block ``layer`` is in the prefill subgraph: tensor and operator indices."""

    layer: int
    input_tensor: int
    output_tensor: int
    output_name: str
    output_op: int  # index of the operator writing the output
    output_op_type: str
    first_op: int
    last_op: int


@dataclasses.dataclass(frozen=True)
class GraphBlocks:
    """The blocks of one prefill signature (``map_blocks``)."""

    signature: str
    subgraph: int
    subgraph_name: str
    seq_len: int
    blocks: tuple[BlockTensors, ...]


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _block_of(name: str) -> int | None:
    """The k of ``TransformerBlock_<k>`` in the first location of a tensor name, or None."""
    first = name.split(";")[0]
    for segment in first.split("/"):
        match = _BLOCK.search(segment)
        if match:
            return int(match.group(1))
    return None


def _op_types(model) -> list:
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    codes = [model.operatorCodes[i] for i in range(len(model.operatorCodes))]
    return [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in codes]


def _load(path: Path):
    schema = _schema()
    buffer = Path(path).read_bytes()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buffer, 0))


def _signature(model, signature: str):
    for sig in model.signatureDefs:
        if sig.signatureKey.decode() == signature:
            return sig
    keys = [s.signatureKey.decode() for s in model.signatureDefs]
    raise TFLiteLayerMapError(f"signature ({signature!r}) is not in the file (it has {keys})")


def map_blocks(path: Path, signature: str, num_layers: int) -> GraphBlocks:
    """The tensors of every transformer block in ``signature`` of the .tflite at ``path``.

    Raises:
      TFLiteLayerMapError: the graph does not follow ``MAPPING_RULE`` (the message says how).
    """
    return _map(_load(path), signature, num_layers, path)


def _map(model, signature: str, num_layers: int, path) -> GraphBlocks:
    sig = _signature(model, signature)
    graph = model.subgraphs[sig.subgraphIndex]
    types = _op_types(model)
    names = [(t.name or b"").decode() for t in graph.tensors]
    writer = {out: j for j, op in enumerate(graph.operators) for out in op.outputs}
    ops_of: dict[int, list] = {}
    for j, op in enumerate(graph.operators):
        layer = _block_of(names[op.outputs[0]]) if len(op.outputs) else None
        if layer is not None:
            ops_of.setdefault(layer, []).append(j)
    where = f"{path} signature {signature}"
    if sorted(ops_of) != list(range(num_layers)):
        raise TFLiteLayerMapError(
            f"{where}: found transformer blocks {sorted(ops_of)} by tensor names, expected"
            f" 0..{num_layers - 1} ({MAPPING_RULE}); this graph cannot be mapped to layers"
        )
    blocks = []
    for layer in range(num_layers):
        block = _block(graph, layer, ops_of[layer], writer, names, types, where)
        if blocks and block.input_tensor != blocks[-1].output_tensor:
            raise TFLiteLayerMapError(
                f"{where}: block {layer} reads tensor {block.input_tensor}, not block"
                f" {layer - 1}'s output {blocks[-1].output_tensor} ({MAPPING_RULE})"
            )
        blocks.append(block)
    seq_len = int(graph.tensors[blocks[0].input_tensor].shape[1])
    name = (graph.name or b"").decode()
    return GraphBlocks(signature, sig.subgraphIndex, name, seq_len, tuple(blocks))


def _block(graph, layer, ops, writer, names, types, where) -> BlockTensors:
    """One block's input and output tensors, or TFLiteLayerMapError naming what is missing."""
    mine = set(ops)
    first = graph.operators[ops[0]]
    float32 = _schema().TensorType.FLOAT32
    inputs = [
        i for i in first.inputs
        if i >= 0 and graph.tensors[i].type == float32
        and (writer.get(i) not in mine) and (i in writer or i in graph.inputs)
    ]  # fmt: skip
    if len(inputs) != 1:
        raise TFLiteLayerMapError(
            f"{where}: block {layer}'s first operator reads {len(inputs)} float tensors from"
            f" outside the block (expected one, the block input; {MAPPING_RULE})"
        )
    shape = list(graph.tensors[inputs[0]].shape)
    read_outside = {i for j, op in enumerate(graph.operators) if j not in mine for i in op.inputs}
    read_outside |= set(graph.outputs)
    candidates = [
        (j, out) for j in ops for out in graph.operators[j].outputs
        if list(graph.tensors[out].shape) == shape and out in read_outside
    ]  # fmt: skip
    if not candidates:
        raise TFLiteLayerMapError(
            f"{where}: block {layer} writes no tensor of its input's shape {shape} that is read"
            f" outside it ({MAPPING_RULE})"
        )
    op, out = candidates[-1]
    op_type = types[graph.operators[op].opcodeIndex]
    return BlockTensors(layer, inputs[0], out, names[out], op, op_type, ops[0], ops[-1])


def instrumented(path: Path, blocks: GraphBlocks, isolate: bool) -> bytes:
    """A copy of the file whose prefill signature also outputs every block's output and, with
    ``isolate``, takes each block k >= 1's input as ``parity_block_input_<k>``.

    Raises:
      TFLiteLayerMapError: the weights are stored outside the flatbuffer (files over 2 GB).
    """
    import flatbuffers

    schema = _schema()
    model = _load(path)
    if any(buffer.offset > 1 for buffer in model.buffers):
        # Files over 2 GB keep weights after the flatbuffer (offset / size); repacking the
        # flatbuffer alone would drop them.
        raise TFLiteLayerMapError(
            f"{path} stores its weights outside the flatbuffer (a file over 2 GB); the"
            " localisation edits a copy of the flatbuffer and supports inline weights only"
        )
    sig = _signature(model, blocks.signature)
    graph = model.subgraphs[sig.subgraphIndex]
    for block in blocks.blocks:
        graph.outputs = np.append(graph.outputs, block.output_tensor).astype(np.int32)
        sig.outputs.append(
            _tensor_map(schema, OUTPUT_NAME.format(block.layer), block.output_tensor)
        )
        if not isolate or block.layer == 0:
            continue
        fed = copy.deepcopy(graph.tensors[block.input_tensor])
        fed.name, fed.buffer = INPUT_NAME.format(block.layer).encode(), 0
        graph.tensors.append(fed)
        index = len(graph.tensors) - 1
        graph.inputs = np.append(graph.inputs, index).astype(np.int32)
        sig.inputs.append(_tensor_map(schema, INPUT_NAME.format(block.layer), index))
        for j in range(block.first_op, block.last_op + 1):
            op = graph.operators[j]
            op.inputs = np.where(op.inputs == block.input_tensor, index, op.inputs).astype(np.int32)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor_map(schema, name: str, index: int):
    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name.encode(), int(index)
    return entry


def run_blocks(
    model: bytes,
    blocks: GraphBlocks,
    token_ids: Sequence[int],
    fed: torch.Tensor | None = None,
    use_xnnpack: bool = True,
) -> torch.Tensor:
    """(L, T, D) float64 block outputs of the prefill of ``token_ids`` from an empty cache.

    ``model`` is an ``instrumented`` copy; ``fed`` (L, T, D), with ``isolate``, gives block
    k >= 1 the input ``fed[k - 1]`` (rows past T are zeros: padded rows come after the
    prompt's and are masked from them).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    runner = interpreter.get_signature_runner(blocks.signature)
    inputs = {
        name: np.zeros(d["shape"], d["dtype"]) for name, d in runner.get_input_details().items()
    }
    count, width = len(token_ids), blocks.seq_len
    inputs["tokens"][0, :count] = token_ids
    inputs["input_pos"] = np.arange(width, dtype=np.int32)
    if fed is not None:
        for layer in range(1, len(blocks.blocks)):
            inputs[INPUT_NAME.format(layer)][0, :count] = fed[layer - 1, :count].numpy()
    outputs = runner(**inputs)
    rows = [outputs[OUTPUT_NAME.format(b.layer)][0, :count] for b in blocks.blocks]  # (T, D) each
    return torch.from_numpy(np.stack(rows)).to(torch.float64)  # (L, T, D)


@dataclasses.dataclass(frozen=True)
class BlockErrors:
    """One mode's per-block errors: max_d |h - h_oracle| and its allowance, at the worst row."""

    mode: str
    errors: tuple[float, ...]  # per layer, at the position of greatest error / budget
    budgets: tuple[float, ...]
    positions: tuple[int, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(e / b if b > 0 else float("inf") for e, b in zip(self.errors, self.budgets))

    @property
    def first_over(self) -> int | None:
        """The first layer over its budget (NaN counts as over), or None."""
        return next((k for k, e in enumerate(self.errors) if not e <= self.budgets[k]), None)


def judge_blocks(mode: str, hidden: torch.Tensor, expected: torch.Tensor, budgets: torch.Tensor):
    """``BlockErrors`` of (L, T, D) ``hidden`` against ``expected`` with (L, T) ``budgets``."""
    errors = (hidden - expected).abs().amax(dim=-1).nan_to_num(nan=float("inf"))  # (L, T)
    worst = (errors / budgets).nan_to_num(nan=float("inf")).argmax(dim=-1)  # (L,)
    layers = range(errors.shape[0])
    return BlockErrors(
        mode,
        tuple(float(errors[k, worst[k]]) for k in layers),
        tuple(float(budgets[k, worst[k]]) for k in layers),
        tuple(int(worst[k]) for k in layers),
    )


@dataclasses.dataclass(frozen=True)
class Localisation:
    """Both modes' block errors of one prompt's prefill in one .tflite (``localise``)."""

    path: Path
    blocks: GraphBlocks
    modes: tuple[BlockErrors, ...]
    use_xnnpack: bool
    prompt_len: int

    def describe(self, overlays: str = "") -> list:
        """Lines for a diagnosis: per mode, the first block over budget, then where it ran.

        Every line says "first layer" (``parity.verify`` keeps such lines in its short output).
        """
        lines = []
        for found in self.modes:
            k = found.first_over
            head = f"  first layer over budget in the TFLite graph, {found.mode}:"
            if k is None:
                lines.append(f"{head} none (every block within its budget)")
                continue
            block = self.blocks.blocks[k]
            lines.append(
                f"{head} layer {k} (hidden-state error {found.errors[k]:.3e} > budget"
                f" {found.budgets[k]:.3e} at position {found.positions[k]}); its output is"
                f" tensor {block.output_tensor} written by op {block.output_op}"
                f" {block.output_op_type} (block ops {block.first_op}..{block.last_op})"
            )
        kernels = "XNNPACK" if self.use_xnnpack else "builtin kernels"
        lines.append(
            f"  (first layer over budget in the TFLite graph: {self.path.name} signature"
            f" {self.blocks.signature}, {kernels}, block outputs mapped by tensor names, prompt"
            f" positions 0..{self.prompt_len - 1}{overlays})"
        )
        return lines


def _prefill_signature(model, count: int, path: Path) -> str:
    """The shortest ``prefill_<T>`` signature with T >= ``count`` (as ``LiteRTRunner.prefill``)."""
    from edge_flash.runtime import smallest_fitting_signature

    keys = [s.signatureKey.decode() for s in model.signatureDefs]
    lengths = {int(key.split("_")[1]): key for key in keys if re.fullmatch(r"prefill_\d+", key)}
    try:
        return lengths[smallest_fitting_signature(count, sorted(lengths))]
    except ValueError as error:
        raise TFLiteLayerMapError(
            f"{path}: no prefill signature for {count} tokens ({error})"
        ) from None


def localise(
    path: Path,
    token_ids: Sequence[int],
    oracle_hidden: torch.Tensor,
    spread,
    error_model: SpreadErrorModel = MODEL_FP32,
    use_xnnpack: bool = True,
) -> Localisation:
    """Both modes (module docstring) for the prefill of ``token_ids`` in the file at ``path``.

    Args:
      oracle_hidden: (L, P, D) the oracle's block outputs, P >= T (``LegRun.hidden``).
      spread: the prompt's ``OracleSpread``; rows 0..T-1 of its hidden allowance are used.

    Raises:
      TFLiteLayerMapError: the graph cannot be mapped, or no prefill signature fits the prompt.
    """
    path = Path(path)
    count, num_layers = len(token_ids), oracle_hidden.shape[0]
    model = _load(path)
    blocks = _map(model, _prefill_signature(model, count, path), num_layers, path)
    expected = oracle_hidden[:, :count]  # (L, T, D)
    budgets = error_model.allowance(spread.hidden)[:, :count]  # (L, T)
    modes = []
    for mode in (PROPAGATED, ISOLATED):
        copy_ = instrumented(path, blocks, isolate=mode == ISOLATED)
        fed = expected.to(torch.float32) if mode == ISOLATED else None
        hidden = run_blocks(copy_, blocks, token_ids, fed, use_xnnpack)
        modes.append(judge_blocks(mode, hidden, expected, budgets))
    return Localisation(path, blocks, tuple(modes), use_xnnpack, count)
