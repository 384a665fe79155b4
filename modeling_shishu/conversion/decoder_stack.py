"""Run a Llama-family causal LM one decoder layer at a time: start a forward pass at any layer from a cached
input, and drop chosen attention blocks. The layer analysis and the local fitting are built on it."""

from contextlib import contextmanager

import torch
from transformers.masking_utils import create_causal_mask

from ..configuration_shishu import ATTENTION_LAYER


class DecoderStack:
    """Runs a Llama-family causal LM (Llama, Mistral, Qwen2, ShishuLM) one layer at a time, so the
    analysis can start a forward pass at any layer from cached inputs and drop one layer's attention."""

    def __init__(self, model):
        if not all(
            hasattr(model, "model") and hasattr(model.model, name)
            for name in ("embed_tokens", "layers", "norm", "rotary_emb")
        ):
            raise ValueError(
                f"{type(model).__name__} is not a Llama-family causal LM (model.embed_tokens/layers/norm/rotary_emb)"
            )
        self.model = model
        self.base = model.model
        num_layers = model.config.num_hidden_layers
        # A ShishuLM runs a share group's owner block once per layer of the group.
        self.owners = list(getattr(self.base, "weight_owners", range(num_layers)))
        layer_types = getattr(model.config, "layer_types", None) or [ATTENTION_LAYER] * num_layers
        # Sliding-window layers attend too; only ShishuLM's MLP-only layers have no attention.
        self.layer_types = [ATTENTION_LAYER if t in (ATTENTION_LAYER, "sliding_attention") else t for t in layer_types]
        self.num_layers = num_layers

    @property
    def attention_layers(self) -> list[int]:
        return [i for i in range(self.num_layers) if self.layer_types[i] == ATTENTION_LAYER]

    def attention(self, layer_idx: int):
        return (
            self.base.layers[self.owners[layer_idx]].self_attn
            if self.layer_types[layer_idx] == ATTENTION_LAYER
            else None
        )

    def prepare(self, input_ids: torch.Tensor):
        hidden = self.base.embed_tokens(input_ids)
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.model.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=None,
            position_ids=position_ids,
        )
        position_embeddings = self.base.rotary_emb(hidden, position_ids=position_ids)
        return hidden, dict(attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings)

    def layer(self, layer_idx: int, hidden: torch.Tensor, context: dict) -> torch.Tensor:
        output = self.base.layers[self.owners[layer_idx]](hidden, **context)
        return output[0] if isinstance(output, tuple) else output

    def loss_sum(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
        """Summed next-token cross entropy over the windows, and the number of predicted tokens."""
        logits = self.model.lm_head(self.base.norm(hidden[:, :-1])).float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), input_ids[:, 1:].flatten(), reduction="sum")
        return loss.item(), input_ids[:, 1:].numel()


@contextmanager
def attention_dropped(attention_modules):
    """Make the given attention modules output zeros: the residual stream passes through those layers."""

    def zero_output(module, args, output):
        return (torch.zeros_like(output[0]),) + tuple(output[1:])

    handles = [module.register_forward_hook(zero_output) for module in attention_modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
