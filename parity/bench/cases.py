"""Benchmark cases: what is measured, at which shape, and whether it fits in memory.

Pure data and arithmetic, no torch: the benchmark parent process imports this,
and so does the LiteRT child, which must load nothing but numpy and ai_edge_litert.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# The lengths of the issue (T = S), and those of --quick (the report's default):
# 2048 is the seed's headline case (TinyLlama's attention shape at 2048), so the
# default report measures it (issue 13).
FULL_LENGTHS = (512, 1024, 2048, 4096, 8192)
QUICK_LENGTHS = (512, 1024, 2048)
# Block sizes (q, kv) tried in LiteRT at the block-size lengths. (256, 128) is the
# kernel's default; the others trade graph size (conversion time, op count) for
# per-block memory.
BLOCK_CHOICES = ((256, 128), (128, 128), (256, 256), (512, 128), (512, 256), (1024, 256))
BLOCK_SWEEP_LENGTHS = (2048,)
# edge_flash's default (q_block_size, kv_block_size); parity/test_bench.py checks they agree.
DEFAULT_BLOCKS = (256, 128)
DEFAULT_FLASH_LABEL = f"flash-q{DEFAULT_BLOCKS[0]}-kv{DEFAULT_BLOCKS[1]}"

RUNTIMES = ("torch", "litert")
TARGETS = ("attention", "model-prefill", "model-decode")
# torch: litert-torch's standard SDPA in eager on the default backend (fused CPU
# flash kernel) and forced onto the math backend (what export produces), and
# edge_flash. litert: the standard with litert-torch's HLFB composite (the fair
# baseline: XNNPACK runs it natively), flash, and "copy", a module that only
# reads Q, K, V and writes an O-sized output: LiteRT's measured floor.
IMPLS = {
    "torch": ("standard-fused", "standard-math", "flash"),
    "litert": ("standard-hlfb", "flash", "copy"),
}
STANDARD_IMPLS = ("standard-fused", "standard-math", "standard-hlfb", "standard")


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    """One attention call's dimensions (fp32). Default: TinyLlama-1.1B's attention."""

    batch: int = 1
    num_heads: int = 32
    num_kv_heads: int = 4
    head_dim: int = 64
    bytes_per_element: int = 4  # fp32

    def tag(self) -> str:
        return f"b{self.batch}-n{self.num_heads}g{self.num_kv_heads}-h{self.head_dim}"


TINYLLAMA_ATTENTION = AttentionShape()


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One measurement: a runtime, a target (attention alone or whole model), an impl."""

    runtime: str  # "torch" or "litert"
    target: str  # "attention", "model-prefill" or "model-decode"
    impl: str  # see IMPLS; whole-model cases use "standard" or "flash"
    seq_q: int  # T
    seq_kv: int  # S
    q_block_size: int | None = None  # flash only
    kv_block_size: int | None = None
    shape: AttentionShape = TINYLLAMA_ATTENTION
    # Whole model only: the prefill signature's rows. A model-prefill case with a
    # chunk prefills its seq_q = seq_kv tokens in seq_kv / prefill_chunk calls
    # (LiteRT-LM's chunked prefill), the cache carried between them; None is one
    # call of T = S rows. Its decode case names the same chunk (same file).
    prefill_chunk: int | None = None
    # LiteRT only: False runs the file on LiteRT's builtin kernels without the
    # XNNPACK delegate (same file), to tell the graph's memory from the delegate's.
    xnnpack: bool = True

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime ({self.runtime!r}) must be one of {RUNTIMES}")
        if self.target not in TARGETS:
            raise ValueError(f"target ({self.target!r}) must be one of {TARGETS}")
        if self.seq_q < 1 or self.seq_kv < 1:
            raise ValueError(f"seq_q, seq_kv ({self.seq_q}, {self.seq_kv}) must be positive")
        blocks = (self.q_block_size, self.kv_block_size)
        if self.impl == "flash" and None in blocks:
            raise ValueError(f"flash case needs q_block_size and kv_block_size, got {blocks}")
        if self.prefill_chunk is not None:
            self._check_chunk()
        if not self.xnnpack and self.runtime != "litert":
            raise ValueError(f"xnnpack=False is a LiteRT setting; runtime is {self.runtime!r}")

    def _check_chunk(self) -> None:
        if self.target == "attention":
            raise ValueError("prefill_chunk is for whole-model cases, not attention cases")
        if self.prefill_chunk < 1 or self.seq_kv % self.prefill_chunk:
            raise ValueError(
                f"prefill_chunk ({self.prefill_chunk}) must be a positive divisor of"
                f" seq_kv ({self.seq_kv}): the prefill fills the cache in whole chunks"
            )
        if self.target == "model-prefill" and self.seq_q != self.seq_kv:
            raise ValueError(
                f"a chunked prefill fills the whole cache: seq_q ({self.seq_q}) must equal"
                f" seq_kv ({self.seq_kv})"
            )

    @property
    def prefill_rows(self) -> int:
        """Rows of the model's prefill signature (the chunk, or T = S when one-shot)."""
        return self.prefill_chunk or self.seq_kv

    @property
    def impl_label(self) -> str:
        """The impl with its block sizes, e.g. ``flash-q256-kv128``."""
        label = self.impl
        if self.impl == "flash":
            label = f"flash-q{self.q_block_size}-kv{self.kv_block_size}"
        if self.prefill_chunk is not None:
            label = f"{label}-chunk{self.prefill_chunk}"
        return label if self.xnnpack else f"{label}-builtin"

    @property
    def case_id(self) -> str:
        """Readable id, e.g. ``litert-attention-flash-q256-kv128-t2048-s2048``."""
        return f"{self.runtime}-{self.target}-{self.impl_label}-t{self.seq_q}-s{self.seq_kv}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> BenchCase:
        fields = dict(fields)
        fields["shape"] = AttentionShape(**fields.get("shape", {}))
        return cls(**fields)


def floor_bytes(shape: AttentionShape, seq_q: int, seq_kv: int) -> int:
    """The physical floor of one attention call: bytes of Q, K, V and O.

    Q and O are [B, T, N, H]; K and V are [B, S, G, H]. No implementation can
    hold less than its inputs and output at once.
    """
    q_or_o = shape.batch * seq_q * shape.num_heads * shape.head_dim
    k_or_v = shape.batch * seq_kv * shape.num_kv_heads * shape.head_dim
    return 2 * (q_or_o + k_or_v) * shape.bytes_per_element


def scores_bytes(shape: AttentionShape, seq_q: int, seq_kv: int) -> int:
    """Bytes of one full [B, N, T, S] score tensor, what the standard math path holds."""
    return shape.batch * shape.num_heads * seq_q * seq_kv * shape.bytes_per_element


def estimated_peak_bytes(case: BenchCase) -> int:
    """A generous estimate of a case's peak memory, to skip cases that cannot fit.

    Factors come from FACTS.md measurements at T = 1024..4096: the torch math path
    peaks at about 2.3 score tensors; converted standard attention at about one
    score tensor plus its mask; everything else within a few floors.
    """
    rows = case.seq_q if case.prefill_chunk is None else min(case.seq_q, case.prefill_chunk)
    floor = floor_bytes(case.shape, rows, case.seq_kv)
    scores = scores_bytes(case.shape, rows, case.seq_kv)
    if case.target != "attention":
        return 8 * floor + scores  # whole model: weights are small (2 layers); one layer's scores
    if case.impl == "standard-math":
        return int(2.5 * scores) + 2 * floor
    if case.impl == "standard-hlfb":
        return int(1.3 * scores) + 2 * floor
    return 8 * floor


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable of the machine in bytes (what can be allocated without swapping)."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{meminfo} has no MemAvailable line")


def attention_cases(
    lengths: tuple[int, ...],
    sweep_lengths: tuple[int, ...] = (),
    block_choices: tuple[tuple[int, int], ...] = BLOCK_CHOICES,
    default_blocks: tuple[int, int] = DEFAULT_BLOCKS,
    runtimes: tuple[str, ...] = RUNTIMES,
) -> list[BenchCase]:
    """Attention-alone cases (T = S) for every runtime and impl; at the sweep lengths, LiteRT's
    other block sizes and every LiteRT impl once more without XNNPACK."""
    cases = []
    for runtime in runtimes:
        for length in lengths:
            for impl in IMPLS[runtime]:
                blocks = default_blocks if impl == "flash" else (None, None)
                cases.append(BenchCase(runtime, "attention", impl, length, length, *blocks))
            if runtime != "litert" or length not in sweep_lengths:
                continue
            for blocks in block_choices:
                if tuple(blocks) != tuple(default_blocks):
                    cases.append(BenchCase(runtime, "attention", "flash", length, length, *blocks))
            for impl in IMPLS[runtime]:  # the same files on builtin kernels, no XNNPACK
                blocks = default_blocks if impl == "flash" else (None, None)
                cases.append(
                    BenchCase(runtime, "attention", impl, length, length, *blocks, xnnpack=False)
                )
    return cases
