# Copyright 2026 The ShishuLM authors. Licensed under the Apache License, Version 2.0.
"""PyTorch ShishuLM in transformers' modular format: what differs from Llama, with Llama's pieces inherited.

A ShishuLM whose layers are all "full_attention" computes exactly what `LlamaForCausalLM` computes; its top layers
can instead be MLP-only blocks with paired weight sharing. `make modular` expands this file with transformers'
`utils/modular_model_converter.py` into `modeling_shishu.py`, the self-contained remote code that ships with every
checkpoint: edit this file, never the expanded one.
"""

import inspect
import re
from collections.abc import Callable

import torch
import transformers.cache_utils as cache_utils
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.import_utils import is_torch_greater_or_equal

from .configuration_shishu import ATTENTION_LAYER, MLP_LAYER, ShishuConfig


logger = logging.get_logger(__name__)

# This file runs on whatever transformers release a user has (5.10 onwards), so it only uses entry points that
# all of them share, and adapts to two renames:
# - transformers 5.24 renamed the cache argument and output field `past_key_values` -> `cache` (the old name is
#   deprecated). Every forward accepts both names; outputs use the installed release's field name.
CACHE_OUTPUT_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
_MASK_CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


# - An MLP-only block needs a cache layer without keys and values, or caches read the sequence length from an
#   empty layer. From 5.15 on, transformers gives "mlp" layers such a layer; 5.10-5.14 give it to their other
#   attention-free layer name, "moe", only (5.14 refuses "mlp" outright), so "mlp" is registered the same way
#   here. The static cache of 5.10-5.13 ignores that mapping: `ShishuModel.forward` swaps its key/value layers
#   of MLP-only blocks for key/value-free ones.
def adapt_cache_utils() -> None:
    """Registers "mlp" cache layers where the release lacks them, and lets a cache answer its length from a layer
    that holds keys and values. Runs when a model is built (idempotent): a cache is only ever made after that."""
    for registry in ("LAYER_TYPE_CACHE_MAPPING", "DYNAMIC_LAYER_TYPE_MAPPING", "STATIC_LAYER_TYPE_MAPPING"):
        mapping = getattr(cache_utils, registry, None)
        if isinstance(mapping, dict) and "moe" in mapping and MLP_LAYER not in mapping:
            mapping[MLP_LAYER] = mapping["moe"]

    # - From 5.25 on, "mlp" layers get a `DummyLayer`, which cannot tell a length, while `generate()` asks the cache
    #   for layer 0's: with an MLP-only first layer, the length is asked of the first layer that holds keys and values.
    dummy_layer = getattr(cache_utils, "DummyLayer", None)
    cache_seq_length = cache_utils.Cache.get_seq_length
    if dummy_layer is None or hasattr(dummy_layer, "get_seq_length") or hasattr(cache_seq_length, "holding_layer"):
        return

    def seq_length_of_a_holding_layer(self, layer_idx: int = 0) -> int:
        layers = getattr(self, "layers", None) or []
        if layer_idx < len(layers) and isinstance(layers[layer_idx], dummy_layer):
            holding = [i for i, layer in enumerate(layers) if not isinstance(layer, dummy_layer)]
            layer_idx = holding[0] if holding else len(layers)
        return cache_seq_length(self, layer_idx)

    seq_length_of_a_holding_layer.holding_layer = True
    cache_utils.Cache.get_seq_length = seq_length_of_a_holding_layer


def key_value_free_static_layer_class() -> type | None:
    """A cache layer without keys and values that still answers a static cache's size questions (None where
    transformers has no `LinearAttentionLayer`). Built with `type`: the modular converter would hoist a nested class."""
    if not hasattr(cache_utils, "LinearAttentionLayer"):
        return None

    def __init__(self, max_batch_size: int, max_cache_len: int):
        cache_utils.LinearAttentionLayer.__init__(self)
        self.max_batch_size = max_batch_size
        self.max_cache_len = max_cache_len

    return type("KeyValueFreeStaticLayer", (cache_utils.LinearAttentionLayer,), {"__init__": __init__})


KEY_VALUE_FREE_STATIC_LAYER = key_value_free_static_layer_class()


def free_static_mlp_layers(cache: Cache | None, config: ShishuConfig, batch_size: int) -> None:
    """Swap the key/value layers a 5.10-5.13 static cache built for MLP-only blocks for key/value-free ones."""
    layers = getattr(cache, "layers", None)
    if layers is None or KEY_VALUE_FREE_STATIC_LAYER is None:
        return
    for layer_idx in config.mlp_layer_indices:
        layer = layers[layer_idx] if layer_idx < len(layers) else None
        if isinstance(layer, cache_utils.StaticLayer) and not layer.is_initialized:
            layers[layer_idx] = KEY_VALUE_FREE_STATIC_LAYER(batch_size, layer.max_cache_len)


def pick_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed under either name (`cache` from transformers 5.24 on, `past_key_values` before)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("got two different caches: pass it once, as `cache` or as `past_key_values`")
    return cache if cache is not None else past_key_values


def causal_attention_mask(
    config: ShishuConfig,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | dict | None,
    cache: Cache | None,
    position_ids: torch.Tensor | None,
) -> torch.Tensor | None:
    """The mask of the attention layers (every attention layer is causal and full, so they share one)."""
    if isinstance(attention_mask, dict):
        # generate() hands over the masks it prepared for a static cache, keyed by layer type
        attention_mask = attention_mask.get(ATTENTION_LAYER)
    return create_causal_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{_MASK_CACHE_ARGUMENT: cache},
    )


def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """Keep the positions whose logits are needed: the last `logits_to_keep` (0 keeps all), the positions a 1-D or
    2-D integer tensor names, or the `True` positions of a boolean mask (flattened). transformers has this helper
    from 5.21 on only."""
    if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.ndim == 2:
        if logits_to_keep.dtype == torch.bool:
            return hidden_states[logits_to_keep]
        return torch.take_along_dim(hidden_states, logits_to_keep[..., None], dim=1)
    if isinstance(logits_to_keep, int):
        logits_to_keep = slice(-logits_to_keep, None)
    return hidden_states[:, logits_to_keep, :]


class ShishuRMSNorm(LlamaRMSNorm):
    pass


class ShishuRotaryEmbedding(LlamaRotaryEmbedding):
    # `inv_freq` is a non-persistent buffer: transformers 5.x re-computes it in `_init_weights` after
    # `from_pretrained` (it matches "RotaryEmbedding" modules that keep `original_inv_freq`).
    pass


class ShishuMLP(LlamaMLP):
    """SwiGLU feed-forward: `down(act(gate(x)) * up(x))`."""


# `enable_gqa` arrived in torch 2.5.
_SDPA_SUPPORTS_GQA = is_torch_greater_or_equal("2.5")


def sdpa_grouped_query_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """SDPA with grouped-query attention done inside the kernel (`enable_gqa`), for masked attention on CPU.

    transformers' SDPA path copies the keys and values once per query head (`repeat_kv`) whenever a mask is
    present under `torch.compile`, i.e. at every decode step with a static cache: a copy of the whole cache,
    per layer and per token, that costs more than the attention itself at long contexts. PyTorch's CPU kernel
    takes grouped queries with a mask directly and gives the same result.
    """
    attn_output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return attn_output.transpose(1, 2).contiguous(), None


class ShishuAttention(nn.Module):
    """Grouped-query attention with RoPE, dispatched through transformers' attention interface."""

    def __init__(self, config: ShishuConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        self.q_proj = nn.Linear(
            config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias
        )
        self.k_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, config.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(
            config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_output_bias
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        if (
            self.config._attn_implementation == "sdpa"
            and attention_mask is not None
            and self.num_key_value_groups > 1
            and query_states.device.type == "cpu"
            and _SDPA_SUPPORTS_GQA
        ):
            attention_interface = sdpa_grouped_query_attention
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        attn_output = self.o_proj(attn_output)
        return attn_output, attn_weights


class ShishuDecoderLayer(GradientCheckpointingLayer):
    """A full decoder block: `x + Attn(RMSNorm(x))`, then `x + MLP(RMSNorm(x))`."""

    def __init__(self, config: ShishuConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = ShishuAttention(config=config, layer_idx=layer_idx)
        self.mlp = ShishuMLP(config)
        self.input_layernorm = ShishuRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = ShishuRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class ShishuMLPBlock(GradientCheckpointingLayer):
    """An MLP-only block: `x + MLP(RMSNorm(x))`. No attention, so no KV cache and no mask.

    The norm keeps the decoder block's name (`post_attention_layernorm`) so converters and PEFT target
    lists that know Llama find it. In a share group this block is the owner: the model runs it once per
    layer of the group, back to back.
    """

    def __init__(self, config: ShishuConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.mlp = ShishuMLP(config)
        self.post_attention_layernorm = ShishuRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        # Attention-only arguments (mask, cache, position embeddings) are accepted and ignored.
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class ShishuSharedMLPBlock(nn.Module):
    """A later layer of a share group. It holds no weights: the model runs the group owner's block in its
    place. Registering the owner here as well would make two names alias one tensor, which breaks
    safetensors ("tensors share memory"), PEFT (adapting it twice) and FSDP wrapping."""

    def __init__(self, config: ShishuConfig, layer_idx: int, owner_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.owner_idx = owner_idx

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"layer {self.layer_idx} shares the weights of layer {self.owner_idx}: run model.layers[{self.owner_idx}]"
        )

    def extra_repr(self):
        return f"runs model.layers[{self.owner_idx}]"


_LAYER_WEIGHT = re.compile(r"(^|\.)layers\.\d+\.")


class ShishuPreTrainedModel(PreTrainedModel):
    config: ShishuConfig
    config_class = ShishuConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ShishuDecoderLayer", "ShishuMLPBlock"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers fills weights a checkpoint lacks with fresh ones and only mentions it in its load report.
        # For a ShishuLM, layer weights that are missing or unexpected mean `layer_types` / `mlp_share_groups` in
        # config.json disagree with the weights (an edited config, another layout's weights): refuse to load.
        # transformers' own initialisation paths stay as they are for Llama: no folder (`from_pretrained(None,
        # config=..., state_dict={})`), or a checkpoint that holds none of this model's layer weights at all.
        wants_loading_info = kwargs.get("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, **{**kwargs, "output_loading_info": True})
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        missing = sorted(key for key in loading_info.get("missing_keys", ()) if _LAYER_WEIGHT.search(key))
        unexpected = sorted(key for key in loading_info.get("unexpected_keys", ()) if _LAYER_WEIGHT.search(key))
        layer_weights = {name for name in model.state_dict() if _LAYER_WEIGHT.search(name)}
        nothing_loaded = layer_weights.issubset(missing) and not unexpected
        if source is not None and not nothing_loaded and (missing or unexpected):
            found = [
                f"{label} {', '.join(keys[:4])}{f' (+{len(keys) - 4} more)' if len(keys) > 4 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            ]
            raise ValueError(
                f"the weights of {source} do not match the layout in its config.json (layer_types, "
                f"mlp_share_groups): {'; '.join(found)}"
            )
        return (model, loading_info) if wants_loading_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records only the saved class in `auto_map`; record the whole remote-code pair so
        # AutoConfig, AutoModel and AutoModelForCausalLM all load the folder with trust_remote_code.
        self.config.auto_map = {
            "AutoConfig": "configuration_shishu.ShishuConfig",
            "AutoModel": "modeling_shishu.ShishuModel",
            "AutoModelForCausalLM": "modeling_shishu.ShishuForCausalLM",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    def create_masks_for_generate(
        self,
        config: ShishuConfig,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        past_key_values: Cache | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> dict[str, torch.Tensor | None]:
        """The attention layers' mask for a compiled generation step, built ahead of the forward.

        transformers' generic version knows no mask for `"mlp"` layers and hands back the 2-D padding mask, which
        grows by one column per token and makes a compiled step recompile at every token.
        """
        mask = causal_attention_mask(
            config, inputs_embeds, attention_mask, pick_cache(cache, past_key_values), position_ids
        )
        return {ATTENTION_LAYER: mask}


class ShishuModel(ShishuPreTrainedModel):
    def __init__(self, config: ShishuConfig):
        # Fields can be edited after the config was built (e.g. `num_hidden_layers`): refuse a layout that no
        # longer adds up before any layer is built from it.
        config.check_layout()
        adapt_cache_utils()
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size

        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.weight_owners = config.weight_owners
        self.layers = nn.ModuleList(
            [self._build_layer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = ShishuRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = ShishuRotaryEmbedding(config=config)
        self.gradient_checkpointing = False

        self.post_init()

    def _build_layer(self, config: ShishuConfig, layer_idx: int) -> nn.Module:
        owner_idx = self.weight_owners[layer_idx]
        if owner_idx != layer_idx:
            return ShishuSharedMLPBlock(config, layer_idx, owner_idx)
        if config.layer_types[layer_idx] == ATTENTION_LAYER:
            return ShishuDecoderLayer(config, layer_idx)
        return ShishuMLPBlock(config, layer_idx)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""
        output_attentions (`bool`, *optional*):
            Return the attention weights of the attention layers only (an eager attention implementation is needed
            to get weights): `attentions[k]` belongs to layer `config.attention_layer_indices[k]`. MLP-only layers
            have no attention, as in transformers' other hybrid models.
        output_hidden_states (`bool`, *optional*):
            Return the embeddings and the output of every layer, shared layers included (`num_hidden_layers + 1`
            tensors; the last one after the final norm).
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        cache = pick_cache(cache, past_key_values)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("`use_cache=True` is incompatible with gradient checkpointing: using no cache.")
            use_cache = False
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )

        if inputs_embeds is None:
            inputs_embeds: torch.Tensor = self.embed_tokens(input_ids)

        if use_cache and cache is None:
            # "mlp" layer types map to key/value-free cache layers: only attention layers hold keys and values.
            cache = DynamicCache(config=self.config)
        free_static_mlp_layers(cache, self.config, inputs_embeds.shape[0])

        if position_ids is None:
            # asked of an attention layer: from 5.25 on, key/value-free layers cannot tell their length
            first_attention = self.config.attention_layer_indices[0]
            past_seen_tokens = cache.get_seq_length(first_attention) if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        causal_mask = causal_attention_mask(self.config, inputs_embeds, attention_mask, cache, position_ids)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        all_hidden_states = [] if output_hidden_states else None
        all_attentions = []
        hooks = self._record_attentions(all_attentions) if output_attentions else []
        try:
            for owner_idx in self.weight_owners[: self.config.num_hidden_layers]:
                if output_hidden_states:
                    all_hidden_states.append(hidden_states)
                # A shared layer runs its group owner's block: the same weights twice in a row.
                hidden_states = self.layers[owner_idx](
                    hidden_states,
                    attention_mask=causal_mask,
                    position_embeddings=position_embeddings,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=use_cache,
                    **kwargs,
                )
        finally:
            for hook in hooks:
                hook.remove()

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            **{CACHE_OUTPUT_FIELD: cache},
        )

    def _record_attentions(self, records: list) -> list:
        """Forward hooks that append each attention layer's weights (eager attention returns them) to `records`."""

        def record(module, args, output):
            if output[1] is not None:
                records.append(output[1])

        return [
            layer.self_attn.register_forward_hook(record)
            for layer in self.layers
            if isinstance(layer, ShishuDecoderLayer)
        ]


class ShishuForCausalLM(ShishuPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: ShishuConfig):
        super().__init__(config)
        self.model = ShishuModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        Example:

        ```python
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer

        >>> model = AutoModelForCausalLM.from_pretrained("path/to/shishu-smollm2-135m-instruct-m10", trust_remote_code=True)
        >>> tokenizer = AutoTokenizer.from_pretrained("path/to/shishu-smollm2-135m-instruct-m10", trust_remote_code=True)
        >>> inputs = tokenizer("The capital of France is", return_tensors="pt")
        >>> tokenizer.decode(model.generate(**inputs, max_new_tokens=8)[0])
        ```"""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=pick_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )

        hidden_states = outputs.last_hidden_state
        hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_OUTPUT_FIELD: getattr(outputs, CACHE_OUTPUT_FIELD)},
        )


__all__ = ["ShishuForCausalLM", "ShishuModel", "ShishuPreTrainedModel"]
