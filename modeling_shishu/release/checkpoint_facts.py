"""What a checkpoint folder holds, read from its files: parameters (safetensors headers), layer layout, config
facts and the JSON records written next to the weights. Nothing here loads weights."""

import json
from pathlib import Path
from types import SimpleNamespace

from ..configuration_shishu import ATTENTION_LAYER, MLP_LAYER, SAVED_LAYOUT_KEY
from ..io_utils import sha256_file
from ..sizes import head_dim, kv_bytes_per_token, layer_types


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def count_parameters(folder: Path) -> int:
    """Unique parameters stored in the folder's safetensors files, read from their headers (no weights are
    loaded). A shared group and a tied LM head are stored once, so they count once."""
    from safetensors import safe_open

    index = read_json(folder / "model.safetensors.index.json")
    files = (
        sorted(set(index["weight_map"].values()))
        if index
        else [path.name for path in sorted(folder.glob("*.safetensors"))]
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors weights")
    total = 0
    for name in files:
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                count = 1
                for dim in handle.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def config_view(config: dict, **overrides) -> SimpleNamespace:
    """A config.json dict as the attribute object `modeling_shishu.sizes` reads (defaults as transformers')."""
    view = {"num_key_value_heads": config["num_attention_heads"], "head_dim": None, "layer_types": None}
    view.update({key: value for key, value in config.items() if value is not None})
    return SimpleNamespace(**{**view, **overrides})


def _layout_segments(types: list[str], share_groups: list[list[int]]) -> list[dict]:
    """Runs of layers of one kind: attention, MLP-only with own weights, or shared groups of one size."""
    owner_group = {group[0]: group for group in share_groups}
    in_group = {index for group in share_groups for index in group}
    segments, index = [], 0
    while index < len(types):
        if types[index] != MLP_LAYER:
            kind, members = "attention", [index]
        elif index in owner_group:
            kind, members = f"shared-{len(owner_group[index])}", owner_group[index]
        elif index in in_group:
            raise ValueError(f"layer {index} is in a share group that does not start with its owner")
        else:
            kind, members = "mlp", [index]
        if segments and segments[-1]["kind"] == kind:
            segments[-1]["members"].append(members)
        else:
            segments.append({"kind": kind, "members": [members]})
        index = members[-1] + 1
    return segments


def layout_rows(types: list[str], share_groups: list[list[int]]) -> list[dict]:
    """The layer layout as table rows: runs of attention layers, runs of shared MLP-only groups of one size
    (`20+21, 22+23`), runs of MLP-only layers with their own weights."""

    def span(members):
        flat = [i for group in members for i in group]
        return str(flat[0]) if len(flat) == 1 else f"{flat[0]}-{flat[-1]}"

    rows = []
    for segment in _layout_segments(types, share_groups):
        if segment["kind"] == "attention":
            row = {"layers": span(segment["members"]), "block": "decoder (attention + MLP)", "weights": "own"}
            rows.append({**row, "kv_cache": "yes"})
        elif segment["kind"] == "mlp":
            rows.append(
                {"layers": span(segment["members"]), "block": "MLP-only", "weights": "own", "kv_cache": "none"}
            )
        else:
            size = len(segment["members"][0])
            groups = ", ".join("+".join(map(str, group)) for group in segment["members"])
            weights = "one set per pair" if size == 2 else f"one set per group of {size}"
            rows.append({"layers": groups, "block": "MLP-only", "weights": weights, "kv_cache": "none"})
    return rows


def layer_counts(types: list[str], share_groups: list[list[int]]) -> dict:
    """Layer counts, and where the MLP-only blocks sit: on top of every attention layer or between them."""
    attention = sum(kind == ATTENTION_LAYER for kind in types)
    return {
        "total": len(types),
        "attention": attention,
        "mlp": len(types) - attention,
        "mlp_on_top": all(kind != ATTENTION_LAYER for kind in types[attention:]),
        "share_groups": len(share_groups),
        "shared": sum(len(group) for group in share_groups),
    }


def checkpoint_facts(folder: Path) -> dict:
    """What the card states about the checkpoint, computed from its config.json and safetensors headers."""
    config = read_json(folder / "config.json")
    if config is None:
        raise FileNotFoundError(f"{folder} holds no config.json: not a checkpoint folder")
    view = config_view(config)
    types = layer_types(view)
    share_groups = config.get("mlp_share_groups") or []
    rope = config.get("rope_parameters") or {}
    return {
        "config": config,
        "model_type": config.get("model_type"),
        "layer_types": types,
        "share_groups": share_groups,
        "layers": layer_counts(types, share_groups),
        "num_parameters": count_parameters(folder),
        "kv_bytes_per_token": kv_bytes_per_token(view),
        "architecture": {
            "hidden_size": config["hidden_size"],
            "intermediate_size": config["intermediate_size"],
            "num_attention_heads": view.num_attention_heads,
            "num_key_value_heads": view.num_key_value_heads,
            "head_dim": head_dim(view),
            "vocab_size": config["vocab_size"],
            "tie_word_embeddings": config.get("tie_word_embeddings", False),
            "rope_theta": rope.get("rope_theta", config.get("rope_theta")),
        },
        "conversion": read_json(folder / "conversion.json"),
        "training_summary": read_json(folder / "training_summary.json"),
        "training_config": read_json(folder / "training_config.json"),
        "weights_sha256": weights_sha256(folder),
    }


def weights_sha256(folder: Path) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in sorted(folder.glob("*.safetensors"))}


def parent_kv_bytes_per_token(config: dict, parent_layers: int) -> int:
    """The KV bytes per token of the all-attention parent the checkpoint was converted from."""
    # every parent layer attends: neither key of the ShishuLM's own layout applies
    view = config_view(config, num_hidden_layers=parent_layers, layer_types=None, **{SAVED_LAYOUT_KEY: None})
    return kv_bytes_per_token(view)


__all__ = ["checkpoint_facts", "count_parameters", "layout_rows", "parent_kv_bytes_per_token", "read_json"]
