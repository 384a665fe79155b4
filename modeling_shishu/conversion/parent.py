"""Llama-family parents: which architectures ShishuLM converts, and loading one without running its code."""

import torch

from ..configuration_shishu import ATTENTION_LAYER
from ..loading import read_config


# model_type -> class name; everything else is refused with its architecture named.
SUPPORTED_PARENTS = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def check_parent_type(model_type: str | None, architectures: list[str] | None = None) -> None:
    """Raise `ValueError` naming the architecture unless `model_type` is one ShishuLM converts."""
    if model_type not in SUPPORTED_PARENTS:
        named = f"{model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
        raise ValueError(
            f"parent architecture {named} is not Llama-family; ShishuLM converts "
            f"{', '.join(SUPPORTED_PARENTS.values())} checkpoints"
        )


def check_parent_config(config, model_class: str | None = None) -> None:
    """Raise `ValueError` naming the architecture unless `config` is a Llama-family decoder ShishuLM can
    be built from: Llama / SmolLM (`llama`), Mistral without a sliding window, Qwen2 without one."""
    model_type = getattr(config, "model_type", None)
    architectures = [model_class] if model_class else getattr(config, "architectures", None) or []
    check_parent_type(model_type, architectures)
    if model_type == "mistral":
        window = getattr(config, "sliding_window", None)
        if window is not None and window < config.max_position_embeddings:
            raise ValueError(
                f"parent is a Mistral with sliding-window attention (window {window} < context "
                f"{config.max_position_embeddings}); ShishuLM attention is full causal attention"
            )
    if model_type == "qwen2":
        layer_types = getattr(config, "layer_types", None) or []
        if getattr(config, "use_sliding_window", False) or any(t != ATTENTION_LAYER for t in layer_types):
            raise ValueError(
                "parent is a Qwen2 with sliding-window layers; ShishuLM attention is full causal attention"
            )
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
        raise ValueError(f"parent MLP activation {config.hidden_act!r} is not SwiGLU (silu)")


def load_parent(parent: str, dtype: str | torch.dtype = "auto", device: str = "cpu"):
    """Resolve `parent` (folder, offline name, Hub id), check its architecture, load model and tokenizer.

    Returns `(folder, model, tokenizer)`. The architecture is checked on the config, before any weights
    are read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..assets import fetch_parent

    try:
        folder = fetch_parent(parent)
    except RuntimeError as error:  # Hub unreachable, registry download failed, ...
        raise FileNotFoundError(f"parent {parent!r} is not available: {error}") from error
    # `fetch_parent` has checked the folder's files. A parent is always a built-in architecture, so no code from
    # the folder is ever run (trust_remote_code=False), whatever its config's auto_map says.
    raw = read_config(folder)
    check_parent_type(raw.get("model_type"), raw.get("architectures"))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    check_parent_config(config)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=False).to(device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"parent {folder} has no usable tokenizer ({error})") from error
    return folder, model, tokenizer
