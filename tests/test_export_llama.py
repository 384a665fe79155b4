"""Export to plain Llama: the exported LlamaForCausalLM computes the ShishuLM's function."""

import json

import pytest
import torch
from conftest import INPUT_IDS, logits, save_parent, tiny_llama, tiny_qwen2
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.convert import convert_checkpoint, convert_model
from modeling_shishu.conversion.export_llama import export_llama, shishu_to_llama


pytestmark = pytest.mark.usefixtures("one_thread")


def test_logits_equal_with_pairs_extra_layers_and_untied_head():
    parent = tiny_llama(tie_word_embeddings=False)
    shishu = convert_model(parent, mlp_layers=[1, 3, 4], extra_mlp_layers=1)
    assert shishu.config.mlp_share_groups == [[3, 4]]  # 1 alone; 5 is attention; 6 (extra) alone
    llama = shishu_to_llama(shishu)
    assert isinstance(llama, LlamaForCausalLM) and llama.config.num_hidden_layers == 7
    torch.testing.assert_close(logits(llama, INPUT_IDS), logits(shishu, INPUT_IDS), rtol=0, atol=1e-5)
    # the shared pair is duplicated into two independent copies
    assert torch.equal(llama.model.layers[4].mlp.up_proj.weight, shishu.model.layers[3].mlp.up_proj.weight)
    assert llama.model.layers[4].mlp.up_proj.weight.data_ptr() != llama.model.layers[3].mlp.up_proj.weight.data_ptr()
    for layer_idx in (1, 3, 4, 6):
        assert all(torch.count_nonzero(p) == 0 for p in llama.model.layers[layer_idx].self_attn.parameters())


def test_qwen2_derived_shishu_exports_with_zero_o_bias():
    parent = tiny_qwen2()
    with torch.no_grad():
        for layer in parent.model.layers:
            layer.self_attn.k_proj.bias.normal_()
            layer.self_attn.v_proj.bias.normal_()
    shishu = convert_model(parent, num_mlp_layers=2)
    llama = shishu_to_llama(shishu)
    assert llama.config.attention_bias
    assert torch.count_nonzero(llama.model.layers[0].self_attn.o_proj.bias) == 0
    torch.testing.assert_close(logits(llama, INPUT_IDS), logits(shishu, INPUT_IDS), rtol=0, atol=1e-5)


def test_exported_folder_is_plain_llama_and_generates_the_same(tmp_path):
    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    shishu_dir = convert_checkpoint(parent_dir, tmp_path / "shishu", num_mlp_layers=4)
    out = export_llama(shishu_dir, tmp_path / "llama")

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert not list(out.glob("*.py"))  # no remote code needed
    with safe_open(out / "model.safetensors", "pt") as tensors:
        assert "model.layers.5.mlp.down_proj.weight" in tensors.keys()  # duplicated shared layer
    record = json.loads((out / "export.json").read_text())
    assert record["mlp_only_layers_with_zero_attention"] == [2, 3, 4, 5]
    assert record["max_abs_logit_difference_float32"] <= 1e-5

    shishu = AutoModelForCausalLM.from_pretrained(shishu_dir, trust_remote_code=True).eval()
    llama = AutoModelForCausalLM.from_pretrained(out).eval()  # no trust_remote_code
    assert type(llama) is LlamaForCausalLM
    torch.testing.assert_close(logits(llama, INPUT_IDS), logits(shishu, INPUT_IDS), rtol=0, atol=1e-5)
    prompt = INPUT_IDS[:1, :5]
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(llama.generate(prompt, **kwargs), shishu.generate(prompt, **kwargs))


def test_export_refusals_and_cli(tmp_path, capsys):
    parent_dir = save_parent(tiny_llama(), tmp_path / "parent")
    with pytest.raises(ValueError, match="'llama' model, not a ShishuLM"):
        export_llama(parent_dir, tmp_path / "x")
    with pytest.raises(FileNotFoundError):
        export_llama(tmp_path / "missing", tmp_path / "x")
    shishu_dir = convert_checkpoint(parent_dir, tmp_path / "shishu", num_mlp_layers=2)
    assert shishu_main(["export-llama", str(shishu_dir), "--out", str(tmp_path / "llama")]) == 0
    assert "LlamaForCausalLM" in capsys.readouterr().out
    assert shishu_main(["export-llama", str(shishu_dir), "--out", str(tmp_path / "llama")]) == 2
    assert "already exists" in capsys.readouterr().err
