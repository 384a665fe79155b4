"""What the hardware allows: memory bandwidth, bytes read per decode step, FLOPs per forward pass, and the
bandwidth limit of every decode figure."""

import torch

from ..sizes import head_dim, unique_parameters
from .timing import timed


def executed_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The block each layer runs, in execution order: a share group's owner once per layer of the group
    (a plain Llama / Qwen2 model has no `weight_owners`: every layer runs its own block)."""
    config = model.config
    owners = list(getattr(config, "weight_owners", range(config.num_hidden_layers)))
    return [model.model.layers[owners[layer_idx]] for layer_idx in range(config.num_hidden_layers)]


def decode_matmul_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight matrices one decode step multiplies by, in execution order: every projection of every
    layer (a shared group's weights once per layer that runs them), then the LM head."""
    weights = [m.weight for block in executed_blocks(model) for m in block.modules() if isinstance(m, torch.nn.Linear)]
    return weights + [model.get_output_embeddings().weight]


def forward_flops(model: torch.nn.Module, batch: int, tokens: int, logits_tokens: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of a forward pass over `tokens` new tokens from an empty cache: every
    projection of every layer in execution order (a shared group's weights once per layer that runs them),
    the LM head on `logits_tokens` positions, and causal attention (query i attends i + 1 keys)."""
    config = model.config
    projection_weights = sum(w.numel() for w in decode_matmul_weights(model)[:-1])  # [-1]: the LM head
    attention_layers = sum(hasattr(block, "self_attn") for block in executed_blocks(model))
    attended_keys = tokens * (tokens + 1) // 2
    # QK^T and AV
    attention = attention_layers * 2 * 2 * config.num_attention_heads * head_dim(config) * attended_keys
    lm_head = model.get_output_embeddings().weight.numel()
    return batch * (2 * tokens * projection_weights + 2 * logits_tokens * lm_head + attention)


def decode_weight_bytes(model: torch.nn.Module, batch: int) -> int:
    """Weight bytes one decode step reads from memory: every unique weight once, except that an
    input-embedding table not tied to the LM head is only read at `batch` rows."""
    _, nbytes = unique_parameters(model)
    embeddings = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight.untyped_storage().data_ptr() == embeddings.untyped_storage().data_ptr()
    if not tied:
        nbytes -= embeddings.numel() * embeddings.element_size()
        nbytes += batch * embeddings.shape[1] * embeddings.element_size()
    return nbytes


def kv_cache_bytes(cache) -> int:
    """Bytes held by the key and value tensors of a transformers cache (layers without attention hold none)."""
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def bandwidth_limit_tokens_per_s(bandwidth_bytes_per_s: float, bytes_per_step: int, batch: int) -> float:
    """The most tokens per second a decode step reading `bytes_per_step` can produce at this bandwidth."""
    return batch * bandwidth_bytes_per_s / bytes_per_step


def measure_memory_bandwidth(
    nbytes: int = 512 * 2**20, repeats: int = 5, device: str = "cpu", clock: str = "wall"
) -> dict:
    """Best-of-`repeats` copy of an `nbytes` tensor into another; bandwidth counts the bytes read plus the
    bytes written (the STREAM "copy" convention)."""
    source = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # touch every page once so that page faults stay out of the timing
    best = min(timed(lambda: target.copy_(source), device, clock) for _ in range(repeats))
    moved = 2 * source.numel() * source.element_size()
    return {"bytes_per_s": moved / best, "copy_bytes": source.numel() * source.element_size(), "best_seconds": best}


def matmul_floor_pass(model: torch.nn.Module, batch: int):
    """A function running the decode step's weight matmuls alone, on `batch` rows: the floor of a decode
    step with this device's matmul kernels (no attention, no KV cache, no other op, no Python between
    layers)."""
    weights = decode_matmul_weights(model)
    inputs = {w.shape[1]: torch.randn(batch, w.shape[1], dtype=w.dtype, device=w.device) for w in weights}

    def run():
        for weight in weights:
            torch.nn.functional.linear(inputs[weight.shape[1]], weight)

    return run


def add_bandwidth_figures(report: dict, models: list) -> None:
    """KV bytes per token, bytes read per step and the bandwidth limit of every decode figure, in place."""
    bandwidth = report["machine"]["memory_bandwidth_bytes_per_s"]
    by_role = {m.role: m.model for m in models}
    kv_eager = {
        (r["model"], r["batch"], r["context"]): r["kv_cache_bytes"]
        for r in report["inference"]
        if r["mode"] == "eager"
    }
    for row in report["inference"]:
        weight_bytes = decode_weight_bytes(by_role[row["model"]], row["batch"])
        kv = kv_eager[(row["model"], row["batch"], row["context"])]
        row["kv_cache_bytes_per_token"] = kv / (row["batch"] * row["context"])
        row["bytes_read_per_step"] = weight_bytes + kv
        row["tokens_per_s"] = row["batch"] / (row["decode_per_token"]["median_ms"] / 1e3)
        row["bandwidth_limit_tokens_per_s"] = bandwidth_limit_tokens_per_s(
            bandwidth, row["bytes_read_per_step"], row["batch"]
        )
        row["fraction_of_bandwidth_limit"] = row["tokens_per_s"] / row["bandwidth_limit_tokens_per_s"]
        floor = report["matmul_floor"][row["model"]][str(row["batch"])]["median_ms"] / 1e3
        # How close this device's matmul kernels alone come to the limit (weights only, no KV cache).
        row["matmul_floor_fraction_of_bandwidth_limit"] = weight_bytes / floor / bandwidth
    for role, description in report["models"].items():
        rows = [r for r in report["inference"] if r["model"] == role and r["mode"] == "eager"]
        description["kv_cache_bytes_per_token"] = rows[0]["kv_cache_bytes_per_token"] if rows else None
