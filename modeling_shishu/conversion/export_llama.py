"""Export a ShishuLM as a plain `LlamaForCausalLM` checkpoint that computes the same function.

    shishu export-llama shishu-m10 --out shishu-m10-llama

    from modeling_shishu.conversion.export_llama import export_llama
    export_llama("shishu-m10", "shishu-m10-llama")

An MLP-only layer becomes a Llama layer whose attention contributes exactly zero (q/k/v/o all zeros,
`input_layernorm` ones); a share group is duplicated; a Qwen2-derived model gets a zero o_proj bias. Portability
costs the savings: the export has the parent's parameters, KV cache and speed (docs/model_family.md, "Export to
plain Llama"). `export.json` records the source and the measured logit difference.
"""

import argparse
import datetime
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from .. import __version__
from ..configuration_shishu import ATTENTION_LAYER, ShishuConfig
from ..io_utils import atomic_directory, atomic_write_json, claim_output
from ..loading import check_checkpoint_folder, read_config
from ..modeling_shishu import ShishuForCausalLM


# The exported logits must match the ShishuLM's to this absolute tolerance in float32 (the same math,
# only summation order can differ).
FLOAT32_TOLERANCE = 1e-4


def llama_config_from_shishu(config: ShishuConfig) -> LlamaConfig:
    has_qkv_bias, has_o_bias = config.attention_bias, config.attention_output_bias
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        initializer_range=config.initializer_range,
        rms_norm_eps=config.rms_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
        rope_parameters=dict(config.rope_parameters),
        # Llama has one switch for all four projections; a missing bias is exported as a zero bias.
        attention_bias=bool(has_qkv_bias or has_o_bias),
        attention_dropout=config.attention_dropout,
        mlp_bias=config.mlp_bias,
    )


def shishu_to_llama(model: ShishuForCausalLM) -> LlamaForCausalLM:
    """The plain-Llama equivalent of a loaded ShishuLM (same dtype and device)."""
    config = model.config
    llama_config = llama_config_from_shishu(config)
    llama_config._attn_implementation = config._attn_implementation
    dtype = model.model.embed_tokens.weight.dtype
    llama = LlamaForCausalLM._from_config(llama_config, dtype=dtype).to(model.device)
    with torch.no_grad():
        llama.model.embed_tokens.load_state_dict(model.model.embed_tokens.state_dict())
        llama.model.norm.load_state_dict(model.model.norm.state_dict())
        if not config.tie_word_embeddings:
            llama.lm_head.load_state_dict(model.lm_head.state_dict())
        for layer_idx, owner_idx in enumerate(config.weight_owners):
            source, target = model.model.layers[owner_idx], llama.model.layers[layer_idx]
            target.mlp.load_state_dict(source.mlp.state_dict())
            target.post_attention_layernorm.load_state_dict(source.post_attention_layernorm.state_dict())
            if config.layer_types[layer_idx] == ATTENTION_LAYER:
                target.input_layernorm.load_state_dict(source.input_layernorm.state_dict())
                target_attention, source_attention = target.self_attn, source.self_attn
                for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                    target_proj, source_proj = getattr(target_attention, name), getattr(source_attention, name)
                    target_proj.weight.copy_(source_proj.weight)
                    if target_proj.bias is not None:
                        target_proj.bias.copy_(source_proj.bias if source_proj.bias is not None else 0.0)
            else:
                # Attention that contributes exactly zero (see the module docstring).
                for parameter in target.self_attn.parameters():
                    parameter.zero_()
                target.input_layernorm.weight.fill_(1.0)
    llama.generation_config = model.generation_config
    return llama.eval()


@torch.no_grad()
def max_logit_difference(model_a, model_b, vocab_size: int, length: int = 48, seed: int = 0) -> float:
    """Max absolute difference of the two models' float32 logits on a fixed random token sequence."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (2, length), generator=generator).to(model_a.device)
    return (model_a(input_ids).logits.float() - model_b(input_ids).logits.float()).abs().max().item()


def export_llama(shishu_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the plain `LlamaForCausalLM` equivalent of the ShishuLM in `shishu_dir` to `out_dir`, atomically.

    The ShishuLM is loaded with this package's own classes (no remote code is executed). The export is
    checked before it is written: its logits must match the ShishuLM's within float32 noise
    (`FLOAT32_TOLERANCE`, compared in float32 whatever the checkpoint dtype).
    """
    shishu_dir, out_dir = Path(shishu_dir), Path(out_dir)
    check_checkpoint_folder(shishu_dir)
    model_type = read_config(shishu_dir).get("model_type")
    if model_type != ShishuConfig.model_type:
        raise ValueError(f"{shishu_dir} holds a {model_type!r} model, not a ShishuLM ('shishu'): nothing to export")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (pass overwrite / --overwrite to replace it)")
    with claim_output(out_dir, overwrite=overwrite):
        return _export_llama(shishu_dir, out_dir, overwrite)


def _export_llama(shishu_dir: Path, out_dir: Path, overwrite: bool) -> Path:
    model = ShishuForCausalLM.from_pretrained(shishu_dir, dtype="auto").eval()
    dtype = model.dtype
    llama = shishu_to_llama(model)
    # Check in float32: a bf16 checkpoint's own rounding noise would otherwise hide a mapping error.
    difference = max_logit_difference(model.float(), llama.float(), model.config.vocab_size)
    if difference > FLOAT32_TOLERANCE:
        raise RuntimeError(
            f"exported Llama logits differ from the ShishuLM by {difference:.3g} (> {FLOAT32_TOLERANCE})"
        )
    llama = llama.to(dtype)
    tokenizer = AutoTokenizer.from_pretrained(shishu_dir, trust_remote_code=False)

    config = model.config
    record = {
        "shishu_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": str(shishu_dir),
        "mlp_only_layers_with_zero_attention": config.mlp_layer_indices,
        "duplicated_share_groups": config.mlp_share_groups,
        "max_abs_logit_difference_float32": difference,
        "parameters": {"shishu": model.num_parameters(), "llama": llama.num_parameters()},
        "dtype": str(dtype).removeprefix("torch."),
        "note": "MLP-only layers still compute (zero) attention and hold a KV cache in a Llama runtime",
    }
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        llama.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "export.json", record)
    return out_dir


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shishu_dir", metavar="DIR", help="a ShishuLM checkpoint folder")
    parser.add_argument("--out", required=True, help="output folder for the LlamaForCausalLM checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    out = export_llama(args.shishu_dir, args.out, overwrite=args.overwrite)
    record = json.loads((out / "export.json").read_text(encoding="utf-8"))
    print(
        f"{out}: LlamaForCausalLM, {record['parameters']['llama']:,} parameters "
        f"(ShishuLM: {record['parameters']['shishu']:,}); zero-attention layers "
        f"{record['mlp_only_layers_with_zero_attention']}; max |logit difference| "
        f"{record['max_abs_logit_difference_float32']:.2e}"
    )
    return 0


__all__ = ["export_llama", "llama_config_from_shishu", "shishu_to_llama"]
