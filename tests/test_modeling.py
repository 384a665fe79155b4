"""Model tests on tiny configs: equivalence with Llama, caching, generation, save/load, sharing, backends."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import tiny_config_kwargs
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from modeling_shishu import ShishuConfig, ShishuForCausalLM, ShishuModel


HYBRID_LAYOUT = dict(
    num_hidden_layers=7,
    layer_types=["full_attention"] * 3 + ["mlp"] * 4,
    mlp_share_groups=[[3, 4], [5, 6]],
)


def hybrid_model(**overrides) -> ShishuForCausalLM:
    model = ShishuForCausalLM(ShishuConfig(**tiny_config_kwargs(**{**HYBRID_LAYOUT, **overrides})))
    return model.eval()


def expected_unique_parameters(config: ShishuConfig) -> int:
    """Parameter count from the layout alone: shared groups counted once."""
    h, i = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    attention = h * q + 2 * h * kv + q * h + h  # projections + input_layernorm
    mlp = 3 * h * i + h  # gate/up/down + post_attention_layernorm
    owners = set(config.weight_owners)
    total = config.vocab_size * h + h  # embeddings + final norm
    if not config.tie_word_embeddings:
        total += config.vocab_size * h
    for layer_idx in owners:
        total += mlp + (attention if config.layer_types[layer_idx] == "full_attention" else 0)
    return total


# ----------------------------------------------------------------------------------------------------
# Equivalence with transformers' Llama


@pytest.mark.parametrize("tie_word_embeddings", [True, False])
def test_all_attention_matches_llama(tie_word_embeddings):
    kwargs = tiny_config_kwargs(tie_word_embeddings=tie_word_embeddings)
    llama = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    shishu = ShishuForCausalLM(ShishuConfig(**kwargs)).eval()
    missing, unexpected = shishu.load_state_dict(llama.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    input_ids = torch.randint(3, 99, (2, 17))
    with torch.no_grad():
        expected = llama(input_ids).logits
        actual = shishu(input_ids).logits
    assert (expected - actual).abs().max().item() <= 1e-5
    assert shishu.num_parameters() == llama.num_parameters()


# ----------------------------------------------------------------------------------------------------
# Forward, loss, caching and generation


def test_loss_hidden_states_and_logits_to_keep():
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (2, 9))
    out = model(input_ids, labels=input_ids, output_hidden_states=True)
    assert out.logits.shape == (2, 9, 99)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    # one hidden state per layer (shared layers included) plus the embeddings
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    last = model(input_ids, logits_to_keep=1).logits
    torch.testing.assert_close(last[:, -1], out.logits[:, -1])


def test_cache_holds_attention_layers_only():
    model = hybrid_model()
    out = model(torch.randint(3, 99, (1, 6)), use_cache=True)
    cache = out.past_key_values
    for layer_idx, layer_type in enumerate(model.config.layer_types):
        keys = getattr(cache.layers[layer_idx], "keys", None)
        if layer_type == "full_attention":
            assert keys is not None and keys.shape[-2] == 6
        else:
            assert keys is None or keys.numel() == 0
    assert cache.get_seq_length() == 6


def test_incremental_decoding_matches_full_forward():
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (2, 12))
    with torch.no_grad():
        full = model(input_ids).logits
        out = model(input_ids[:, :7], use_cache=True)
        steps = [out.logits]
        cache = out.past_key_values
        for t in range(7, 12):
            out = model(input_ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generate_dynamic_static_and_no_cache_agree():
    model = hybrid_model()
    prompt = torch.randint(3, 99, (1, 6))
    settings = [dict(use_cache=True), dict(use_cache=False), dict(cache_implementation="static")]
    outputs = [
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False, **s)
        for s in settings
    ]
    for other in outputs[1:]:
        assert torch.equal(outputs[0], other)


def test_left_padded_batch_matches_single_prompts():
    model = hybrid_model()
    prompts = [torch.randint(3, 99, (5,)), torch.randint(3, 99, (9,))]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((2, width), model.config.pad_token_id)
    attention_mask = torch.zeros((2, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention_mask[row, width - len(prompt) :] = 1
    batched = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, do_sample=False)
    for row, prompt in enumerate(prompts):
        single = model.generate(
            prompt[None], attention_mask=torch.ones(1, len(prompt)), max_new_tokens=6, do_sample=False
        )
        assert torch.equal(batched[row, width:], single[0, len(prompt) :])


# ----------------------------------------------------------------------------------------------------
# Weight sharing and save / load


def test_shared_group_is_one_set_of_weights():
    model = hybrid_model()
    names = {name for name, _ in model.named_parameters()}
    assert not any(name.startswith(("model.layers.4.", "model.layers.6.")) for name in names)
    assert "model.layers.3.mlp.gate_proj.weight" in names
    assert model.num_parameters() == expected_unique_parameters(model.config)
    # the shared layer really runs the owner's weights: changing them changes the output of both layers
    input_ids = torch.randint(3, 99, (1, 5))
    hidden = model(input_ids, output_hidden_states=True).hidden_states
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.zero_()
        zeroed = model(input_ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(zeroed[4], zeroed[3])  # layer 3's MLP adds nothing now
    torch.testing.assert_close(zeroed[5], zeroed[4])  # and neither does layer 4, which shares it
    assert not torch.allclose(hidden[5], hidden[4])


def test_save_and_reload_round_trip(tmp_path):
    model = hybrid_model()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert "model.layers.3.mlp.gate_proj.weight" in keys
    assert not any(key.startswith(("model.layers.4.", "model.layers.6.")) for key in keys)
    assert len(keys) == len(dict(model.named_parameters()))  # every tensor stored once (tied head omitted)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "shishu"
    assert config["mlp_share_groups"] == [[3, 4], [5, 6]]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}

    reloaded = ShishuForCausalLM.from_pretrained(tmp_path).eval()
    expected_inv_freq = ShishuForCausalLM(reloaded.config).model.rotary_emb.inv_freq
    torch.testing.assert_close(reloaded.model.rotary_emb.inv_freq, expected_inv_freq)
    assert reloaded.num_parameters() == model.num_parameters()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    input_ids = torch.randint(3, 99, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, model(input_ids).logits)


def test_auto_classes_load_saved_folder(tmp_path):
    hybrid_model().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path, trust_remote_code=True), ShishuConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path, trust_remote_code=True), ShishuModel)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True), ShishuForCausalLM)


def test_remote_code_in_fresh_process_without_package(tmp_path):
    """The two copied files alone make a working model: the package itself is made unimportable."""
    folder = tmp_path / "hub_checkout"
    model = hybrid_model()
    model.save_pretrained(folder)
    assert {"configuration_shishu.py", "modeling_shishu.py"} <= set(os.listdir(folder))
    input_ids = torch.randint(3, 99, (1, 8))
    with torch.no_grad():
        expected = model(input_ids).logits[0, -1].tolist()
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["modeling_shishu"] = None  # any import of the package now fails
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(torch.tensor({input_ids.tolist()})).logits[0, -1]
        tokens = model.generate(torch.tensor({input_ids.tolist()}), max_new_tokens=3, do_sample=False)
        print(json.dumps({{"logits": logits.tolist(), "new": tokens.shape[1]}}))
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor(payload["logits"]), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert payload["new"] == 11


# ----------------------------------------------------------------------------------------------------
# Backends, dtypes, training features


def test_eager_and_sdpa_agree():
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (2, 11))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # left padding exercises the mask path of both backends
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(input_ids, attention_mask=attention_mask).logits
    valid = attention_mask.bool()
    torch.testing.assert_close(outputs["eager"][valid], outputs["sdpa"][valid], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_equal_gradients():
    input_ids = torch.randint(3, 99, (2, 10))
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = hybrid_model().train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids, labels=input_ids).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert gradients[0].keys() == gradients[1].keys()
    for name in gradients[0]:
        torch.testing.assert_close(gradients[0][name], gradients[1][name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_and_generate(dtype):
    reference_model = hybrid_model()
    model = hybrid_model()
    model.load_state_dict(reference_model.state_dict())
    model.to(dtype)
    input_ids = torch.randint(3, 99, (1, 8))
    with torch.no_grad():
        reference = reference_model(input_ids).logits
        logits = model(input_ids).logits
    assert logits.dtype == dtype
    assert (logits.float() - reference).abs().max().item() < 0.1
    assert model.generate(input_ids, max_new_tokens=3, do_sample=False).shape == (1, 11)


def test_torch_compile_matches_eager():
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (1, 8))
    with torch.no_grad():
        expected = model(input_ids).logits
        compiled = torch.compile(model, fullgraph=True)
        actual = compiled(input_ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_lora_on_llama_target_names_trains_and_merges(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = hybrid_model()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    # 3 attention layers x 7 projections + 2 shared MLP owners x 3 projections: each shared MLP adapted once
    assert len(lora_names) == 3 * 7 + 2 * 3
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    input_ids = torch.randint(3, 99, (4, 12))
    losses = []
    for _ in range(15):
        loss = peft_model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=input_ids).logits
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids).logits, adapted, atol=1e-4, rtol=1e-4)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, adapted, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------
# Layout construction and validation


def test_from_llama_config_pairs_top_layers():
    llama = LlamaConfig(**tiny_config_kwargs(num_hidden_layers=10))
    config = ShishuConfig.from_llama_config(llama, num_mlp_layers=5, share="pairs", extra_mlp_layers=2)
    assert config.num_hidden_layers == 12
    assert config.layer_types == ["full_attention"] * 5 + ["mlp"] * 7
    assert config.mlp_share_groups == [[5, 6], [7, 8], [9, 10]]  # layer 11 is the odd one out
    unshared = ShishuConfig.from_llama_config(llama, num_mlp_layers=3, share="none")
    assert unshared.mlp_share_groups == []
    explicit = ShishuConfig.from_llama_config(llama, mlp_layers=[2, 3, 6])
    assert explicit.mlp_layer_indices == [2, 3, 6] and explicit.mlp_share_groups == [[2, 3]]


def test_smollm2_shape_savings_match_the_formula():
    smollm2 = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    parent = expected_unique_parameters(ShishuConfig.from_llama_config(smollm2))
    variant = ShishuConfig.from_llama_config(smollm2, num_mlp_layers=10, share="pairs")
    assert parent == 134_515_008
    # each converted layer loses attention (884,736) and input_layernorm (576); each shared pair one MLP + norm
    assert expected_unique_parameters(variant) == parent - 10 * (884_736 + 576) - 5 * (2_654_208 + 576)
    assert expected_unique_parameters(variant) == 112_387_968  # -16.45%
    assert len(variant.attention_layer_indices) == 20


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(layer_types=["full_attention"] * 5), "layer_types has 5 entries"),
        (dict(layer_types=["full_attention"] * 5 + ["linear"]), "allowed values"),
        (dict(layer_types=["mlp"] * 6), "at least one layer must be 'full_attention'"),
        (dict(layer_types=["full_attention"] * 4 + ["mlp"] * 2, mlp_share_groups=[[3, 4]]), "only 'mlp' layers"),
        (dict(layer_types=["full_attention"] * 2 + ["mlp"] * 4, mlp_share_groups=[[2, 4]]), "adjacent"),
        (dict(layer_types=["full_attention"] * 2 + ["mlp"] * 4, mlp_share_groups=[[2, 3], [3, 4]]), "overlap"),
        (dict(layer_types=["full_attention"] * 2 + ["mlp"] * 4, mlp_share_groups=[[5, 6]]), "out of range"),
        (dict(layer_types=["full_attention"] * 2 + ["mlp"] * 4, mlp_share_groups=[[4]]), "at least two"),
        (dict(hidden_size=30), "divisible by num_attention_heads"),
        (dict(num_key_value_heads=3), "divisible by num_key_value_heads"),
    ],
)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        ShishuConfig(**tiny_config_kwargs(**overrides))


def test_config_json_round_trip_keeps_layout(tmp_path):
    config = ShishuConfig(**tiny_config_kwargs(**HYBRID_LAYOUT))
    config.save_pretrained(tmp_path)
    loaded = ShishuConfig.from_pretrained(tmp_path)
    assert loaded.layer_types == config.layer_types
    assert loaded.mlp_share_groups == config.mlp_share_groups
    assert loaded.weight_owners == [0, 1, 2, 3, 3, 5, 5]


def test_editing_the_layer_count_after_the_config_is_refused():
    config = ShishuConfig(**tiny_config_kwargs(**HYBRID_LAYOUT))
    config.num_hidden_layers = 2
    with pytest.raises(ValueError, match="layer_types has 7 entries but num_hidden_layers is 2"):
        ShishuForCausalLM(config)


def test_attention_outputs_belong_to_the_attention_layers():
    layout = dict(
        num_hidden_layers=5,
        layer_types=["mlp", "full_attention", "mlp", "mlp", "full_attention"],
        mlp_share_groups=[[2, 3]],
    )
    model = hybrid_model(**layout)
    model.set_attn_implementation("eager")
    input_ids = torch.randint(3, 99, (2, 7))
    out = model(input_ids, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(model.config.attention_layer_indices) == 2
    assert all(weights.shape == (2, 4, 7, 7) for weights in out.attentions)
    # attentions[k] is the attention of layer attention_layer_indices[k]: recompute layer 4's from its input
    layer = model.model.layers[4]
    hidden = layer.input_layernorm(out.hidden_states[4])
    position_ids = torch.arange(7)[None]
    cos_sin = model.model.rotary_emb(hidden, position_ids)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    _, weights = layer.self_attn(hidden, position_embeddings=cos_sin, attention_mask=mask)
    torch.testing.assert_close(out.attentions[1], weights)
    assert model(input_ids).attentions is None


def test_compiled_static_cache_generation_compiles_once():
    """generate() asks the model for the attention mask of a compiled step: one graph for every decode step."""
    from transformers import CompileConfig

    model = hybrid_model()
    prompt = torch.randint(3, 99, (2, 5))
    attention_mask = torch.ones_like(prompt)
    attention_mask[0, :2] = 0  # a padding mask is what made each step's mask a new shape
    settings = dict(attention_mask=attention_mask, max_new_tokens=6, do_sample=False, cache_implementation="static")
    eager = model.generate(prompt, **settings)
    compile_config = CompileConfig(fullgraph=True)
    compile_config._compile_all_devices = True  # generate() compiles by itself on accelerators only
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = model.generate(prompt, compile_config=compile_config, **settings)
    assert torch.equal(compiled, eager)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda c: c.update(mlp_share_groups=[]), "missing model.layers.4.mlp.down_proj.weight"),
        (lambda c: c["block_types"].__setitem__(2, "mlp"), "unexpected model.layers.2.input_layernorm.weight"),
    ],
)
def test_a_config_that_disagrees_with_the_weights_is_refused(tmp_path, edit, named):
    hybrid_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for loader in (ShishuForCausalLM, AutoModelForCausalLM):
        with pytest.raises(ValueError, match="do not match the layout in its config.json") as error:
            loader.from_pretrained(tmp_path, trust_remote_code=True)
        assert named in str(error.value)


def test_loading_info_is_returned_when_asked(tmp_path):
    hybrid_model().save_pretrained(tmp_path)
    model, info = ShishuForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, ShishuForCausalLM) and not info["missing_keys"] and not info["unexpected_keys"]
    assert isinstance(AutoModel.from_pretrained(tmp_path, trust_remote_code=True), ShishuModel)


def test_return_dict_false_gives_tuples_as_llama():
    """`return_dict=False`, as an argument or in the config, gives tuples from the base model and the LM."""
    model = hybrid_model()
    input_ids = torch.randint(3, 99, (2, 7))
    with torch.no_grad():
        assert isinstance(model.model(input_ids, return_dict=False), tuple)
        assert isinstance(model(input_ids, return_dict=False), tuple)
        model.config.return_dict = False
        assert isinstance(model.model(input_ids), tuple) and isinstance(model(input_ids), tuple)


def test_transformers_init_paths_load_as_for_llama(tmp_path):
    """No folder, or a folder holding none of the model's weights: a fresh model with transformers' report, as for
    Llama; the strict refusal is for a folder whose weights disagree with its layout."""
    from safetensors.torch import save_file

    model = hybrid_model()
    fresh = ShishuForCausalLM.from_pretrained(None, config=model.config, state_dict={})
    assert isinstance(fresh, ShishuForCausalLM)
    model.save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _, info = ShishuForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert {name for name in model.state_dict() if ".layers." in name} <= set(info["missing_keys"])
