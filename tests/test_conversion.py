"""Conversion on tiny random Llama / Qwen2 parents: exact copies, counts, sharing, reload, refusals; variants."""

import json

import pytest
import torch
from conftest import INPUT_IDS, current_umask, logits, save_parent, tiny_config_kwargs, tiny_llama, tiny_qwen2
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    MistralConfig,
    Qwen2Config,
)

from modeling_shishu import ShishuConfig, ShishuForCausalLM
from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.convert import check_parent_config, convert_checkpoint, convert_model
from modeling_shishu.conversion.variants import VARIANTS, get_variant
from modeling_shishu.sizes import count_unique_parameters, kv_bytes_per_token


# ----------------------------------------------------------------------------------------------------
# Tiny parents (shared with test_analysis.py and test_export_llama.py)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------------
# convert_model: what is copied from where


def test_attention_layers_embeddings_norm_head_copied_bit_for_bit():
    parent = tiny_llama(tie_word_embeddings=False)
    model = convert_model(parent, num_mlp_layers=2)
    assert model.config.layer_types == ["full_attention"] * 4 + ["mlp"] * 2
    assert model.config.mlp_share_groups == [[4, 5]]
    parent_state = parent.state_dict()
    state = model.state_dict()
    for name in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]:
        assert torch.equal(state[name], parent_state[name]), name
    for layer_idx in range(4):
        prefix = f"model.layers.{layer_idx}."
        names = [n for n in parent_state if n.startswith(prefix)]
        assert len(names) == 9  # q/k/v/o, gate/up/down, two norms
        for name in names:
            assert torch.equal(state[name], parent_state[name]), name


@pytest.mark.parametrize("pair_init", ["lower", "average"])
def test_shared_pair_initialisation_rule(pair_init):
    parent = tiny_llama()
    model = convert_model(parent, num_mlp_layers=4, pair_init=pair_init)
    assert model.config.mlp_share_groups == [[2, 3], [4, 5]]
    state, parent_state = model.state_dict(), parent.state_dict()
    for owner, upper in [(2, 3), (4, 5)]:
        for suffix in [
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
            "post_attention_layernorm.weight",
        ]:
            lower_weight = parent_state[f"model.layers.{owner}.{suffix}"]
            upper_weight = parent_state[f"model.layers.{upper}.{suffix}"]
            expected = lower_weight if pair_init == "lower" else (lower_weight + upper_weight) / 2
            torch.testing.assert_close(state[f"model.layers.{owner}.{suffix}"], expected, rtol=0, atol=1e-7)
        # the later layer of the pair has no weights of its own
        assert not any(name.startswith(f"model.layers.{upper}.") for name in state)
        assert not any(name.startswith(f"model.layers.{owner}.self_attn") for name in state)


def test_unshared_mlp_layers_keep_their_own_parent_weights():
    parent = tiny_llama()
    model = convert_model(parent, mlp_layers=[1, 3, 4], share="none")
    assert model.config.layer_types == ["full_attention", "mlp", "full_attention", "mlp", "mlp", "full_attention"]
    assert model.config.mlp_share_groups == []
    state, parent_state = model.state_dict(), parent.state_dict()
    for layer_idx in [1, 3, 4]:
        for suffix in ["mlp.down_proj.weight", "post_attention_layernorm.weight"]:
            name = f"model.layers.{layer_idx}.{suffix}"
            assert torch.equal(state[name], parent_state[name])


def test_no_conversion_computes_exactly_the_parent():
    parent = tiny_llama()
    model = convert_model(parent, num_mlp_layers=0)
    assert torch.equal(logits(model, INPUT_IDS), logits(parent, INPUT_IDS))


def test_dropping_attention_equals_parent_with_zeroed_attention():
    """An unshared MLP-only block computes exactly what the parent layer computes without its attention."""
    parent = tiny_llama()
    model = convert_model(parent, num_mlp_layers=2, share="none")
    with torch.no_grad():
        for layer_idx in (4, 5):
            parent.model.layers[layer_idx].self_attn.o_proj.weight.zero_()
    torch.testing.assert_close(logits(model, INPUT_IDS), logits(parent, INPUT_IDS), rtol=0, atol=1e-5)


def test_extra_layers_start_as_exact_identity():
    parent = tiny_llama()
    without = convert_model(parent, num_mlp_layers=2)
    with_extra = convert_model(parent, num_mlp_layers=2, extra_mlp_layers=2)
    assert with_extra.config.num_hidden_layers == 8
    assert with_extra.config.mlp_share_groups == [[4, 5], [6, 7]]
    assert torch.count_nonzero(with_extra.model.layers[6].mlp.down_proj.weight) == 0
    # gate/up are a fresh init (not zero), so the down projection gets gradients once training starts
    assert torch.count_nonzero(with_extra.model.layers[6].mlp.gate_proj.weight) > 0
    torch.testing.assert_close(logits(with_extra, INPUT_IDS), logits(without, INPUT_IDS), rtol=0, atol=1e-6)


def test_qwen2_parent_keeps_qkv_bias_without_o_bias():
    parent = tiny_qwen2()
    with torch.no_grad():  # make the biases non-trivial so copying them matters
        for layer in parent.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.v_proj.bias.normal_()
    model = convert_model(parent, num_mlp_layers=0)
    assert model.config.attention_bias and not model.config.attention_output_bias
    assert model.model.layers[0].self_attn.o_proj.bias is None
    torch.testing.assert_close(logits(model, INPUT_IDS), logits(parent, INPUT_IDS), rtol=0, atol=1e-5)
    converted = convert_model(parent, num_mlp_layers=2)
    assert torch.equal(converted.model.layers[3].self_attn.q_proj.bias, parent.model.layers[3].self_attn.q_proj.bias)


def test_unique_parameter_count_matches_layout():
    parent = tiny_llama()
    model = convert_model(parent, num_mlp_layers=4)
    h, i = 32, 64
    attention = h * 32 + 2 * h * 16 + 32 * h + h  # q, k, v (GQA), o, input_layernorm
    mlp = 3 * h * i + h
    assert parent.num_parameters() - model.num_parameters() == 4 * attention + 2 * mlp
    assert model.num_parameters() == count_unique_parameters(model.config)


# ----------------------------------------------------------------------------------------------------
# Refusals


def test_non_llama_parent_refused_with_its_architecture_named():
    gemma = GemmaForCausalLM(GemmaConfig(**tiny_config_kwargs(head_dim=8)))
    with pytest.raises(ValueError, match=r"'gemma' \(GemmaForCausalLM\) is not Llama-family"):
        convert_model(gemma, num_mlp_layers=2)


def test_sliding_window_parents_refused():
    mistral = MistralConfig(**tiny_config_kwargs(sliding_window=16))
    with pytest.raises(ValueError, match="sliding-window"):
        check_parent_config(mistral)
    check_parent_config(MistralConfig(**tiny_config_kwargs(sliding_window=None)))  # no window: fine
    with pytest.raises(ValueError, match="sliding-window"):
        check_parent_config(
            Qwen2Config(**tiny_config_kwargs(use_sliding_window=True, sliding_window=16, max_window_layers=0))
        )


def test_bad_layer_choices_refused(tmp_path):
    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    with pytest.raises(ValueError, match="out of range"):
        convert_checkpoint(parent_dir, tmp_path / "out", mlp_layers=[2, 9])
    with pytest.raises(ValueError, match="num_mlp_layers is 3"):
        convert_checkpoint(parent_dir, tmp_path / "out", num_mlp_layers=3, mlp_layers=[4, 5])
    with pytest.raises(ValueError, match="auto"):
        convert_checkpoint(parent_dir, tmp_path / "out", mlp_layers="auto")
    with pytest.raises(ValueError, match="pair_init"):
        convert_checkpoint(parent_dir, tmp_path / "out", num_mlp_layers=2, pair_init="upper")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["parent"]  # nothing half-written left behind


# ----------------------------------------------------------------------------------------------------
# convert_checkpoint: the Hub-ready folder


def test_checkpoint_folder_reloads_with_remote_code(tmp_path):
    parent = tiny_llama()
    parent_dir = save_parent(parent, tmp_path / "parent")
    out = convert_checkpoint(parent_dir, tmp_path / "shishu", num_mlp_layers=4, extra_mlp_layers=1)
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "configuration_shishu.py",
        "modeling_shishu.py",
        "conversion.json",
    } <= names

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "shishu"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_shishu.ShishuForCausalLM"
    record = json.loads((out / "conversion.json").read_text())
    assert record["mlp_layers"] == [2, 3, 4, 5]
    assert record["extra_mlp_layers"] == 1
    assert record["mlp_share_groups"] == [[2, 3], [4, 5]]  # layer 6 (extra) is the odd one out
    assert record["share"] == "pairs" and record["pair_init"] == "average"
    assert record["parent"]["num_parameters"] == parent.num_parameters()
    assert record["sizes"]["attention_layers"] == 2 and record["sizes"]["kv_change"] == pytest.approx(-4 / 6)

    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "ShishuForCausalLM"
    expected = convert_model(parent, num_mlp_layers=4, extra_mlp_layers=1)
    assert torch.equal(logits(reloaded, INPUT_IDS), logits(expected, INPUT_IDS))

    with pytest.raises(FileExistsError):
        convert_checkpoint(parent_dir, out, num_mlp_layers=2)
    convert_checkpoint(parent_dir, out, num_mlp_layers=2, overwrite=True)
    assert json.loads((out / "conversion.json").read_text())["mlp_layers"] == [4, 5]


def test_output_folder_is_readable_and_portable(tmp_path):
    """Every file gets the permissions a plain `open` gives (transformers writes model.safetensors through a
    private temporary file), the tokenizer config keeps none of this machine's loading flags, and the tokenizer
    loads as Llama's does: without remote code."""
    from transformers import AutoTokenizer

    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    out = convert_checkpoint(parent_dir, tmp_path / "shishu", num_mlp_layers=2)
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~current_umask()}, modes
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & tokenizer_config.keys()
    assert AutoTokenizer.from_pretrained(out)("w4 w5").input_ids == [4, 5]


def test_shishu_checkpoint_is_not_a_parent(tmp_path):
    shishu = ShishuForCausalLM(ShishuConfig(**tiny_config_kwargs()))
    save_parent(shishu, tmp_path / "shishu")
    with pytest.raises(ValueError, match="'shishu'.*not Llama-family"):
        convert_checkpoint(tmp_path / "shishu", tmp_path / "out", num_mlp_layers=2)


def test_cli_convert_explicit_layers_and_bf16(tmp_path, capsys):
    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    out = tmp_path / "shishu"
    code = shishu_main(
        [
            "convert",
            "--parent",
            str(parent_dir),
            "--layers",
            "2,3",
            "--share",
            "none",
            "--dtype",
            "bfloat16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "MLP-only parent layers [2, 3]" in capsys.readouterr().out
    record = json.loads((out / "conversion.json").read_text())
    assert record["layer_selection"]["rule"] == "explicit" and record["dtype"] == "bfloat16"
    assert record["mlp_share_groups"] == []
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype="auto")
    assert reloaded.dtype == torch.bfloat16

    # bad input: one clear line and exit code 2, no traceback
    assert (
        shishu_main(
            ["convert", "--parent", str(tmp_path / "missing"), "--mlp-layers", "2", "--out", str(tmp_path / "x")]
        )
        == 2
    )
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert shishu_main(["convert", "--parent", str(parent_dir), "--layers", "a,b", "--out", str(tmp_path / "x")]) == 2
    assert "--layers must be" in capsys.readouterr().err
    # a variant whose parent is Hub-only, with the Hub switched off (conftest): a clear error
    assert shishu_main(["convert", "--variant", "shishu-qwen2-0.5b-m8", "--out", str(tmp_path / "x")]) == 2
    assert "parent 'Qwen/Qwen2-0.5B' is not available" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------------------
# Variants


def test_variant_sizes_are_computed_from_the_layout():
    m10 = get_variant("shishu-smollm2-135m-instruct-m10")
    sizes = m10.sizes
    assert sizes["parent_parameters"] == 134_515_008  # SmolLM2-135M
    assert sizes["parameters"] == 112_387_968
    assert sizes["parent_kv_bytes_per_token_bf16"] == 23_040 and sizes["kv_bytes_per_token_bf16"] == 15_360
    assert (sizes["layers"], sizes["attention_layers"], sizes["share_groups"]) == (30, 20, 5)
    assert get_variant("shishu-smollm2-360m-instruct-m10").sizes["parent_parameters"] == 361_821_120
    qwen = get_variant("shishu-qwen2-0.5b-m8")
    assert qwen.sizes["parent_parameters"] == 494_032_768 and qwen.offline_parent is None
    assert qwen.shishu_config().attention_bias and not qwen.shishu_config().attention_output_bias
    for variant in VARIANTS.values():
        assert variant.sizes["parameters"] < variant.sizes["parent_parameters"]
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        get_variant("nope")


def test_kv_bytes_per_token_matches_a_real_cache():
    config = ShishuConfig(
        **tiny_config_kwargs(layer_types=["full_attention"] * 4 + ["mlp"] * 2, mlp_share_groups=[[4, 5]])
    )
    model = ShishuForCausalLM(config).eval()
    with torch.no_grad():
        cache = model(INPUT_IDS[:1], use_cache=True).past_key_values
    stored = sum(
        layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if getattr(layer, "keys", None) is not None
    )
    assert stored == kv_bytes_per_token(config, torch.float32.itemsize) * INPUT_IDS.shape[1]


def test_cli_variants_table(capsys):
    assert shishu_main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "shishu-smollm2-135m-instruct-m10" in out and "112,387,968" in out and "-33.3%" in out
    assert shishu_main(["variants", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == set(VARIANTS)


def test_variant_names_say_instruct_when_the_parent_is_an_instruct_model():
    for variant in VARIANTS.values():
        instruct_parent = variant.parent_hub_id.lower().endswith("-instruct")
        assert ("-instruct-" in variant.name) == instruct_parent, (variant.name, variant.parent_hub_id)
