"""Export a ShishuLM in NVIDIA's Nemotron-NAS (DeciLM) format, which the serving engines read natively.

    shishu export-nemotron-nas shishu-m10 --out shishu-m10-nemotron-nas
    vllm serve shishu-m10-nemotron-nas --trust-remote-code

    from modeling_shishu.conversion.export_nemotron_nas import export_nemotron_nas
    export_nemotron_nas("shishu-m10", "shishu-m10-nemotron-nas")

A Nemotron-NAS checkpoint is a Llama whose layers each carry a block config (`config.json: block_configs`).
An MLP-only ShishuLM block is a DeciLM layer whose attention is `no_op`: no attention weights, no KV cache,
`x + FFN(post_attention_layernorm(x))`. vLLM, SGLang, TensorRT-LLM, MLX-LM and llama.cpp's converter all
build no KV cache for such a layer, so the KV saving is kept. Tensor names are Llama's; a share group is
written once per layer (the format cannot alias tensors), so the file holds the parent's MLP count but not
its attention. `configuration_decilm.py` goes beside the weights for the readers that load the config with
`trust_remote_code` (vLLM, SGLang). What a reader cannot represent is refused (`check_representable`).
"""

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path

import torch

from .. import __version__
from ..configuration_shishu import ATTENTION_LAYER, ShishuConfig
from ..io_utils import atomic_directory, atomic_write_json, claim_output
from ..loading import check_checkpoint_folder, read_config
from . import configuration_decilm
from .configuration_decilm import ffn_mult_to_intermediate_size


ARCHITECTURE = "DeciLMForCausalLM"
MODEL_TYPE = "nemotron-nas"
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def ffn_mult_for(intermediate_size: int, hidden_size: int) -> float:
    """The `ffn_mult` from which the readers derive `intermediate_size` (SmolLM2-135M: 1536 / 576 -> 4.0)."""
    return round(3 * intermediate_size / (2 * hidden_size), 6)


# ------------------------------------------------------------------------------------------ checks


def check_representable(config: ShishuConfig) -> None:
    """`ValueError` (one line, naming the reader) for a layout the Nemotron-NAS readers cannot run as is."""
    if config.layer_types[0] != ATTENTION_LAYER:
        # vLLM and SGLang start the fused residual in the first attention sublayer; a no-op attention in
        # layer 0 hands their post-attention RMSNorm a `None` residual.
        raise ValueError("layer 0 is MLP-only: vLLM's and SGLang's DeciLM need an attention layer first")
    mult = ffn_mult_for(config.intermediate_size, config.hidden_size)
    if ffn_mult_to_intermediate_size(mult, config.hidden_size) != config.intermediate_size:
        raise ValueError(
            f"intermediate_size {config.intermediate_size}: DeciLM readers derive the MLP width from ffn_mult, "
            f"rounded up to a multiple of 256"
        )
    if config.head_dim * config.num_attention_heads != config.hidden_size:
        raise ValueError(
            f"head_dim {config.head_dim} x {config.num_attention_heads} heads != hidden_size {config.hidden_size}: "
            f"llama.cpp's converter and MLX-LM take head_dim = hidden_size / heads"
        )
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(f"{config.num_attention_heads} heads do not split into {config.num_key_value_heads} groups")
    if bool(config.attention_bias) != bool(config.attention_output_bias):
        raise ValueError("q/k/v and o_proj biases differ: DeciLM readers have one attention_bias switch")
    if config.mlp_bias:
        raise ValueError("mlp_bias: SGLang's DeciLM MLP has no bias")
    if config.hidden_act != "silu":
        raise ValueError(f"hidden_act {config.hidden_act!r}: llama.cpp's deci runs SiLU MLPs only")
    rope_type = (config.rope_parameters or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r}: only unscaled RoPE is exported")


# ------------------------------------------------------------------------------------------ layout


def block_configs(config: ShishuConfig) -> list[dict]:
    """One Nemotron-NAS block config per layer: GQA attention or `no_op`, and the parent's MLP."""
    group = config.num_attention_heads // config.num_key_value_heads
    mult = ffn_mult_for(config.intermediate_size, config.hidden_size)
    blocks = []
    for layer_type in config.layer_types:
        attention = (
            configuration_decilm.AttentionConfig(n_heads_in_group=group)
            if layer_type == ATTENTION_LAYER
            else configuration_decilm.AttentionConfig(no_op=True)
        )
        blocks.append(
            configuration_decilm.BlockConfig(attention, configuration_decilm.FFNConfig(ffn_mult=mult)).to_dict()
        )
    return blocks


def nemotron_nas_config(config: ShishuConfig, dtype: torch.dtype) -> dict:
    """config.json of the export. Like NVIDIA's checkpoints it has no `intermediate_size` or
    `num_key_value_heads`: both are per layer, in `block_configs`."""
    rope_theta = float(config.rope_parameters["rope_theta"])
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig"},
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "head_dim": config.head_dim,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "attention_bias": bool(config.attention_bias),
        "attention_dropout": config.attention_dropout,
        "mlp_bias": False,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "block_configs": block_configs(config),
    }


def nemotron_nas_tensors(model, progress=None) -> dict[str, torch.Tensor]:
    """DeciLM tensor name -> tensor. Layers of a share group get their own copy of the owner's tensors."""
    config = model.config
    tensors = {"model.embed_tokens.weight": model.model.embed_tokens.weight}
    for layer_idx, owner_idx in enumerate(config.weight_owners):
        block, prefix = model.model.layers[owner_idx], f"model.layers.{layer_idx}"
        named = dict(block.mlp.named_parameters(prefix="mlp"))
        named["post_attention_layernorm.weight"] = block.post_attention_layernorm.weight
        if config.layer_types[layer_idx] == ATTENTION_LAYER:
            named.update(block.self_attn.named_parameters(prefix="self_attn"))
            named["input_layernorm.weight"] = block.input_layernorm.weight
        for name, tensor in named.items():
            tensors[f"{prefix}.{name}"] = tensor
        if progress is not None:
            progress.update(1)
    tensors["model.norm.weight"] = model.model.norm.weight
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = model.lm_head.weight
    # safetensors refuses tensors that share memory: one contiguous copy each
    return {name: tensor.detach().contiguous().clone() for name, tensor in tensors.items()}


# ----------------------------------------------------------------------------------------- export


def _record_added_special_tokens(tokenizer, tokenizer_config: Path) -> None:
    """Write `add_bos_token` / `add_eos_token` as the tokenizer behaves: llama.cpp's converter reads them from
    tokenizer_config.json only, and tokenizers saved by transformers 5 often leave them out."""
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    plain, encoded = tokenizer("a", add_special_tokens=False).input_ids, tokenizer("a").input_ids
    added = len(encoded) > len(plain)
    settings.setdefault("add_bos_token", added and encoded[0] == tokenizer.bos_token_id)
    settings.setdefault("add_eos_token", added and encoded[-1] == tokenizer.eos_token_id)
    atomic_write_json(tokenizer_config, settings)


def _load(folder: Path, dtype: torch.dtype | None):
    """A ShishuLM from a ShishuLM folder, or the all-attention ShishuLM of a Llama-family folder."""
    from ..modeling_shishu import ShishuForCausalLM

    if read_config(folder).get("model_type") == ShishuConfig.model_type:
        check_representable(ShishuConfig.from_pretrained(folder))  # before reading any weights
        return ShishuForCausalLM.from_pretrained(folder, dtype=dtype or "auto").eval()
    from .convert import convert_model, load_parent

    _, parent, _ = load_parent(str(folder), dtype=dtype or torch.float32)
    model = convert_model(parent, num_mlp_layers=0).eval()
    check_representable(model.config)
    return model


def export_nemotron_nas(
    checkpoint: str | Path, out: str | Path, dtype: str = "auto", overwrite: bool = False, log=None
) -> dict:
    """Write `checkpoint` (a ShishuLM or Llama-family folder) to `out` as a Nemotron-NAS folder, atomically.

    Returns a summary: path, dtype, bytes, attention / no-op layers, duplicated share groups.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    log = log or (lambda message: None)
    folder, out = Path(checkpoint), Path(out)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    check_checkpoint_folder(folder)
    if read_config(folder).get("model_type") == ShishuConfig.model_type:
        check_representable(ShishuConfig.from_pretrained(folder))
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite / --overwrite to replace it)")
    with claim_output(out, overwrite=overwrite):
        log(f"loading {folder}")
        model = _load(folder, DTYPES[dtype])
        config = model.config
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        with tqdm(total=config.num_hidden_layers, desc="layers", unit="layer", disable=None) as progress:
            tensors = nemotron_nas_tensors(model, progress)
        weights_dtype = model.model.embed_tokens.weight.dtype
        with atomic_directory(out, overwrite=overwrite) as tmp:
            log(f"writing {len(tensors)} tensors to {out}")
            save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
            atomic_write_json(tmp / "config.json", nemotron_nas_config(config, weights_dtype))
            shutil.copyfile(configuration_decilm.__file__, tmp / "configuration_decilm.py")
            tokenizer.save_pretrained(tmp)
            _record_added_special_tokens(tokenizer, tmp / "tokenizer_config.json")
            model.generation_config.save_pretrained(tmp)
            atomic_write_json(
                tmp / "export.json",
                {
                    "shishu_version": __version__,
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "source": str(folder),
                    "format": f"{MODEL_TYPE} ({ARCHITECTURE})",
                    "no_op_attention_layers": config.mlp_layer_indices,
                    "duplicated_share_groups": config.mlp_share_groups,
                },
            )
    summary = {
        "path": str(out),
        "dtype": str(weights_dtype).removeprefix("torch."),
        "bytes": (out / "model.safetensors").stat().st_size,
        "tensors": len(tensors),
        "attention_layers": config.attention_layer_indices,
        "no_op_attention_layers": config.mlp_layer_indices,
        "duplicated_share_groups": config.mlp_share_groups,
    }
    log(f"done: {out} ({summary['bytes'] / 2**20:,.1f} MiB)")
    return summary


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a ShishuLM (or Llama-family) checkpoint folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="the Nemotron-NAS folder to write")
    parser.add_argument(
        "--dtype", default="auto", choices=list(DTYPES), help="weight dtype (default: the checkpoint's own)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f"shishu export-nemotron-nas: {message}", file=sys.stderr, flush=True)

    summary = export_nemotron_nas(args.checkpoint, args.out, dtype=args.dtype, overwrite=args.overwrite, log=log)
    print(
        f"{summary['path']}: {ARCHITECTURE} ({MODEL_TYPE}, {summary['dtype']}), {summary['tensors']} tensors, "
        f"{summary['bytes']:,} bytes; {len(summary['attention_layers'])} attention layers, "
        f"{len(summary['no_op_attention_layers'])} with no-op attention (no KV cache)"
    )
    return 0


__all__ = [
    "block_configs",
    "check_representable",
    "export_nemotron_nas",
    "ffn_mult_for",
    "nemotron_nas_config",
    "nemotron_nas_tensors",
]
