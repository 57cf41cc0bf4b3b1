"""Model Explorer overlays of a TFLite localisation, and the diagnosis lines that link them.

``node_data`` turns one mode of a ``parity.tflite_layers.Localisation`` into
the node-data JSON that Model Explorer ("Add per-node data") reads: the
``ModelNodeData`` format of ``ai-edge-model-explorer``'s ``node_data_builder``,
``{graph id: {"results": {node key: {"value": v}}, "thresholds": [...]}}``,
where a node key is an output tensor name and the graph id a subgraph name.
Each block's output tensor gets its error / budget ratio (max over prompt
positions): <= 1 is green, above is red. The format is written directly: the
package is not installed and ``pip install --dry-run ai-edge-model-explorer``
wants 22 packages (Flask, IPython, watchdog, ...) for these few keys.

``tflite_lines`` is what ``parity.diagnose`` calls for a TFLite leg whose file
is known: it localises, writes one overlay per mode and returns the lines
naming the first block over budget in each mode and the overlay paths. Overlays
go to ``PARITY_OVERLAY_DIR``, else ``overlays/`` beside the results file
(``PARITY_RESULTS``, else beside a pytest session's default one under
``reports/sessions/``), where ``python -m parity.report`` finds and links them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from parity.tflite_layers import Localisation, TFLiteLayerMapError, localise
from parity.tolerances import MODEL_FP32, SpreadErrorModel

OVERLAY_ENV = "PARITY_OVERLAY_DIR"
# Model Explorer colours a node by the first threshold its value is <= to.
# A ratio <= 1 is within budget; 1e300 stands for "above" (JSON has no inf).
_THRESHOLDS = [{"value": 1.0, "bgColor": "#a5d6a7"}, {"value": 1e300, "bgColor": "#ef5350"}]
_CAP = 1e300  # non-finite ratios (NaN or inf error) are written as this
# Every failing check of a leg diagnoses the same prompt again: localise each
# (file, prompt, spread, kernels, error model) once per process.
_FOUND: dict = {}


def node_data(found: Localisation, mode: str) -> dict:
    """The ModelNodeData JSON object of ``mode`` ("propagated" or "isolated").

    Raises:
      ValueError: ``found`` has no such mode.
    """
    errors = {m.mode: m for m in found.modes}
    if mode not in errors:
        raise ValueError(f"mode ({mode!r}) must be one of {sorted(errors)}")
    results = {
        block.output_name: {"value": ratio if math.isfinite(ratio) else _CAP}
        for block, ratio in zip(found.blocks.blocks, errors[mode].ratios)
    }
    return {found.blocks.subgraph_name: {"results": results, "thresholds": _THRESHOLDS}}


def overlay_dir() -> Path:
    """Where overlays are written (see the module docstring)."""
    if os.environ.get(OVERLAY_ENV):
        return Path(os.environ[OVERLAY_ENV]).expanduser()
    from parity.results import RESULTS_ENV, SESSIONS_DIR

    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser().parent / "overlays"
    return SESSIONS_DIR / "overlays"  # beside a pytest session's default results file


def write_overlays(found: Localisation, leg: str, token_ids: Sequence[int]) -> dict:
    """Writes ``<file>-<leg>-<prompt hash>-<mode>.json`` per mode; returns {mode: path}."""
    directory = overlay_dir()
    directory.mkdir(parents=True, exist_ok=True)
    prompt = hashlib.sha256(str(list(token_ids)).encode()).hexdigest()[:8]
    paths = {}
    for errors in found.modes:
        path = directory / f"{found.path.stem}-{leg}-{prompt}-{errors.mode}.json"
        path.write_text(json.dumps(node_data(found, errors.mode), indent=2) + "\n")
        paths[errors.mode] = path
    return paths


def tflite_lines(
    path: Path,
    leg: str,
    token_ids: Sequence[int],
    oracle_hidden,
    spread,
    error_model: SpreadErrorModel = MODEL_FP32,
) -> list:
    """Diagnosis lines of the TFLite graph's own block outputs (both modes) and the overlays.

    A graph that cannot be mapped, or that LiteRT cannot run once edited, is one line saying
    why. Each (file, prompt, spread) is localised once per process.
    """
    from parity.run_settings import current

    xnnpack = current().litert_xnnpack
    stat = Path(path).stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, tuple(token_ids), id(spread), xnnpack,
           error_model.name)  # fmt: skip
    try:
        if key not in _FOUND:
            _FOUND[key] = localise(path, token_ids, oracle_hidden, spread, error_model, xnnpack)
    except TFLiteLayerMapError as error:
        return [f"  first layer over budget in the TFLite graph: cannot be localised: {error}"]
    except (RuntimeError, ValueError) as error:  # LiteRT refusing the edited copy
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [f"  first layer over budget in the TFLite graph: LiteRT failed on it: {first}"]
    found = _FOUND[key]
    paths = write_overlays(found, leg, token_ids)
    overlays = ", ".join(f"{mode} {where}" for mode, where in paths.items())
    return found.describe(f"; Model Explorer overlays, over budget in red: {overlays}")
