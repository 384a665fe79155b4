"""The models under test: loading the pair (or random weights from their configs), the ShishuLM derived from
the baseline's config, the all-attention ShishuLM on the baseline's weights, and the prompts they share."""

import dataclasses

import torch

from ..configuration_shishu import ATTENTION_LAYER, MLP_LAYER
from ..sizes import layer_types, unique_parameters
from .settings import BenchSettings


# Roles of the models in one run, in the order they are reported.
SHISHU, BASELINE, ALL_ATTENTION = "shishu", "baseline", "shishu_all_attention"


@dataclasses.dataclass
class BenchModel:
    """One model under test."""

    role: str
    label: str
    source: str
    model: torch.nn.Module
    compiled_forward: object = None

    def describe(self) -> dict:
        config = self.model.config
        count, nbytes = unique_parameters(self.model)
        types = layer_types(config)
        return {
            "label": self.label,
            "source": self.source,
            "class": f"{type(self.model).__module__}.{type(self.model).__name__}",
            "model_type": config.model_type,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "num_hidden_layers": config.num_hidden_layers,
            "attention_layers": sum(t == ATTENTION_LAYER for t in types),
            "mlp_layers": sum(t == MLP_LAYER for t in types),
            "mlp_share_groups": list(getattr(config, "mlp_share_groups", None) or []),
            "unique_parameters": count,
            "weight_bytes": nbytes,
        }


def load_model(name_or_path, settings: BenchSettings) -> torch.nn.Module:
    """Load a checkpoint folder, offline parent name or Hub id (with `random_init`: its config, with random
    weights). ShishuLM checkpoints are loaded with this package's implementation (the code being measured), not
    with the copy of the remote code inside the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..configuration_shishu import ShishuConfig
    from ..loading import remote_code_consent, resolve_checkpoint
    from ..modeling_shishu import ShishuForCausalLM

    source = resolve_checkpoint(str(name_or_path), settings.trust_remote_code)
    with remote_code_consent(source):
        config = AutoConfig.from_pretrained(source, trust_remote_code=settings.trust_remote_code)
        if settings.random_init:
            shishu = config.model_type == "shishu"
            return random_model(ShishuConfig.from_pretrained(source) if shishu else config, settings)
        kwargs = dict(dtype=getattr(torch, settings.dtype), attn_implementation=settings.attn_implementation)
        if config.model_type == "shishu":
            model = ShishuForCausalLM.from_pretrained(source, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, trust_remote_code=settings.trust_remote_code, **kwargs
            )
    return model.to(settings.device).eval()


def random_model(config, settings: BenchSettings) -> torch.nn.Module:
    """The causal LM of `config` with seeded random weights (the model's own initialisation), on the device."""
    from transformers import AutoModelForCausalLM

    from ..modeling_shishu import ShishuForCausalLM

    kwargs = dict(dtype=getattr(torch, settings.dtype), attn_implementation=settings.attn_implementation)
    torch.manual_seed(settings.seed)
    with torch.device(settings.device):
        if config.model_type == "shishu":
            model = ShishuForCausalLM._from_config(config, **kwargs)
        else:
            model = AutoModelForCausalLM.from_config(config, **kwargs)
    return model.eval()


def derived_shishu_config(baseline_config, settings: BenchSettings):
    """The ShishuLM layout `settings.mlp_layers` / `settings.share` applied to the baseline's config."""
    from ..configuration_shishu import ShishuConfig

    return ShishuConfig.from_llama_config(baseline_config, mlp_layers=settings.mlp_layers, share=settings.share)


def all_attention_twin(baseline: torch.nn.Module, settings: BenchSettings) -> tuple[torch.nn.Module, float]:
    """The baseline's weights in an all-attention ShishuLM (the same function), and the largest absolute logit
    difference between the two on a short random input."""
    from ..configuration_shishu import ShishuConfig
    from ..modeling_shishu import ShishuForCausalLM

    config = ShishuConfig.from_llama_config(baseline.config, num_mlp_layers=0)
    config._attn_implementation = baseline.config._attn_implementation
    twin = ShishuForCausalLM(config).to(device=baseline.device, dtype=baseline.dtype)
    missing, unexpected = twin.load_state_dict(baseline.state_dict(), strict=False)
    # A tied LM head is the embedding tensor itself, so it is not in the state dict.
    if unexpected or (set(missing) - {"lm_head.weight"}):
        raise ValueError(
            f"the baseline's weights do not fit an all-attention ShishuLM: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    twin.eval()
    generator = torch.Generator().manual_seed(settings.seed)
    ids = torch.randint(0, config.vocab_size, (1, 16), generator=generator).to(baseline.device)
    with torch.inference_mode():
        difference = (twin(ids).logits.float() - baseline(ids).logits.float()).abs().max().item()
    return twin, difference


def load_models(model: str | None, baseline: str, settings: BenchSettings, log) -> tuple[list[BenchModel], float]:
    """The ShishuLM, the baseline and (with `overhead_check`, for a baseline that is not a ShishuLM) the
    all-attention ShishuLM on the baseline's weights; and that twin's max logit difference (None without it).
    `model` is None when the ShishuLM is derived from the baseline's config (`settings.mlp_layers`)."""
    parent = BenchModel(BASELINE, "baseline", str(baseline), load_model(baseline, settings))
    if model is None:
        layers = ",".join(map(str, settings.mlp_layers))
        layout = f"{baseline} config, layers {layers} MLP-only, share {settings.share}"
        derived = random_model(derived_shishu_config(parent.model.config, settings), settings)
        shishu = BenchModel(SHISHU, "ShishuLM", layout, derived)
    else:
        shishu = BenchModel(SHISHU, "ShishuLM", str(model), load_model(model, settings))
    if settings.random_init:
        log(f"random weights (seed {settings.seed}): {shishu.source} vs {parent.source}")
    if shishu.model.config.model_type != "shishu":
        raise ValueError(
            f"--model must be a ShishuLM checkpoint; {model} has model_type {shishu.model.config.model_type!r}"
        )
    models = [shishu, parent]
    twin_difference = None
    if settings.overhead_check and parent.model.config.model_type != "shishu":
        twin, twin_difference = all_attention_twin(parent.model, settings)
        models.append(BenchModel(ALL_ATTENTION, "ShishuLM(all attention)", f"{baseline} weights", twin))
        log(f"all-attention ShishuLM on the baseline's weights: max |logit difference| {twin_difference:.2e}")
    return models, twin_difference


def prompt_ids(models: list[BenchModel], batch: int, length: int, seed: int) -> torch.Tensor:
    """Seeded random token ids that every model's vocabulary holds, on the models' device."""
    vocab = min(m.model.config.vocab_size for m in models)
    generator = torch.Generator().manual_seed(seed + 7919 * batch + length)
    return torch.randint(0, vocab, (batch, length), generator=generator).to(models[0].model.device)
