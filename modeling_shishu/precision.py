"""The precision a device runs natively: bfloat16 where its matrix units compute in bfloat16, else float32.

On a CPU without bfloat16 instructions torch emulates bfloat16 matrix products, tens of times slower than float32,
so "bf16 on CPU" is a property of the processor, not a habit: every tool asks here once and records the answer.
"""

import os

import torch


# Overrides the choice for every tool (e.g. `SHISHU_PRECISION=float32` to time the float32 path on a CPU that
# has bfloat16 instructions).
PRECISION_ENV = "SHISHU_PRECISION"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX on x86, as oneDNN uses them)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _forced() -> str | None:
    forced = os.environ.get(PRECISION_ENV)
    if forced and forced not in ("float32", "bfloat16"):
        raise ValueError(f"{PRECISION_ENV} must be float32 or bfloat16, got {forced!r}")
    return forced or None


def has_native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` runs bfloat16 matrix products natively (CUDA: Ampere and later; CPU: see above);
    `$SHISHU_PRECISION` overrides the answer."""
    if _forced():
        return _forced() == "bfloat16"
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def native_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bfloat16 where `device` runs it natively, else float32 (`$SHISHU_PRECISION` overrides)."""
    return torch.bfloat16 if has_native_bf16(device) else torch.float32


def native_dtype_name(device: str | torch.device = "cpu") -> str:
    """`native_dtype` as the name the command-line tools take ("bfloat16" or "float32")."""
    return str(native_dtype(device)).removeprefix("torch.")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = [
    "PRECISION_ENV",
    "cpu_has_native_bf16",
    "default_device",
    "has_native_bf16",
    "native_dtype",
    "native_dtype_name",
]
