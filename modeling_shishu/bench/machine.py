"""The machine a report was measured on: platform, processor or GPU, library versions, bandwidth, timer."""

import contextlib
import os
import platform
from pathlib import Path

import torch

from .settings import BenchSettings
from .training import device_peak_flops


def describe_machine(bandwidth: float, settings: BenchSettings) -> dict:
    import transformers

    machine = {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_bandwidth_bytes_per_s": bandwidth,
        "timer": "cuda events" if settings.cuda else f"{settings.clock} clock",
        "peak_flops": device_peak_flops(settings),
    }
    if settings.cuda:
        properties = torch.cuda.get_device_properties(settings.device)
        machine.update(
            device_name=properties.name,
            device_memory_bytes=properties.total_memory,
            cuda=torch.version.cuda,
            sdpa_backends={
                name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")()
                for name in ("flash", "mem_efficient", "cudnn", "math")
                if hasattr(torch.backends.cuda, f"{name}_sdp_enabled")
            },
        )
    return machine


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
