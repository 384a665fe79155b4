"""The model's arithmetic, in one place: parameters, KV-cache bytes, FLOPs and the layout string.

Every function takes a config (a ShishuConfig or its Llama-family parent's config) or a model, so that the
conversion report, the variants table, the model card, the benchmark and the training metrics count alike.
"""

import torch

from .configuration_shishu import ATTENTION_LAYER, MLP_LAYER, SAVED_LAYOUT_KEY


def layer_types(config) -> list[str]:
    # A plain Llama config has no `layer_types`: every layer attends. A config.json read as a dict holds them
    # under `block_types` (see configuration_shishu.SAVED_LAYOUT_KEY).
    types = getattr(config, "layer_types", None) or getattr(config, SAVED_LAYOUT_KEY, None)
    return list(types or [ATTENTION_LAYER] * config.num_hidden_layers)


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def num_attention_layers(config) -> int:
    return sum(layer_type == ATTENTION_LAYER for layer_type in layer_types(config))


def unique_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(count, bytes) of a model's parameters, each storage counted once (tied and shared weights)."""
    seen, count, nbytes = set(), 0, 0
    for parameter in model.parameters():
        key = (parameter.untyped_storage().data_ptr(), parameter.storage_offset(), tuple(parameter.shape))
        if key in seen:
            continue
        seen.add(key)
        count += parameter.numel()
        nbytes += parameter.numel() * parameter.element_size()
    return count, nbytes


def count_unique_parameters(config) -> int:
    """Unique parameters of the causal LM `config` describes (tied and shared weights counted once), counted on a
    meta-device instance of the real model class: no memory, no initialisation."""
    from transformers import AutoModelForCausalLM

    from .configuration_shishu import ShishuConfig
    from .modeling_shishu import ShishuForCausalLM

    with torch.device("meta"):
        model = (
            ShishuForCausalLM(config) if isinstance(config, ShishuConfig) else AutoModelForCausalLM.from_config(config)
        )
    # meta tensors have no storage to tell shared ones apart; `num_parameters` counts each Parameter object once
    return model.num_parameters()


def kv_bytes_per_token(config, bytes_per_value: int = 2) -> int:
    """Bytes of KV cache one token costs: K and V of every key/value head of every attention layer (MLP-only
    layers hold none). `bytes_per_value` 2 is bf16 / fp16."""
    return 2 * num_attention_layers(config) * config.num_key_value_heads * head_dim(config) * bytes_per_value


def applied_parameters(config) -> int:
    """Parameters that take part in the matrix products of one token's forward pass.

    Shared MLP-only blocks count once per layer that runs them (the FLOPs are spent every time), the embedding
    lookup counts zero and the output projection counts once.
    """
    d, ffn = config.hidden_size, config.intermediate_size
    q_and_o = 2 * d * config.num_attention_heads * head_dim(config)
    k_and_v = 2 * d * config.num_key_value_heads * head_dim(config)
    mlp = 3 * d * ffn
    attention = num_attention_layers(config) * (q_and_o + k_and_v)
    return config.num_hidden_layers * mlp + attention + d * config.vocab_size


def training_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward): `6 N + 12 L_attn H d_head T` (PaLM, appendix B), with `N`
    the applied parameters; the attention-score term counts only attention layers, since MLP-only blocks mix
    no positions."""
    attention = 12 * num_attention_layers(config) * config.num_attention_heads * head_dim(config) * seq_len
    return 6 * applied_parameters(config) + attention


def layout_string(config_or_layer_types) -> str:
    """`20xA+10xM`: runs of attention (A) and MLP-only (M) layers, bottom to top."""
    types = config_or_layer_types if isinstance(config_or_layer_types, list) else layer_types(config_or_layer_types)
    runs = []
    for layer_type in types:
        symbol = "M" if layer_type == MLP_LAYER else "A"
        if runs and runs[-1][0] == symbol:
            runs[-1][1] += 1
        else:
            runs.append([symbol, 1])
    return "+".join(f"{count}x{symbol}" for symbol, count in runs)


def layout_sizes(parent_config, shishu_config) -> dict:
    """A ShishuLM layout against its parent: unique parameters, bf16 KV bytes per token and layer counts."""
    parent_params = count_unique_parameters(parent_config)
    params = count_unique_parameters(shishu_config)
    parent_kv = kv_bytes_per_token(parent_config)
    kv = kv_bytes_per_token(shishu_config)
    return {
        "parent_parameters": parent_params,
        "parameters": params,
        "parameters_change": params / parent_params - 1.0,
        "parent_kv_bytes_per_token_bf16": parent_kv,
        "kv_bytes_per_token_bf16": kv,
        "kv_change": kv / parent_kv - 1.0,
        "layers": shishu_config.num_hidden_layers,
        "attention_layers": num_attention_layers(shishu_config),
        "mlp_layers": shishu_config.num_hidden_layers - num_attention_layers(shishu_config),
        "share_groups": len(shishu_config.mlp_share_groups),
    }
