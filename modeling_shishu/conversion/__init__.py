"""From a Llama-family parent to a ShishuLM and back out: layer analysis, conversion, local fitting, named
variants, and export to plain Llama or to GGUF for llama.cpp. One module per `shishu` subcommand
(`analysis`, `convert`, `variants`, `export_llama`, `export_gguf`); docs/model_family.md describes them.
`export_llama` and `export_gguf` are not re-exported here: their names are those of their modules.
"""

from .analysis import analyze_layers
from .analysis_result import LayerAnalysis, Recommendation
from .convert import convert_checkpoint, convert_model
from .decoder_stack import DecoderStack
from .export_llama import shishu_to_llama
from .fitting import FitSettings, fit_mlp_only_blocks
from .parent import check_parent_config, load_parent
from .variants import VARIANTS, ShishuVariant, get_variant


__all__ = [
    "VARIANTS",
    "DecoderStack",
    "FitSettings",
    "LayerAnalysis",
    "Recommendation",
    "ShishuVariant",
    "analyze_layers",
    "check_parent_config",
    "convert_checkpoint",
    "convert_model",
    "fit_mlp_only_blocks",
    "get_variant",
    "load_parent",
    "shishu_to_llama",
]
