"""What one step allocates and dispatches (`profile_step`), and the GPU kernels it runs (`profile_kernels`)."""

import itertools

import torch


def profile_step(step, device: str = "cpu") -> tuple[int, int]:
    """(peak bytes, aten ops) of one call of `step()`.

    Peak bytes: the peak of the bytes allocated and not yet freed while the step runs (on CPU from the
    profiler's allocator events, on CUDA from the caching allocator's statistics); tensors that existed
    before (weights, inputs) are not counted. Aten ops: every aten operator the step dispatches, nested
    ones included, a noise-free measure of how much work an implementation asks for."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=not cuda) as prof:
        step()
    events = list(prof.profiler.kineto_results.events())
    aten_ops = sum(event.name().startswith("aten::") for event in events)
    if cuda:
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, aten_ops
    allocations = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    return max(itertools.accumulate((nbytes for _, nbytes in allocations), initial=0)), aten_ops


def profile_kernels(step, device: str) -> dict:
    """The GPU work of one call of `step()` on CUDA, from `torch.profiler`: kernels run (also those replayed
    inside a CUDA graph), their summed GPU time, memory copies / sets, the kernel launches and graph launches
    the CPU issued, and the five kernels taking the most time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    kernel_ns, copies, launches, graph_launches = {}, 0, 0, 0
    for event in prof.profiler.kineto_results.events():
        name = event.name()
        if event.device_type() == DeviceType.CUDA:
            if name.startswith(("Memcpy", "Memset")):
                copies += 1
            else:
                count, total = kernel_ns.get(name, (0, 0))
                kernel_ns[name] = (count + 1, total + event.duration_ns())
        elif name.startswith(("cudaLaunchKernel", "cuLaunchKernel")):
            launches += 1
        elif name.startswith("cudaGraphLaunch"):
            graph_launches += 1
    longest = sorted(kernel_ns.items(), key=lambda item: -item[1][1])[:5]
    return {
        "kernels": sum(count for count, _ in kernel_ns.values()),
        "kernel_ms": sum(total for _, total in kernel_ns.values()) / 1e6,
        "memory_copies": copies,
        "kernel_launches": launches,
        "graph_launches": graph_launches,
        "longest_kernels": [{"name": name, "count": count, "ms": total / 1e6} for name, (count, total) in longest],
    }


def start_kernel_tracing(device: str) -> None:
    """Start the profiler's CUDA tracing once before any CUDA graph is captured: kernels of graphs captured
    earlier are not reported when the graph is replayed under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        torch.cuda.synchronize(device)
