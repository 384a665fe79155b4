"""ShishuLM: hybrid decoder / MLP-only language models with paired weight sharing (arXiv 2510.13860).

Importing the package registers the classes with transformers' Auto factories, so
`AutoModelForCausalLM.from_config(ShishuConfig(...))` works; checkpoints saved with `save_pretrained`
carry `auto_map` and load anywhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_shishu import ShishuConfig, pair_adjacent_mlp_layers
from .modeling_shishu import ShishuForCausalLM, ShishuModel, ShishuPreTrainedModel


__version__ = "0.1.0"

AutoConfig.register(ShishuConfig.model_type, ShishuConfig, exist_ok=True)
AutoModel.register(ShishuConfig, ShishuModel, exist_ok=True)
AutoModelForCausalLM.register(ShishuConfig, ShishuForCausalLM, exist_ok=True)

# `save_pretrained` writes these into config.json as `auto_map` and copies the two remote-code files.
ShishuConfig.register_for_auto_class()
ShishuModel.register_for_auto_class("AutoModel")
ShishuForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["ShishuConfig", "ShishuForCausalLM", "ShishuModel", "ShishuPreTrainedModel", "pair_adjacent_mlp_layers"]
