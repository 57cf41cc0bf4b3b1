"""How the benchmarks measure, in words: written into the results and the report."""

METHOD = {
    "process": (
        "Every case runs in fresh child processes (python -m parity.bench._torch_child or"
        " _litert_child); memory is read in one with MALLOC_MMAP_THRESHOLD_=65536, so glibc returns freed buffers"
        " to the kernel instead of recycling them and hiding a peak. LiteRT children load"
        " only numpy and ai_edge_litert (checked per case)."
    ),
    "torch_memory": (
        "call_peak_bytes: peak of tensor bytes allocated during one call after one warm-up"
        " call, from torch.profiler allocation events replayed in order"
        " (parity.memory.peak_bytes_during; where that module is missing, the peak RSS, as"
        " the row's peak_method says). peak_bytes: call_peak_bytes plus the bytes of Q, K"
        " and V (live during the call, allocated before it), comparable with the floor."
        " peak_rss_bytes: VmHWM minus VmRSS around one call, after writing 5 to"
        " /proc/self/clear_refs."
    ),
    "litert_memory": (
        "peak_bytes: VmHWM minus VmRSS taken before the interpreter is created (inputs"
        " already in numpy; a throwaway interpreter has loaded the libraries). It covers"
        " creation, tensor allocation, the warm-up call and the timed calls: LiteRT keeps"
        " its arena between calls, so a peak read around a warmed-up call alone is only the"
        " caller's new copy of the output (reported as transient_bytes). It includes the runtime's own copies of Q, K, V"
        " and O and the caller's copy of the output; the 'copy' module (reads Q, K, V,"
        " writes O) measures that I/O floor. Interpreter: ai_edge_litert's default op"
        " resolver, which applies the XNNPACK delegate; num_threads=2. Rows whose impl ends"
        " in '-builtin' run the same file on LiteRT's builtin kernels without XNNPACK"
        " (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), which tells the graph's own"
        " memory from the delegate's."
    ),
    "model_memory": (
        "Whole model: peak_bytes as above, with the other signature run first (it pages in"
        " and packs the weights); activation_bytes of prefill = peak_bytes(prefill) minus"
        " peak_bytes(decode) of the same model, so weights, packing and runtime cancel."
    ),
    "latency": (
        "Wall time of each timed call (time.perf_counter) after one warm-up call, median of"
        " the repeats, from a second child run without MALLOC_MMAP_THRESHOLD_ (glibc's"
        " default, as applications run): the threshold makes every buffer a fresh mmap that"
        " pays page faults (measured: eager flash at T=512 504 ms with it, 122 ms without;"
        " kept as median_ms_with_mmap_threshold). LiteRT calls include copying inputs in and outputs out. The machine"
        " (2 cores) is shared, so wall time varies between runs; median_cpu_ms in each row's"
        " details (process CPU time over all threads) is less sensitive to other load."
    ),
    "floor": (
        "Physical floor: bytes of Q, K, V and O of one call (fp32), which no implementation"
        " can go below."
    ),
    "attention_modules": (
        "Causal attention over T = S. Standard: litert-torch's"
        " scaled_dot_product_attention_with_hlfb (the odml.scaled_dot_product_attention"
        " composite XNNPACK runs natively) with a constant causal mask, as litert-torch's"
        " decoders pass one. Flash: edge_flash.flash_attention with mask=None (static causal"
        " blocks). PyTorch eager: litert-torch's scaled_dot_product_attention (is_causal) on"
        " the default SDPA backend (fused CPU kernel) and on the math backend (what export"
        " produces)."
    ),
}
