"""transformers' own common model tests (`CausalLMModelTest`: ModelTesterMixin, GenerationTesterMixin, ...) on
ShishuLM, in three layouts. Run with `make test-upstream`, which puts a transformers source tree on `PYTHONPATH`
(docs/compatibility.md says how to get one); the upstream test utilities are never copied into this repository,
and `make test` does not collect this folder (tests/upstream/conftest.py).

Every override below says in one line why ShishuLM differs from a pure decoder; the rest of the tests run as they
do for Llama.
"""

import unittest

from tests.causal_lm_tester import CausalLMModelTest, CausalLMModelTester
from transformers import is_torch_available
from transformers.testing_utils import require_torch


if is_torch_available():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES

    from modeling_shishu import ShishuConfig, ShishuForCausalLM, ShishuModel

    # The tester tells base models from heads (labels, training) by transformers' static name tables, which list
    # in-tree models only: ShishuLM (remote code) is entered there as an in-tree model would be.
    MODEL_MAPPING_NAMES.setdefault("shishu", "ShishuModel")
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("shishu", "ShishuForCausalLM")


class ShishuModelTester(CausalLMModelTester):
    if is_torch_available():
        base_model_class = ShishuModel
        causal_lm_class = ShishuForCausalLM
        config_class = ShishuConfig

    # read by `get_config` like every other config argument
    layer_types = ["full_attention", "full_attention"]
    mlp_share_groups = []

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.num_hidden_layers = len(self.layer_types)

    def get_config(self):
        # the layout sets the depth (test_attention_outputs counts attention layers in `num_hidden_layers`)
        num_hidden_layers, self.num_hidden_layers = self.num_hidden_layers, len(self.layer_types)
        try:
            return super().get_config()
        finally:
            self.num_hidden_layers = num_hidden_layers


class ShishuUpstreamTestMixin:
    def _num_attention_layers(self):
        return self.model_tester.layer_types.count("full_attention")

    def test_attention_outputs(self):
        # `attentions` holds one entry per attention layer (MLP-only blocks have none), as Jamba, Bamba and FalconH1
        tester = self.model_tester
        num_hidden_layers = tester.num_hidden_layers
        tester.num_hidden_layers = self._num_attention_layers()
        try:
            super().test_attention_outputs()
        finally:
            tester.num_hidden_layers = num_hidden_layers

    def _check_past_key_values_for_generate(self, batch_size, past_key_values, seq_length, config):
        # MLP-only blocks keep no keys or values (their cache layer stays empty), as Jamba's and Bamba's Mamba layers
        self.assertEqual(len(past_key_values), config.num_hidden_layers)
        k_shape, v_shape = self._get_attention_shape(batch_size, seq_length, config)
        for layer_type, layer in zip(config.layer_types, past_key_values.layers):
            if layer_type == "mlp":
                self.assertIsNone(getattr(layer, "keys", None))
            else:
                self.assertEqual(layer.keys.shape, k_shape)
                self.assertEqual(layer.values.shape, v_shape)

    def test_num_layers_is_small(self):
        # the smallest hybrid with a shared pair has 3 layers (one attention, two MLP-only), as Lfm3's one per type
        self.assertLessEqual(self.model_tester.num_hidden_layers, 3)


@require_torch
class ShishuGQAModelTest(ShishuUpstreamTestMixin, CausalLMModelTest, unittest.TestCase):
    """All attention with grouped-query heads: exactly Llama's computation."""

    class model_tester_class(ShishuModelTester):
        def __init__(self, parent):
            super().__init__(parent, num_attention_heads=4, num_key_value_heads=2)


@require_torch
class ShishuHybridModelTest(ShishuUpstreamTestMixin, CausalLMModelTest, unittest.TestCase):
    """One attention layer, then two MLP-only blocks sharing one set of weights."""

    class model_tester_class(ShishuModelTester):
        layer_types = ["full_attention", "mlp", "mlp"]
        mlp_share_groups = [[1, 2]]


@require_torch
class ShishuMLPFirstModelTest(ShishuUpstreamTestMixin, CausalLMModelTest, unittest.TestCase):
    """An MLP-only first layer: caches and generate() must ask an attention layer for lengths."""

    class model_tester_class(ShishuModelTester):
        layer_types = ["mlp", "full_attention"]
