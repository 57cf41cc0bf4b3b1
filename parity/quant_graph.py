"""Which ops of a converted model the quantizer changed: the evidence for a flash-vs-standard
difference under a quantization recipe.

``quantized_ops(path)`` lists, per signature of a .tflite, every op that reads a
quantized tensor (an int8 / int4 / fp16 / int16 tensor, or one with quantization
parameters), as ``OP(input types)`` with a count, e.g.
``FULLY_CONNECTED(FLOAT32,INT8,FLOAT32) x 21``. Two conversions of the same
weights under the same recipe whose attention differs (standard vs flash) should
list the same quantized ops: attention itself has no weights, so nothing of it
is quantized. ``quantized_op_difference`` says where they do not.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

_FLOAT32 = "FLOAT32"


def _names(enum_class) -> dict:
    return {value: name for name, value in vars(enum_class).items() if name.isupper()}


def quantized_ops(model_path: os.PathLike) -> dict[str, collections.Counter]:
    """{signature (or subgraph name): Counter("OP(type,type,...)")} of the ops reading a
    quantized tensor (an input whose type is not FLOAT32 / INT32 / BOOL / INT64, or which
    has quantization scales)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(model_path).read_bytes(), 0)
    op_names = _names(schema.BuiltinOperator)
    type_names = _names(schema.TensorType)
    signature_of = {
        model.SignatureDefs(i).SubgraphIndex(): model.SignatureDefs(i).SignatureKey().decode()
        for i in range(model.SignatureDefsLength())
    }
    found = {}
    for index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(index)
        name = signature_of.get(index) or (subgraph.Name() or b"").decode() or f"subgraph_{index}"
        counts = collections.Counter()
        for j in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(j)
            code = model.OperatorCodes(op.OpcodeIndex())
            op_name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            inputs = [subgraph.Tensors(t) for t in op.InputsAsNumpy() if t >= 0]
            if any(_is_quantized(tensor, type_names) for tensor in inputs):
                types = ",".join(type_names.get(tensor.Type(), "?") for tensor in inputs)
                counts[f"{op_name}({types})"] += 1
        found[name] = counts
    return found


def _is_quantized(tensor, type_names: dict) -> bool:
    quantization = tensor.Quantization()
    if quantization is not None and quantization.ScaleLength() > 0:
        return True
    return type_names.get(tensor.Type()) not in (_FLOAT32, "INT32", "INT64", "BOOL")


def quantized_op_difference(standard: os.PathLike, flash: os.PathLike) -> list[str]:
    """One line per (signature, op) whose quantized count differs between the two files,
    e.g. ``decode: FULLY_CONNECTED(FLOAT32,INT8,FLOAT32) standard 21, flash 20``;
    empty when the quantizer treated both graphs alike. Signatures only one file has
    (composite bodies of the standard graph) are listed if they hold quantized ops."""
    expected, actual = quantized_ops(standard), quantized_ops(flash)
    lines = []
    for signature in sorted(set(expected) | set(actual)):
        std_ops = expected.get(signature, collections.Counter())
        flash_ops = actual.get(signature, collections.Counter())
        for op in sorted(set(std_ops) | set(flash_ops)):
            if std_ops[op] != flash_ops[op]:
                lines.append(f"{signature}: {op} standard {std_ops[op]}, flash {flash_ops[op]}")
    return lines
