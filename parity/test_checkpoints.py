"""Checkpoints: the manifest-verified cache, HF-directory loading, config mapping, errors.

The cache machinery (``ensure_cache_entry``) is tested with a cheap builder;
the real SmolLM2 entry (built once per machine, shared with the end-to-end
suites) is checked for what it must hold. Error messages are tested by text.
"""

from __future__ import annotations

import json

import pytest
import torch
from litert_torch.generative.examples.smollm import smollm as litert_smollm
from litert_torch.generative.examples.tiny_llama import tiny_llama as litert_tiny_llama
from safetensors.torch import load_file, save_file

from edge_flash import (
    CheckpointError,
    ConfigMismatchError,
    build_model,
    checkpoints,
    require_tokenizer,
    shipped_smollm2_checkpoint,
    smollm,
    tiny_llama,
)
from edge_flash.hf_config import architecture_fields, check_matches, model_config_from_hf
from parity.random_checkpoints import TINYLLAMA_CONFIG, write_tiny_random_llama_checkpoint


class CountingBuilder:
    """Writes two small files; counts calls; can be told to fail midway."""

    def __init__(self, fail_with=None):
        self.calls = 0
        self.fail_with = fail_with

    def __call__(self, out_dir):
        self.calls += 1
        (out_dir / "config.json").write_text('{"model_type": "llama"}')
        if self.fail_with is not None:
            raise self.fail_with
        (out_dir / "model.safetensors").write_bytes(bytes(range(256)) * 64)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "source.gguf"
    path.write_bytes(b"GGUF v1")
    return path


@pytest.fixture
def entry(tmp_path):
    return tmp_path / "cache" / "model-entry"


def _new_process():
    """Forgets in-process verification, as a new process would."""
    checkpoints._VERIFIED.clear()


@pytest.mark.quick
def test_cache_entry_is_built_once_then_reused(source, entry):
    """A valid entry is returned without calling the builder again."""
    builder = CountingBuilder()
    assert checkpoints.ensure_cache_entry(entry, source, builder) == entry
    _new_process()
    checkpoints.ensure_cache_entry(entry, source, builder)
    assert builder.calls == 1
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}


@pytest.mark.parametrize(
    "damage",
    ["flip-a-byte", "truncate", "delete-file", "delete-manifest", "garbage-manifest"],
)
def test_damaged_cache_entry_is_rebuilt(source, entry, damage):
    """A corrupt, truncated or incomplete entry is rebuilt, never trusted."""
    builder = CountingBuilder()
    checkpoints.ensure_cache_entry(entry, source, builder)
    weights = entry / "model.safetensors"
    good = weights.read_bytes()
    if damage == "flip-a-byte":
        weights.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    elif damage == "truncate":
        weights.write_bytes(good[:-1])
    elif damage == "delete-file":
        weights.unlink()
    elif damage == "delete-manifest":
        (entry / "manifest.json").unlink()
    else:
        (entry / "manifest.json").write_text("{not json")
    _new_process()  # In-process verification is keyed by size and mtime, which may not move.
    assert checkpoints.cache_problem(entry, checkpoints._sha256(source)) is not None
    checkpoints.ensure_cache_entry(entry, source, builder)
    assert builder.calls == 2
    assert weights.read_bytes() == good


def test_cache_entry_of_another_source_is_rebuilt(source, entry):
    """Changing the source file (another GGUF) makes the entry stale."""
    builder = CountingBuilder()
    checkpoints.ensure_cache_entry(entry, source, builder)
    source.write_bytes(b"GGUF v2")
    checkpoints.ensure_cache_entry(entry, source, builder)
    assert builder.calls == 2


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_build_leaves_no_entry_and_no_leftovers(source, entry, error):
    """A build that raises (or is interrupted) leaves nothing half-written behind."""
    with pytest.raises(type(error)):
        checkpoints.ensure_cache_entry(entry, source, CountingBuilder(fail_with=error))
    assert not entry.exists()
    assert sorted(p.name for p in entry.parent.iterdir()) == [f".{entry.name}.lock"]


def test_cache_dir_is_argument_then_env_then_home(monkeypatch, tmp_path):
    """resolve_cache_dir: explicit argument, else EDGE_FLASH_CACHE, else ~/.cache/edge_flash."""
    monkeypatch.setenv("EDGE_FLASH_CACHE", str(tmp_path / "from-env"))
    assert checkpoints.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert checkpoints.resolve_cache_dir() == tmp_path / "from-env"
    monkeypatch.delenv("EDGE_FLASH_CACHE")
    assert checkpoints.resolve_cache_dir() == checkpoints.DEFAULT_CACHE_DIR


def test_shipped_smollm2_checkpoint_is_a_verified_hf_directory():
    """The cached SmolLM2 entry matches its manifest and holds an fp32 Llama with tokenizer."""
    path = shipped_smollm2_checkpoint()
    gguf_sha = checkpoints._sha256(checkpoints.shipped_smollm2_gguf())
    assert checkpoints.cache_problem(path, gguf_sha) is None
    config = json.loads((path / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["vocab_size"]) == (
        "llama",
        30,
        49152,
    )
    assert "quantization_config" not in config
    assert require_tokenizer(path) == path
    # Raises naming any field that differs (rms_norm_eps is the float32 of 1e-5 in the GGUF).
    check_matches(config, litert_smollm.get_model_config_v2(), "SmolLM2-135M", str(path))


def test_smollm2_builder_without_checkpoint_equals_generic_builder_on_the_cache():
    """build_model_v2() (shipped SmolLM2) and build_model(cache dir) have identical weights."""
    fixed = smollm.build_model_v2()
    generic = build_model(shipped_smollm2_checkpoint())
    fixed_state, generic_state = fixed.state_dict(), generic.state_dict()
    assert fixed_state.keys() == generic_state.keys()
    assert all(torch.equal(fixed_state[k], generic_state[k]) for k in fixed_state)


@pytest.mark.quick
def test_tinyllama_config_maps_onto_litert_tinyllama_architecture():
    """TinyLlama-1.1B's config.json maps onto exactly litert-torch's TinyLlama config."""
    actual = architecture_fields(model_config_from_hf(TINYLLAMA_CONFIG))
    assert actual == architecture_fields(litert_tiny_llama.get_model_config())
    assert model_config_from_hf(TINYLLAMA_CONFIG).max_seq_len == 2048


@pytest.mark.quick
@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "model_type is 'gpt2'"),
        ({"architectures": ["MistralForCausalLM"]}, "architectures is \\['MistralForCausalLM'\\]"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling has rope_type"),
        ({"rope_parameters": {"rope_type": "yarn"}}, "rope_parameters has rope_type 'yarn'"),
        ({"attention_bias": True}, "attention_bias is True"),
        ({"mlp_bias": True}, "mlp_bias is True"),
        ({"hidden_act": "gelu"}, "hidden_act is 'gelu'; expected 'silu'"),
        ({"num_key_value_heads": 5}, "num_attention_heads \\(32\\) must be a multiple of"),
        ({"vocab_size": None}, "vocab_size is None; expected a positive int"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_config_field_that_does_not_map_is_named(change, message):
    """Each unmappable config.json field gives a ConfigMismatchError naming it."""
    with pytest.raises(ConfigMismatchError, match=message):
        model_config_from_hf(dict(TINYLLAMA_CONFIG, **change), source="config.json '/ckpt'")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    return write_tiny_random_llama_checkpoint(directory, tokenizer=False)


@pytest.mark.quick
def test_fixed_builder_names_every_field_that_differs(tiny_checkpoint):
    """tiny_llama.build_model on another architecture lists each differing field."""
    with pytest.raises(ConfigMismatchError) as raised:
        tiny_llama.build_model(tiny_checkpoint)
    assert str(raised.value) == (
        f"config.json '{tiny_checkpoint}' does not match TinyLlama-1.1B: vocab_size is 512"
        " (expected 32000); hidden_size is 256 (expected 2048); num_hidden_layers is 2"
        " (expected 22); intermediate_size is 512 (expected 5632); use edge_flash.build_model"
        " for other Llama-family checkpoints"
    )
    with pytest.raises(ConfigMismatchError, match="does not match SmolLM2-135M: .*rope_theta"):
        smollm.build_model_v2(tiny_checkpoint)


@pytest.mark.quick
def test_missing_paths_and_files_give_one_line_errors(tmp_path, tiny_checkpoint):
    """Missing path, weights, config.json or tokenizer: one clear line each."""
    cases = [
        (lambda: build_model(tmp_path / "nope"), f"checkpoint_path '{tmp_path / 'nope'}' does not"),
        (lambda: build_model(tmp_path), f"checkpoint_path '{tmp_path}' holds no weights file"),
        (lambda: require_tokenizer(tiny_checkpoint), "has no tokenizer \\(none of tokenizer.json"),
    ]
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(
        (tiny_checkpoint / "model.safetensors").read_bytes()
    )
    cases.append((lambda: build_model(no_config), "has no config.json; build_model reads"))
    for call, message in cases:
        with pytest.raises(CheckpointError, match=message) as raised:
            call()
        assert "\n" not in str(raised.value)


@pytest.mark.parametrize("damage", ["missing-tensor", "extra-tensor", "wrong-shape"])
def test_tensors_that_do_not_fit_the_config_are_named(tmp_path, damage):
    """A missing, unmapped or mis-shaped tensor is named in a one-line CheckpointError."""
    directory = write_tiny_random_llama_checkpoint(tmp_path, tokenizer=False)
    state = load_file(directory / "model.safetensors")
    if damage == "missing-tensor":
        del state["model.layers.1.mlp.up_proj.weight"]
        message = "lacks tensor 'model.layers.1.mlp.up_proj.weight'"
    elif damage == "extra-tensor":
        state["model.layers.2.mlp.up_proj.weight"] = torch.zeros(2, 2)
        message = "does not fit the model: Failed to map all tensor.*layers.2.mlp.up_proj"
    else:
        state["model.norm.weight"] = torch.ones(128)
        message = "does not fit the model: size mismatch for final_norm.weight"
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message) as raised:
        build_model(directory)
    assert "\n" not in str(raised.value)


@pytest.fixture
def truncated_checkpoint(tmp_path):
    """A real one-layer tiny checkpoint whose model.safetensors lost its second half."""
    directory = write_tiny_random_llama_checkpoint(tmp_path / "ckpt", num_layers=1)
    weights = directory / "model.safetensors"
    with weights.open("r+b") as file:
        file.truncate(weights.stat().st_size // 2)
    return directory


def test_a_truncated_safetensors_file_is_named_in_a_checkpoint_error(truncated_checkpoint):
    """build_model on a cut-short weights file: one-line CheckpointError naming the file."""
    with pytest.raises(CheckpointError, match="is unreadable .*truncated or corrupt") as raised:
        build_model(truncated_checkpoint)
    assert str(truncated_checkpoint / "model.safetensors") in str(raised.value)
    assert "\n" not in str(raised.value)


def _cli_error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]


def test_verify_on_a_truncated_checkpoint_exits_2_with_one_line(truncated_checkpoint, capsys):
    """parity.verify: unusable input is exit 2 and one line naming the weights file."""
    from parity.verify import main as verify_main

    argv = ["--checkpoint_path", str(truncated_checkpoint), "--input_ids", "1", "2",
            "--max_new_tokens", "1"]  # fmt: skip
    assert verify_main(argv) == 2
    (line,) = _cli_error_lines(capsys)
    assert line.startswith("parity.verify: error: CheckpointError: weights file '")
    assert "model.safetensors" in line and "truncated or corrupt" in line


def test_convert_on_a_truncated_checkpoint_exits_2_with_one_line(
    truncated_checkpoint, tmp_path, capsys
):
    """edge_flash.convert: unusable input is exit 2, one line naming the file, nothing written."""
    from edge_flash.convert import main as convert_main

    out = tmp_path / "out"
    argv = ["--checkpoint_path", str(truncated_checkpoint), "--prefill_seq_lens", "8",
            "--kv_cache_max_len", "16", "--output_path", str(out)]  # fmt: skip
    assert convert_main(argv) == 2
    (line,) = _cli_error_lines(capsys)
    assert line.startswith("edge_flash.convert: error: CheckpointError: weights file '")
    assert "model.safetensors" in line and not (out.exists() and any(out.iterdir()))
