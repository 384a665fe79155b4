"""What `shishu bench` measures and how often: `BenchSettings` and its checks."""

import dataclasses

import torch


DEFAULT_CONTEXTS = (256, 1024, 2048, 4096)
MODES = ("eager", "compile")
SHARE_CHOICES = ("pairs", "none")
CLOCKS = ("wall", "cpu")


@dataclasses.dataclass
class BenchSettings:
    """What to measure and how often."""

    contexts: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_CONTEXTS))
    batches: list[int] = dataclasses.field(default_factory=lambda: [1])
    # (batch, context) points measured instead of every combination of `batches` and `contexts`.
    shapes: list[tuple[int, int]] | None = None
    dtype: str = "float32"
    # Also measure the static cache + torch.compile mode.
    compile: bool = False
    # Timed repeats per figure (interleaved between the models).
    repeats: int = 5
    # Decode steps timed per repeat; the cache is rewound to `context` before each repeat.
    decode_tokens: int = 8
    # Untimed decode steps per model before the repeats (the first one compiles in compile mode).
    warmup_steps: int = 2
    train_seq_len: int = 1024
    train_batch: int = 1
    train_repeats: int = 3
    # Time the training step compiled with torch.compile (fullgraph) instead of eagerly.
    train_compile: bool = False
    # Peak FLOP/s of the device for the training step's MFU; None: looked up from the GPU's name.
    peak_flops: float | None = None
    # torch intra-op threads; None keeps torch's default (one per core).
    threads: int | None = None
    attn_implementation: str = "sdpa"
    device: str = "cpu"
    # "wall" time, or "cpu": the process's CPU time, which on a shared machine with threads=1 leaves out
    # the time other processes hold the core (with several threads it also counts their spin-waits).
    clock: str = "wall"
    # torch.compile backend of the compile mode ("eager" or "aot_eager" only trace: quick checks, no speed-up).
    compile_backend: str = "inductor"
    # torch.compile mode of the compiled decode step (inductor only); None: "reduce-overhead" (CUDA graphs)
    # on CUDA, inductor's default on CPU.
    compile_mode: str | None = None
    # Compile mode on CPU: let inductor turn single-row matmuls (batch-1 decode) into fused reductions
    # instead of calling the BLAS GEMV (see `inductor.inductor_fused_gemv`); applied to both models alike.
    inductor_gemv: bool = True
    # Also load the baseline's weights into an all-attention ShishuLM and compare it with the baseline.
    overhead_check: bool = True
    bandwidth_bytes: int = 512 * 2**20
    bandwidth_repeats: int = 5
    seed: int = 0
    # Build both models from their configs with random weights (seeded): only config.json is read.
    random_init: bool = False
    # With random_init: the ShishuLM is the baseline's config with these layers MLP-only (`share`: "pairs"
    # or "none"), instead of the --model checkpoint's config.
    mlp_layers: list[int] | None = None
    share: str = "pairs"
    # Let a checkpoint folder run its own Python code (config.json auto_map); ShishuLM and built-in
    # architectures never need it.
    trust_remote_code: bool = False

    @classmethod
    def quick(cls, **overrides) -> "BenchSettings":
        """One short context and fewer repeats (about a minute for a 135M model on a small CPU, without --compile)."""
        values = dict(contexts=[256], repeats=3, decode_tokens=8, warmup_steps=1, train_seq_len=128, train_repeats=2)
        values.update(overrides)
        return cls(**values)

    def check(self) -> None:
        """`ValueError` naming the first setting out of range."""
        self._check_counts()
        self._check_device()
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {self.dtype!r}; use float32, bfloat16 or float16")
        if self.compile_mode is not None and self.compile_backend != "inductor":
            raise ValueError(
                f"compile_mode {self.compile_mode!r} needs the inductor backend, not {self.compile_backend!r}"
            )
        if self.mlp_layers is not None and not self.random_init:
            raise ValueError("--mlp-layers builds a fresh ShishuLM from the baseline's config: add --random-init")
        if self.share not in SHARE_CHOICES:
            raise ValueError(f"share must be 'pairs' or 'none', got {self.share!r}")

    def _check_counts(self) -> None:
        if not self.contexts or any(c < 1 for c in self.contexts):
            raise ValueError(f"contexts must be positive token counts, got {self.contexts}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ValueError(f"batch sizes must be positive, got {self.batches}")
        if self.shapes is not None and (not self.shapes or any(b < 1 or c < 1 for b, c in self.shapes)):
            raise ValueError(f"shapes must be positive (batch, context) pairs, got {self.shapes}")
        for name in ("repeats", "decode_tokens", "warmup_steps", "train_batch", "train_repeats", "bandwidth_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.train_seq_len < 2:
            raise ValueError(f"train_seq_len must be at least 2, got {self.train_seq_len}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.bandwidth_bytes < 2**20:
            raise ValueError(f"the bandwidth copy needs at least 1 MiB, got {self.bandwidth_bytes} bytes")

    def _check_device(self) -> None:
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but CUDA is not available")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if device.type == "cuda" and self.clock == "cpu":
            raise ValueError("on CUDA the timings are GPU time between CUDA events; --clock cpu is for the CPU")

    @property
    def modes(self) -> list[str]:
        return list(MODES) if self.compile else ["eager"]

    @property
    def points(self) -> list[tuple[int, int]]:
        """The (batch, context) points to measure."""
        if self.shapes is not None:
            return [tuple(shape) for shape in self.shapes]
        return [(batch, context) for batch in self.batches for context in self.contexts]

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"

    @property
    def decode_compile_mode(self) -> str | None:
        if self.compile_mode is not None or self.compile_backend != "inductor":
            return self.compile_mode
        return "reduce-overhead" if self.cuda else None
