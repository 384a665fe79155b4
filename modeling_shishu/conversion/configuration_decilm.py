"""Configuration of a Nemotron-NAS (DeciLM) checkpoint: a Llama whose layers each carry a block config.

`shishu export-nemotron-nas` copies this file beside the weights (`auto_map.AutoConfig`). The serving engines
read `config.block_configs[i].attention.no_op`, `.attention.n_heads_in_group` and `.ffn.ffn_mult` as
attributes (vLLM's and SGLang's `nemotron_nas.py`), so the JSON dicts become frozen dataclasses here, as in
NVIDIA's own `configuration_decilm.py`. Self-contained: it imports only transformers, and it keeps the
classic `__init__(**kwargs)` form so that transformers 4.x (older vLLM / SGLang releases) loads it too.
"""

import dataclasses

from transformers import PretrainedConfig


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    no_op: bool = False  # no attention at all: no weights, no KV cache (the layer is `x + FFN(norm(x))`)
    replace_with_linear: bool = False
    n_heads_in_group: int | None = None  # query heads per KV head; None when `no_op` or `replace_with_linear`
    sparsify: list | None = None
    window_length: int | None = None
    num_sink_tokens: int | None = None
    use_prefill_window_in_sink_attention: bool = False
    unshifted_sink: bool = False

    def __post_init__(self):
        if not (self.no_op or self.replace_with_linear) and not self.n_heads_in_group:
            raise ValueError("an attention block needs n_heads_in_group (or no_op / replace_with_linear)")


@dataclasses.dataclass(frozen=True)
class FFNConfig:
    no_op: bool = False
    replace_with_linear: bool = False
    ffn_mult: float | None = None  # width = 2/3 * ffn_mult * hidden_size, rounded up to a multiple of 256
    sparsify: list | None = None

    def __post_init__(self):
        if not (self.no_op or self.replace_with_linear) and self.ffn_mult is None:
            raise ValueError("an FFN block needs ffn_mult (or no_op / replace_with_linear)")


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    attention: AttentionConfig
    ffn: FFNConfig

    @classmethod
    def from_dict(cls, data: dict) -> "BlockConfig":
        return cls(attention=AttentionConfig(**data.get("attention", {})), ffn=FFNConfig(**data.get("ffn", {})))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """The MLP width every DeciLM reader derives from `ffn_mult` (vLLM, SGLang, MLX-LM, llama.cpp)."""
    width = int(2 * ffn_mult * hidden_size / 3)
    return width if width % 256 == 0 else width + 256 - width % 256


class DeciLMConfig(PretrainedConfig):
    model_type = "nemotron-nas"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list | None = 2,
        tie_word_embeddings: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        rope_parameters: dict | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        block_configs: list | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        # Readers differ in which name they take the RoPE settings from (transformers 5 and vLLM:
        # `rope_parameters`; SGLang, MLX-LM and transformers 4: `rope_theta` / `rope_scaling`): keep both.
        self.rope_theta = rope_theta
        if rope_scaling is not None:  # transformers 5 warns on any `rope_scaling`, so only a real one is set
            self.rope_scaling = rope_scaling
        self.rope_parameters = rope_parameters or {"rope_type": "default", "rope_theta": rope_theta}
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        blocks = block_configs or []
        self.block_configs = [b if isinstance(b, BlockConfig) else BlockConfig.from_dict(b) for b in blocks]
        if self.block_configs and len(self.block_configs) != num_hidden_layers:
            raise ValueError(f"{len(self.block_configs)} block_configs for {num_hidden_layers} layers")
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def to_dict(self) -> dict:
        output = super().to_dict()
        output["block_configs"] = [block.to_dict() for block in self.block_configs]
        return output


__all__ = ["AttentionConfig", "BlockConfig", "DeciLMConfig", "FFNConfig", "ffn_mult_to_intermediate_size"]
