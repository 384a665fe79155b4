# Copyright 2026 The ShishuLM authors. Licensed under the Apache License, Version 2.0.
"""ShishuLM model configuration.

This file and `modeling_shishu.py` are the remote-code pair that `save_pretrained` copies next to a
checkpoint: they import only torch, transformers and each other.
"""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters


ATTENTION_LAYER = "full_attention"
MLP_LAYER = "mlp"
SHISHU_LAYER_TYPES = (ATTENTION_LAYER, MLP_LAYER)
# config.json keeps `layer_types` under this key. `AutoTokenizer.from_pretrained(folder)` without remote code parses
# every config.json with transformers' base config class, whose validation refuses "mlp" in `layer_types`; under
# its own key the layout is ours alone (as Bamba's `layers_block_type`). Both keys are read.
SAVED_LAYOUT_KEY = "block_types"


@strict
class ShishuConfig(PreTrainedConfig):
    r"""
    Configuration of a ShishuLM: a Llama-style decoder whose top layers are MLP-only blocks
    (`y = x + MLP(RMSNorm(x))`, no attention and no KV cache), with adjacent MLP-only blocks sharing
    one set of weights (arXiv 2510.13860).

    Every architecture choice lives here, so it is saved in `config.json`. On top of the Llama fields:

    layer_types (`list[str]`, *optional*):
        One entry per layer: `"full_attention"` (a normal decoder block) or `"mlp"` (an MLP-only block).
        Defaults to all `"full_attention"`, which is exactly Llama. Saved in config.json as `block_types`.
    mlp_share_groups (`list[list[int]]`, *optional*):
        Groups of adjacent `"mlp"` layer indices that run one after the other with ONE set of MLP and
        norm weights, e.g. `[[20, 21], [22, 23]]`. The first layer of a group owns the weights.
    attention_output_bias (`bool`, *optional*):
        Bias on `o_proj`. Defaults to `attention_bias` (Llama); Qwen2 parents have biases on q/k/v only.

    ```python
    >>> from modeling_shishu import ShishuConfig, ShishuForCausalLM
    >>> config = ShishuConfig(num_hidden_layers=4, layer_types=["full_attention"] * 2 + ["mlp"] * 2,
    ...                       mlp_share_groups=[[2, 3]])
    >>> model = ShishuForCausalLM(config)
    ```
    """

    model_type = "shishu"
    keys_to_ignore_at_inference = ["past_key_values"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_output_bias: bool | None = None
    attention_dropout: int | float | None = 0.0
    mlp_bias: bool = False
    layer_types: list[str] | None = None
    mlp_share_groups: list[list[int]] | None = None

    def __post_init__(self, **kwargs):
        saved_layout = kwargs.pop(SAVED_LAYOUT_KEY, None)
        if saved_layout is not None:
            self.layer_types = saved_layout
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.attention_output_bias is None:
            self.attention_output_bias = self.attention_bias
        if self.layer_types is None:
            self.layer_types = [ATTENTION_LAYER] * self.num_hidden_layers
        self.layer_types = list(self.layer_types)
        self.mlp_share_groups = [list(group) for group in (self.mlp_share_groups or [])]
        # Before the base class runs: it renames legacy layer types in place ("attention" becomes
        # "full_attention"), which would let a misspelt layout through unnoticed.
        self.check_layer_type_names()
        super().__post_init__(**kwargs)
        # Raise plain ValueErrors with our own messages at construction; `validate()` (run again by
        # `save_pretrained`) goes through the same checks below.
        self.check_layout()

    # ----------------------------------------------------------------------------------------------
    # Validation. The base class's `validate_layer_type` rejects "mlp", so it is replaced here; the
    # `@strict` decorator above regenerates `validate()` so it calls these methods, not the base ones.

    def check_layout(self) -> None:
        """Raise `ValueError` naming the problem if heads, `layer_types` or `mlp_share_groups` are inconsistent."""
        if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_key_value_heads <= 0 or self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is {self.num_hidden_layers}"
            )
        self.check_layer_type_names()
        if ATTENTION_LAYER not in self.layer_types:
            # The KV cache sizes itself from the first attention layer; without one there is no sequence
            # mixing at all, which is not a language model.
            raise ValueError("at least one layer must be 'full_attention'; got only 'mlp' layers")

        seen = {}
        for group_index, group in enumerate(self.mlp_share_groups):
            if len(group) < 2:
                raise ValueError(f"mlp_share_groups[{group_index}] = {group} must hold at least two layers")
            for layer_idx in group:
                if not isinstance(layer_idx, int) or not 0 <= layer_idx < self.num_hidden_layers:
                    raise ValueError(
                        f"mlp_share_groups[{group_index}] = {group}: layer index {layer_idx} is out of range "
                        f"0..{self.num_hidden_layers - 1}"
                    )
                if self.layer_types[layer_idx] != MLP_LAYER:
                    raise ValueError(
                        f"mlp_share_groups[{group_index}] = {group}: layer {layer_idx} is "
                        f"{self.layer_types[layer_idx]!r}, only 'mlp' layers can share weights"
                    )
                if layer_idx in seen:
                    raise ValueError(
                        f"mlp_share_groups overlap: layer {layer_idx} is in group {seen[layer_idx]} and group {group_index}"
                    )
                seen[layer_idx] = group_index
            if list(group) != list(range(group[0], group[0] + len(group))):
                raise ValueError(
                    f"mlp_share_groups[{group_index}] = {group} must be a run of adjacent layers in increasing order"
                )

    def check_layer_type_names(self) -> None:
        for index, layer_type in enumerate(self.layer_types):
            if layer_type not in SHISHU_LAYER_TYPES:
                raise ValueError(
                    f"layer_types[{index}] is {layer_type!r}; allowed values are {list(SHISHU_LAYER_TYPES)}"
                )

    def validate_layer_type(self):
        self.check_layout()

    def validate_architecture(self):
        self.check_layout()

    def to_dict(self) -> dict:
        output = super().to_dict()
        if "layer_types" in output:
            output[SAVED_LAYOUT_KEY] = output.pop("layer_types")
        return output

    # ----------------------------------------------------------------------------------------------
    # Layout helpers used by the model, the converters and the analysis tools.

    @property
    def attention_layer_indices(self) -> list[int]:
        return [i for i, layer_type in enumerate(self.layer_types) if layer_type == ATTENTION_LAYER]

    @property
    def mlp_layer_indices(self) -> list[int]:
        return [i for i, layer_type in enumerate(self.layer_types) if layer_type == MLP_LAYER]

    @property
    def weight_owners(self) -> list[int]:
        """For each layer, the index of the layer whose weights it runs (itself unless it shares)."""
        owners = list(range(self.num_hidden_layers))
        for group in self.mlp_share_groups:
            for layer_idx in group[1:]:
                owners[layer_idx] = group[0]
        return owners

    @classmethod
    def from_llama_config(
        cls,
        llama_config,
        num_mlp_layers: int = 0,
        share: str = "pairs",
        extra_mlp_layers: int = 0,
        mlp_layers: list[int] | None = None,
        **overrides,
    ) -> "ShishuConfig":
        """Build a ShishuLM layout from a Llama-family config (Llama, SmolLM, Qwen2, Mistral).

        Args:
            llama_config: the parent's config (a `PreTrainedConfig` or a dict).
            num_mlp_layers: turn the top `num_mlp_layers` layers into MLP-only blocks.
            share: `"pairs"` to share weights between adjacent MLP-only blocks, from the bottom of each
                run of MLP-only layers up (an odd one out stays unshared), or `"none"`.
            extra_mlp_layers: MLP-only layers appended on top (they join the topmost run for sharing).
            mlp_layers: explicit parent layer indices to convert instead of the top `num_mlp_layers`.
        """
        parent = llama_config.to_dict() if hasattr(llama_config, "to_dict") else dict(llama_config)
        num_parent_layers = parent["num_hidden_layers"]
        if mlp_layers is None:
            if not 0 <= num_mlp_layers <= num_parent_layers:
                raise ValueError(f"num_mlp_layers must be between 0 and {num_parent_layers}, got {num_mlp_layers}")
            mlp_layers = list(range(num_parent_layers - num_mlp_layers, num_parent_layers))
        mlp_layers = sorted(set(mlp_layers))
        if any(not 0 <= i < num_parent_layers for i in mlp_layers):
            raise ValueError(f"mlp_layers {mlp_layers} must be indices in 0..{num_parent_layers - 1}")
        if extra_mlp_layers < 0:
            raise ValueError(f"extra_mlp_layers must be >= 0, got {extra_mlp_layers}")
        if share not in ("pairs", "none"):
            raise ValueError(f"share must be 'pairs' or 'none', got {share!r}")

        num_layers = num_parent_layers + extra_mlp_layers
        layer_types = [MLP_LAYER if i in mlp_layers else ATTENTION_LAYER for i in range(num_parent_layers)]
        layer_types += [MLP_LAYER] * extra_mlp_layers
        groups = pair_adjacent_mlp_layers(layer_types) if share == "pairs" else []

        rope_parameters = parent.get("rope_parameters") or {
            "rope_type": "default",
            "rope_theta": parent.get("rope_theta", 10000.0),
        }
        attention_bias = parent.get("attention_bias", False)
        attention_output_bias = attention_bias
        if parent.get("model_type") == "qwen2":
            attention_bias, attention_output_bias = True, False
        fields = dict(
            vocab_size=parent["vocab_size"],
            hidden_size=parent["hidden_size"],
            intermediate_size=parent["intermediate_size"],
            num_hidden_layers=num_layers,
            num_attention_heads=parent["num_attention_heads"],
            num_key_value_heads=parent.get("num_key_value_heads") or parent["num_attention_heads"],
            head_dim=parent.get("head_dim") or parent["hidden_size"] // parent["num_attention_heads"],
            hidden_act=parent.get("hidden_act", "silu"),
            max_position_embeddings=parent.get("max_position_embeddings", 2048),
            initializer_range=parent.get("initializer_range", 0.02),
            rms_norm_eps=parent.get("rms_norm_eps", 1e-6),
            pad_token_id=parent.get("pad_token_id"),
            bos_token_id=parent.get("bos_token_id"),
            eos_token_id=parent.get("eos_token_id"),
            tie_word_embeddings=parent.get("tie_word_embeddings", False),
            rope_parameters=dict(rope_parameters),
            attention_bias=attention_bias,
            attention_output_bias=attention_output_bias,
            attention_dropout=parent.get("attention_dropout", 0.0),
            mlp_bias=parent.get("mlp_bias", False),
            layer_types=layer_types,
            mlp_share_groups=groups,
        )
        fields.update(overrides)
        return cls(**fields)


def pair_adjacent_mlp_layers(layer_types: list[str]) -> list[list[int]]:
    """Pair adjacent `"mlp"` layers from the bottom of each run up; an odd one out stays unshared."""
    groups, run = [], []
    for index, layer_type in enumerate(list(layer_types) + [ATTENTION_LAYER]):
        if layer_type == MLP_LAYER:
            run.append(index)
            continue
        groups += [run[i : i + 2] for i in range(0, len(run) - 1, 2)]
        run = []
    return groups


__all__ = ["ShishuConfig", "pair_adjacent_mlp_layers"]
