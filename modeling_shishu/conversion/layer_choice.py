"""Which parent layers become MLP-only: the top K, explicit indices, or the layer analysis' recommendation
(run now, or read from a `shishu analyze` output), with the `layer_selection` record that says why."""

import json
import logging
from pathlib import Path

from .analysis_result import LayerAnalysis


logger = logging.getLogger(__name__)


def resolve_layer_choice(
    num_mlp_layers: int, mlp_layers, num_parent_layers: int
) -> tuple[int, list[int] | str | None]:
    """Normalise (K, layers): layers may be None (top K), "auto" (analysis picks K layers) or indices."""
    if mlp_layers is None or mlp_layers == "auto":
        if mlp_layers == "auto" and num_mlp_layers <= 0:
            raise ValueError(
                "layers 'auto' needs the number of layers to convert (num_mlp_layers / --mlp-layers K > 0)"
            )
        return num_mlp_layers, mlp_layers
    if isinstance(mlp_layers, str):
        raise ValueError(f"layers must be 'auto' or a list of layer indices, got {mlp_layers!r}")
    layers = sorted({int(i) for i in mlp_layers})
    if len(layers) != len(list(mlp_layers)):
        raise ValueError(f"layers {list(mlp_layers)} repeat an index")
    bad = [i for i in layers if not 0 <= i < num_parent_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range: the parent has layers 0..{num_parent_layers - 1}")
    if num_mlp_layers and num_mlp_layers != len(layers):
        raise ValueError(f"{len(layers)} layers given ({layers}) but num_mlp_layers is {num_mlp_layers}")
    return len(layers), layers


def select_layers(parent_model, tokenizer, num_mlp_layers, layers, analysis_file, analysis_data, analysis_options):
    """The parent layers to convert (None: the top K) and the `layer_selection` record saying why."""
    if analysis_file is not None:
        if layers is not None:
            raise ValueError("give either explicit / auto layers or an analysis file, not both")
        return layers_from_analysis(analysis_file, num_mlp_layers, parent_model.config.num_hidden_layers)
    if layers == "auto":
        from .analysis import analyze_layers, default_analysis_texts

        texts = analysis_data if analysis_data is not None else default_analysis_texts()
        logger.info("layers auto: analysing %d parent layers", parent_model.config.num_hidden_layers)
        analysis = analyze_layers(parent_model, tokenizer, texts, ks=[num_mlp_layers], **(analysis_options or {}))
        recommended = analysis.recommend(num_mlp_layers)
        return recommended.layers, {
            "rule": f"auto ({recommended.rule})",
            "description": recommended.description,
            "joint_attention_removal_cost": recommended.joint_cost,
            "analysis_settings": analysis.settings,
        }
    if layers is not None:
        return layers, {"rule": "explicit", "description": "layer indices given by the user"}
    return None, {"rule": "top", "description": f"the top {num_mlp_layers} parent layers (the paper's choice)"}


def layers_from_analysis(path: str | Path, num_mlp_layers: int, num_parent_layers: int) -> tuple[list[int], dict]:
    """The layer set that `shishu analyze` recommended for K = `num_mlp_layers`, and its selection record."""
    path = Path(path)
    if path.is_dir():
        path = path / "layer_analysis.json"
    if not path.is_file():
        raise FileNotFoundError(f"no layer analysis at {path} (write one with `shishu analyze --out ...`)")
    try:
        analysis = LayerAnalysis.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a layer analysis written by `shishu analyze`: {error}") from None
    if len(analysis.rows) != num_parent_layers:
        raise ValueError(
            f"{path} analyses {len(analysis.rows)} layers but the parent has {num_parent_layers}: it is another model's analysis"
        )
    if num_mlp_layers <= 0:
        raise ValueError("converting an analysis recommendation needs the number of layers (--mlp-layers K > 0)")
    recommended = analysis.recommend(num_mlp_layers)
    selection = {
        "rule": f"analysis ({recommended.rule})",
        "description": recommended.description,
        "joint_attention_removal_cost": recommended.joint_cost,
        "analysis_file": str(path),
        "analysis_settings": analysis.settings,
    }
    return list(recommended.layers), selection
