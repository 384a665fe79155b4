"""Export a ShishuLM to GGUF for llama.cpp, with its MLP-only layers attention-free.

    shishu export-gguf shishu-m10 --out shishu-m10.gguf --dtype f16

    from modeling_shishu.conversion.export_gguf import export_gguf
    export_gguf("shishu-m10", "shishu-m10.gguf", dtype="f16")

The file uses llama.cpp's `deci` architecture, whose layers may have 0 attention heads: such a layer has no
attention tensors and no KV cache and computes `x + FFN(RMSNorm(x))`, exactly an MLP-only block. A share group is
stored once per layer (GGUF cannot alias tensors). Q/K rows are permuted to llama.cpp's interleaved RoPE; the
byte-level BPE tokenizer is written as llama.cpp's converter writes it. What `deci` cannot run is refused with
the layer and the reason (`check_exportable`). Tensor mapping and caveats: docs/model_family.md ("Export to
llama.cpp"); run the file with flash attention on.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..configuration_shishu import ATTENTION_LAYER, ShishuConfig
from ..io_utils import atomic_file, claim_output
from ..loading import check_checkpoint_folder, read_config


GGUF_ARCH = "deci"

# --dtype -> (type of 2-D weight tensors, the file type recorded in the header)
DTYPES = ("f32", "f16", "bf16", "q8_0")

# --quant -> llama.cpp's file type (`llama_ftype`), quantized by llama.cpp itself (through llama-cpp-python)
QUANTS = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def _gguf_types(dtype: str):
    import gguf

    types = {
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    }
    if dtype not in types:
        raise ValueError(f"unknown GGUF dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return types[dtype]


# ------------------------------------------------------------------------------------------ checks


def check_exportable(config: ShishuConfig) -> None:
    """Raise `ValueError` naming the layer and the reason if llama.cpp's `deci` cannot run `config`."""
    if config.hidden_act != "silu":
        raise ValueError(f"hidden_act {config.hidden_act!r}: llama.cpp's deci runs SwiGLU MLPs with SiLU only")
    rope_type = (config.rope_parameters or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r}: only unscaled RoPE is exported")
    if config.layer_types[0] != ATTENTION_LAYER:
        # llama.cpp sizes the heads of every layer from layer 0's head count; 0 there means no attention
        # anywhere in the model.
        raise ValueError(
            "layer 0 is MLP-only: llama.cpp's deci reads the head size of all layers from layer 0, so layer 0 "
            "must be an attention layer"
        )


# -------------------------------------------------------------------------------------- tokenizer


def _is_byte_level(step: dict, use_regex: bool) -> bool:
    return (
        step.get("type") == "ByteLevel"
        and bool(step.get("use_regex", True)) == use_regex
        and not step.get("add_prefix_space", False)
    )


def _is_digits(step: dict) -> bool:
    return step.get("type") == "Digits" and step.get("individual_digits") is True


_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _is_qwen2_split(step: dict) -> bool:
    return step.get("type") == "Split" and (step.get("pattern") or {}).get("Regex") == _QWEN2_SPLIT


# llama.cpp's name for a pre-tokenizer -> the shape of tokenizer.json's `pre_tokenizer` it implements.
PRE_TOKENIZERS = {
    "gpt-2": [lambda s: _is_byte_level(s, use_regex=True)],
    "smollm": [_is_digits, lambda s: _is_byte_level(s, use_regex=True)],
    "qwen2": [_is_qwen2_split, lambda s: _is_byte_level(s, use_regex=False)],
}


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE `tokenizer.json`, or `ValueError`."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    for name, shape in PRE_TOKENIZERS.items():
        if len(steps) == len(shape) and all(match(step) for match, step in zip(shape, steps)):
            return name
    described = " + ".join(step.get("type", "?") for step in steps) or "none"
    raise ValueError(
        f"tokenizer: pre-tokenizer {described} is not one llama.cpp implements under a known name "
        f"({', '.join(PRE_TOKENIZERS)})"
    )


def tokenizer_metadata(folder: Path, vocab_size: int):
    """`(tokens, token_types, pre, special_vocab)` of `folder`'s tokenizer, as llama.cpp's converter builds
    them for a byte-level BPE: ids the tokenizer does not use become `[PAD<id>]` (unused) up to the
    embedding size, added special tokens are control tokens, other added tokens user-defined;
    `special_vocab` (a `gguf.SpecialVocab`) holds the merges, special ids, chat template and whether a
    BOS / EOS token is added to a prompt."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ValueError(f"tokenizer: {folder} has no tokenizer.json (a byte-level BPE tokenizer is needed)")
    tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise ValueError(
            f"tokenizer: a {model.get('type')} model with a {decoder.get('type')} decoder; only byte-level BPE "
            f"tokenizers (GPT-2 style) are exported"
        )
    pre = pre_tokenizer_name(tokenizer_json)

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(f"tokenizer: token id {max(vocab.values())} does not fit the {vocab_size} embedding rows")
    reverse = {index: token for token, index in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(added[index].content)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[index])
            types.append(gguf.TokenType.NORMAL)

    special_vocab = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # llama.cpp must add to a prompt what the tokenizer adds; tokenizer_config.json often leaves
    # add_bos_token / add_eos_token out, so read it off the tokenizer itself.
    plain, encoded = tokenizer("a", add_special_tokens=False).input_ids, tokenizer("a").input_ids
    added = len(encoded) > len(plain)
    special_vocab.add_special_token["bos"] = added and encoded[0] == tokenizer.bos_token_id
    special_vocab.add_special_token["eos"] = added and encoded[-1] == tokenizer.eos_token_id
    return tokens, types, pre, special_vocab


# ---------------------------------------------------------------------------------------- tensors


def permute_for_rope(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder each head's rows (or bias values) from rotate-half RoPE (value i pairs with i + d/2) to
    interleaved pairs (2i with 2i + 1), which is what llama.cpp's "normal" RoPE rotates."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def layer_tensors(model, layer_idx: int) -> dict[str, torch.Tensor]:
    """GGUF tensor name suffix (`attn_q.weight`, ...) -> tensor, for one layer; a layer of a share group
    gets its owner's tensors."""
    config = model.config
    block = model.model.layers[config.weight_owners[layer_idx]]
    tensors = {}
    if config.layer_types[layer_idx] == ATTENTION_LAYER:
        attention = block.self_attn
        tensors["attn_norm.weight"] = block.input_layernorm.weight
        for name, proj, heads in [
            ("attn_q", attention.q_proj, config.num_attention_heads),
            ("attn_k", attention.k_proj, config.num_key_value_heads),
            ("attn_v", attention.v_proj, None),
            ("attn_output", attention.o_proj, None),
        ]:
            for kind in ("weight", "bias"):
                tensor = getattr(proj, kind)
                if tensor is not None:
                    tensors[f"{name}.{kind}"] = permute_for_rope(tensor, heads) if heads else tensor
    tensors["ffn_norm.weight"] = block.post_attention_layernorm.weight
    for name, proj in [
        ("ffn_gate", block.mlp.gate_proj),
        ("ffn_up", block.mlp.up_proj),
        ("ffn_down", block.mlp.down_proj),
    ]:
        tensors[f"{name}.weight"] = proj.weight
        if proj.bias is not None:
            tensors[f"{name}.bias"] = proj.bias
    return tensors


def _encode(name: str, tensor: torch.Tensor, qtype) -> tuple[np.ndarray, object]:
    """The array to write and its GGML type: matrices in `qtype`, vectors in float32."""
    import gguf

    data = tensor.detach().to(torch.float32).cpu().numpy()
    if data.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32:
        return data, gguf.GGMLQuantizationType.F32
    try:
        with np.errstate(over="ignore"):  # an overflow is refused below, with the tensor's name
            data, qtype = gguf.quants.quantize(data, qtype), qtype
    except gguf.quants.QuantError:  # rows that do not split into blocks (q8_0: 32 values)
        with np.errstate(over="ignore"):
            data, qtype = gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.F16 and not np.isfinite(data).all():  # numpy rounds past 65504 to inf
        largest = float(tensor.detach().abs().max())
        raise ValueError(
            f"{name}: a value of magnitude {largest:.4g} overflows f16 (max 65504); use --dtype bf16 or f32"
        )
    return data, qtype


# ----------------------------------------------------------------------------------------- export


def load_for_export(checkpoint: str | Path):
    """A float32 ShishuLM from a ShishuLM folder, or the all-attention ShishuLM of a Llama-family folder;
    `ValueError` if llama.cpp's deci cannot run it."""
    folder = Path(checkpoint)
    check_checkpoint_folder(folder)
    model_type = read_config(folder).get("model_type")
    from ..modeling_shishu import ShishuForCausalLM

    if model_type == ShishuConfig.model_type:
        check_exportable(ShishuConfig.from_pretrained(folder))  # before reading any weights
        return ShishuForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    from .convert import convert_model, load_parent

    _, parent, _ = load_parent(str(folder), dtype=torch.float32)
    model = convert_model(parent, num_mlp_layers=0).eval()
    check_exportable(model.config)
    return model


def export_gguf(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "f32",
    overwrite: bool = False,
    name: str | None = None,
    log=None,
) -> dict:
    """Write `checkpoint` (a ShishuLM or Llama-family folder) to the GGUF file `out`, atomically.

    Returns a summary: path, dtype, bytes, tensor count, per-layer head counts. `log` receives progress lines.
    """
    log = log or (lambda message: None)
    folder, out = Path(checkpoint), Path(out)
    qtype, file_type = _gguf_types(dtype)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite / --overwrite to replace it)")
    if out.is_dir():
        raise ValueError(f"{out} is a directory; give a .gguf file path")
    with claim_output(out, overwrite=overwrite):
        return _write_gguf(folder, out, dtype, qtype, file_type, name, log)


def _write_gguf(folder: Path, out: Path, dtype: str, qtype, file_type, name: str | None, log) -> dict:
    import gguf

    started = time.perf_counter()
    log(f"loading {folder}")
    model = load_for_export(folder)
    config = model.config
    tokenizer = tokenizer_metadata(folder, config.vocab_size)  # refused here, before any file is written
    attention = [layer_type == ATTENTION_LAYER for layer_type in config.layer_types]
    head_count = [config.num_attention_heads if a else 0 for a in attention]
    head_count_kv = [config.num_key_value_heads if a else 0 for a in attention]

    with atomic_file(out) as tmp:
        writer = gguf.GGUFWriter(tmp, arch=GGUF_ARCH)
        writer.add_name(name or folder.resolve().name)
        writer.add_file_type(file_type)
        _add_hyperparameters(writer, config, head_count, head_count_kv)
        _add_tokenizer(writer, *tokenizer, log)
        _add_tensors(writer, model, qtype, head_count, head_count_kv, log)
        num_tensors = sum(len(shard) for shard in writer.tensors)
        data_bytes = sum(info.nbytes for shard in writer.tensors for info in shard.values())
        log(f"writing {num_tensors} tensors ({data_bytes / 2**20:,.1f} MiB, {dtype}) to {out}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=sys.stderr.isatty())
        writer.close()

    summary = {
        "path": str(out),
        "architecture": GGUF_ARCH,
        "dtype": dtype,
        "bytes": out.stat().st_size,
        "tensors": num_tensors,
        "head_count": head_count,
        "head_count_kv": head_count_kv,
        "duplicated_share_groups": config.mlp_share_groups,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log(f"done in {summary['seconds']:.0f} s: {out} ({summary['bytes'] / 2**20:,.1f} MiB)")
    return summary


def _add_hyperparameters(writer, config: ShishuConfig, head_count: list[int], head_count_kv: list[int]) -> None:
    import gguf

    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(head_count)
    writer.add_head_count_kv(head_count_kv)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _add_tokenizer(writer, tokens, token_types, pre: str, special_vocab, log) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    special_vocab.add_to_gguf(writer, quiet=True)
    log(f"tokenizer: {len(tokens):,} tokens, {len(special_vocab.merges):,} merges, pre-tokenizer {pre!r}")


def _add_tensors(writer, model, qtype, head_count: list[int], head_count_kv: list[int], log) -> None:
    config = model.config
    encoded = {}

    def add(tensor_name: str, tensor: torch.Tensor, source: tuple) -> None:
        # One encoding per source tensor: the layers of a share group write the owner's array again.
        if source not in encoded:
            encoded[source] = _encode(tensor_name, tensor, qtype)
        data, data_type = encoded[source]
        writer.add_tensor(tensor_name, data, raw_dtype=data_type)

    from tqdm.auto import tqdm

    add("token_embd.weight", model.model.embed_tokens.weight, ("token_embd",))
    layers = tqdm(list(enumerate(config.weight_owners)), desc="encoding layers", unit="layer", disable=None)
    for layer_idx, owner_idx in layers:
        tensors = layer_tensors(model, layer_idx)
        for suffix, tensor in tensors.items():
            add(f"blk.{layer_idx}.{suffix}", tensor, (owner_idx, suffix))
        if head_count[layer_idx]:
            what = f"attention, {head_count[layer_idx]} heads / {head_count_kv[layer_idx]} KV heads"
        elif owner_idx != layer_idx:
            what = f"MLP-only, 0 heads, a copy of layer {owner_idx}'s weights"
        else:
            what = "MLP-only, 0 heads"
        log(f"layer {layer_idx + 1}/{config.num_hidden_layers}: {what} ({len(tensors)} tensors)")
    add("output_norm.weight", model.model.norm.weight, ("output_norm",))
    if not config.tie_word_embeddings:
        add("output.weight", model.lm_head.weight, ("output",))


# ------------------------------------------------------------------------------------ quantization


def quantize_gguf(source: str | Path, out: str | Path, quant: str, overwrite: bool = False, log=None) -> dict:
    """Quantize the GGUF file `source` (f32 / f16 / bf16) into `out` with llama.cpp's own quantizer, atomically.

    The token embedding is kept at Q8_0: with tied embeddings it is also the output layer, and at 4 bits it
    costs far more than the rest of the model (llama.cpp would otherwise pick Q6_K for it). Matrices whose rows
    do not split into K-quant blocks of 256 (SmolLM2's 576-wide inputs) get llama.cpp's own fallback types.
    Needs llama-cpp-python (`pip install "shishu[llamacpp]"`).
    """
    log = log or (lambda message: None)
    source, out = Path(source), Path(out)
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; choose from {', '.join(QUANTS)}")
    if not source.is_file():
        raise FileNotFoundError(f"no such GGUF file: {source}")
    try:
        import llama_cpp
    except ImportError:
        raise ValueError("--quant needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'") from None
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite / --overwrite to replace it)")
    started = time.perf_counter()
    with claim_output(out, overwrite=overwrite), atomic_file(out) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, QUANTS[quant])
        params.token_embedding_type = llama_cpp.GGML_TYPE_Q8_0
        params.nthread = os.cpu_count() or 1
        log(f"quantizing {source} to {quant} with llama.cpp")
        with _quiet_stderr():  # llama.cpp prints a line per tensor; tqdm cannot see inside the C call
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if status != 0:
            raise RuntimeError(f"llama.cpp could not quantize {source} to {quant} (status {status})")
    summary = {
        "path": str(out),
        "quant": quant,
        "source": str(source),
        "bytes": out.stat().st_size,
        "source_bytes": source.stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log(f"done in {summary['seconds']:.0f} s: {out} ({summary['bytes'] / 2**20:,.1f} MiB)")
    return summary


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C code writes there directly) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quantized_path(gguf_path: str | Path, quant: str) -> Path:
    """Where the quantized file sits beside `gguf_path`: `shishu-m10.gguf` -> `shishu-m10-q8_0.gguf`."""
    path = Path(gguf_path)
    return path.with_name(f"{path.stem}-{quant}{path.suffix}")


def write_quantized_beside(gguf_path: str | Path, quant: str = "q8_0", log=None) -> Path | None:
    """Write the `quant` file beside an f16 / f32 GGUF (replacing an older one); `None` without llama-cpp-python."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    out = quantized_path(gguf_path, quant)
    quantize_gguf(gguf_path, out, quant, overwrite=True, log=log)
    return out


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a ShishuLM (or Llama-family) checkpoint folder; with --quant also an f32 / f16 / bf16 GGUF file",
    )
    parser.add_argument("--out", required=True, metavar="FILE.gguf", help="the GGUF file to write")
    parser.add_argument(
        "--dtype", default="f32", choices=DTYPES, help="type of the weight matrices (default f32; norms stay f32)"
    )
    parser.add_argument(
        "--quant",
        choices=list(QUANTS),
        help="quantize with llama.cpp's own quantizer (needs llama-cpp-python); the token embedding stays Q8_0",
    )
    parser.add_argument("--name", help="general.name in the GGUF (default: the checkpoint folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    def log(message: str) -> None:
        print(f"shishu export-gguf: {message}", file=sys.stderr, flush=True)

    if args.quant:
        return _run_quantized(args, log)
    summary = export_gguf(
        args.checkpoint, args.out, dtype=args.dtype, overwrite=args.overwrite, name=args.name, log=log
    )
    attention = sum(1 for heads in summary["head_count"] if heads)
    print(
        f"{summary['path']}: GGUF ({summary['architecture']}, {summary['dtype']}), {summary['tensors']} tensors, "
        f"{summary['bytes']:,} bytes; {attention} attention layers, "
        f"{len(summary['head_count']) - attention} MLP-only layers without attention or KV cache"
    )
    return 0


def _run_quantized(args: argparse.Namespace, log) -> int:
    """`--quant`: a GGUF file is quantized as it is; a checkpoint folder is exported at f32 first (a temporary
    file beside --out), so that llama.cpp quantizes the unrounded weights."""
    out, source = Path(args.out), Path(args.checkpoint)
    if importlib.util.find_spec("llama_cpp") is None:
        raise ValueError("--quant needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    if source.is_file():
        summary = quantize_gguf(source, out, args.quant, overwrite=args.overwrite, log=log)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.stem}.f32-", dir=out.parent) as folder:
            f32 = export_gguf(
                source, Path(folder) / "f32.gguf", dtype="f32", name=args.name or source.resolve().name, log=log
            )
            summary = quantize_gguf(f32["path"], out, args.quant, overwrite=args.overwrite, log=log)
    print(f"{summary['path']}: GGUF ({args.quant}, llama.cpp's quantizer), {summary['bytes']:,} bytes")
    return 0


__all__ = [
    "check_exportable",
    "export_gguf",
    "permute_for_rope",
    "pre_tokenizer_name",
    "quantize_gguf",
    "quantized_path",
    "tokenizer_metadata",
    "write_quantized_beside",
]
