"""`shishu export-nemotron-nas`: the folder, field by field, as the Nemotron-NAS readers read it.

What each reader takes from config.json and the weights was read from its source:
- vLLM `vllm/model_executor/models/nemotron_nas.py` and `vllm/config/model.py` (`get_total_num_kv_heads`):
  `block_configs[i].attention.no_op / .n_heads_in_group`, `.ffn.no_op / .ffn_mult` (else `.intermediate_size`)
  as attributes, `num_attention_heads`, `head_dim`, `rope_parameters`, `attention_bias`, `mlp_bias`,
  `tie_word_embeddings`; the residual is fused into the RMSNorms, started by the first attention sublayer.
- SGLang `python/sglang/srt/models/nemotron_nas.py`: the same attributes, `ffn_mult` only, `rope_theta` by
  `getattr(config, "rope_theta", 10000)`, no MLP bias.
- MLX-LM `mlx_lm/models/nemotron-nas.py`: config.json as a dict (`rope_theta`, `block_configs` dicts with
  `ffn_mult`), head_dim = hidden_size / heads, one cache per layer with attention.
- llama.cpp `conversion/deci.py`: `block_configs[i]["attention"]["n_heads_in_group"]` / `["replace_with_linear"]`,
  `["ffn"]["ffn_mult"]`, key length = hidden_size / heads (run for real in tests/test_llamacpp.py).

`reference_forward` below computes the model from the exported folder alone, as vLLM's `DeciModel.forward`
does (the residual carried beside the hidden state, no-op attention skipped), and must give the ShishuLM's logits.
"""

import json

import pytest
import torch
from conftest import save_parent, save_tiny_hybrid, tiny_llama
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.configuration_decilm import ffn_mult_to_intermediate_size
from modeling_shishu.conversion.export_nemotron_nas import export_nemotron_nas


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"intermediate_size": 256}  # DeciLM readers derive the MLP width from ffn_mult: a multiple of 256


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nas")
    source = save_tiny_hybrid(folder / "tiny", **TINY)
    export_nemotron_nas(source, folder / "nas")
    return source, folder / "nas"


def rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@torch.no_grad()
def reference_forward(folder, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of a Nemotron-NAS folder, computed from its config (attributes, as vLLM reads them) and weights."""
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    weights = load_file(folder / "model.safetensors")
    eps, heads = config.rms_norm_eps, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    theta = config.rope_parameters["rope_theta"]
    length = input_ids.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    mask = torch.full((length, length), float("-inf")).triu(1)

    def linear(x, name):
        bias = weights.get(f"{name}.bias")
        return torch.nn.functional.linear(x, weights[f"{name}.weight"], bias)

    hidden, residual = weights["model.embed_tokens.weight"][input_ids], None
    for i, block in enumerate(config.block_configs):
        prefix = f"model.layers.{i}"
        if not block.attention.no_op:
            residual = hidden if residual is None else hidden + residual
            x = rms_norm(residual, weights[f"{prefix}.input_layernorm.weight"], eps)
            kv_heads = heads // block.attention.n_heads_in_group
            q = linear(x, f"{prefix}.self_attn.q_proj").unflatten(-1, (heads, head_dim)).transpose(1, 2)
            k = linear(x, f"{prefix}.self_attn.k_proj").unflatten(-1, (kv_heads, head_dim)).transpose(1, 2)
            v = linear(x, f"{prefix}.self_attn.v_proj").unflatten(-1, (kv_heads, head_dim)).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
            scores = q @ k.transpose(-1, -2) / head_dim**0.5 + mask
            attended = (scores.softmax(-1) @ v).transpose(1, 2).flatten(-2)
            hidden = linear(attended, f"{prefix}.self_attn.o_proj")
        if not block.ffn.no_op:
            assert residual is not None, "a no-op attention in layer 0 has no residual to fuse (vLLM, SGLang)"
            residual = hidden + residual
            x = rms_norm(residual, weights[f"{prefix}.post_attention_layernorm.weight"], eps)
            width = ffn_mult_to_intermediate_size(block.ffn.ffn_mult, config.hidden_size)
            assert weights[f"{prefix}.mlp.gate_proj.weight"].shape[0] == width
            gate, up = linear(x, f"{prefix}.mlp.gate_proj"), linear(x, f"{prefix}.mlp.up_proj")
            hidden = linear(torch.nn.functional.silu(gate) * up, f"{prefix}.mlp.down_proj")
    hidden = rms_norm(hidden + residual, weights["model.norm.weight"], eps)
    head = weights["model.embed_tokens.weight"] if config.tie_word_embeddings else weights["lm_head.weight"]
    return hidden @ head.T


def test_config_fields_as_the_readers_read_them(exported):
    source, folder = exported
    raw = json.loads((folder / "config.json").read_text())
    shishu = json.loads((source / "config.json").read_text())
    assert raw["architectures"] == ["DeciLMForCausalLM"] and raw["model_type"] == "nemotron-nas"
    assert raw["num_hidden_layers"] == len(raw["block_configs"]) == 6
    # like NVIDIA's checkpoints: widths and KV heads are per layer only
    assert "intermediate_size" not in raw and "num_key_value_heads" not in raw
    assert raw["rope_theta"] == raw["rope_parameters"]["rope_theta"] == shishu["rope_parameters"]["rope_theta"]
    assert raw["head_dim"] * raw["num_attention_heads"] == raw["hidden_size"]

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    no_op = [block.attention.no_op for block in config.block_configs]
    assert no_op == [layer_type == "mlp" for layer_type in shishu["block_types"]]  # the layout as config.json saves it
    # vLLM's get_total_num_kv_heads: the first attention block's group size
    first = next(block for block in config.block_configs if not block.attention.no_op)
    assert config.num_attention_heads // first.attention.n_heads_in_group == shishu["num_key_value_heads"]
    for block in config.block_configs:
        assert not block.ffn.no_op and not hasattr(block.ffn, "intermediate_size")
        assert ffn_mult_to_intermediate_size(block.ffn.ffn_mult, config.hidden_size) == 256
        assert block.attention.replace_with_linear is False  # llama.cpp reads the key itself
        assert (block.attention.n_heads_in_group is None) == block.attention.no_op
    assert getattr(config, "rope_theta", 10000) == shishu["rope_parameters"]["rope_theta"]  # SGLang
    assert config.attention_bias is False and config.mlp_bias is False
    assert config.tie_word_embeddings == shishu["tie_word_embeddings"]
    # a round trip through save_pretrained keeps block_configs as JSON
    config.save_pretrained(folder.parent / "resaved")
    assert json.loads((folder.parent / "resaved" / "config.json").read_text())["block_configs"] == raw["block_configs"]


def test_tensors_are_decilm_names_and_no_op_layers_have_no_attention(exported):
    source, folder = exported
    weights = load_file(folder / "model.safetensors")
    for i in (2, 3, 5):  # MLP-only
        assert not [name for name in weights if name.startswith(f"model.layers.{i}.self_attn")]
        assert f"model.layers.{i}.input_layernorm.weight" not in weights
        assert f"model.layers.{i}.post_attention_layernorm.weight" in weights
    for i in (0, 1, 4):
        for proj in ("q", "k", "v", "o"):
            assert f"model.layers.{i}.self_attn.{proj}_proj.weight" in weights
    # the shared pair is written out per layer, with equal values
    for name in ("mlp.gate_proj.weight", "mlp.down_proj.weight", "post_attention_layernorm.weight"):
        assert torch.equal(weights[f"model.layers.2.{name}"], weights[f"model.layers.3.{name}"])
    assert "lm_head.weight" not in weights  # tied


def test_reference_forward_of_the_export_equals_the_shishulm(exported):
    source, folder = exported
    model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True, dtype=torch.float32).eval()
    input_ids = torch.randint(3, model.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids).logits
    assert (reference_forward(folder, input_ids) - expected).abs().max() < 1e-4


def test_tokenizer_and_chat_template_travel(exported):
    source, folder = exported
    tokenizer, original = (AutoTokenizer.from_pretrained(f, trust_remote_code=True) for f in (folder, source))
    messages = [{"role": "user", "content": "Beautiful is better than ugly."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(
        messages, tokenize=False
    )
    assert tokenizer("Explicit is better").input_ids == original("Explicit is better").input_ids


def test_untied_head_and_biases(tmp_path):
    source = save_tiny_hybrid(
        tmp_path / "tiny", tie_word_embeddings=False, attention_bias=True, attention_output_bias=True, **TINY
    )
    model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.5)
    model.save_pretrained(source)
    export_nemotron_nas(source, tmp_path / "nas")
    assert "lm_head.weight" in load_file(tmp_path / "nas" / "model.safetensors")
    input_ids = torch.randint(3, model.config.vocab_size, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (reference_forward(tmp_path / "nas", input_ids) - model(input_ids).logits).abs().max() < 1e-4


def test_a_llama_parent_exports_all_attention(tmp_path):
    parent = save_parent(tiny_llama(intermediate_size=256), tmp_path / "parent")
    summary = export_nemotron_nas(parent, tmp_path / "nas")
    assert summary["no_op_attention_layers"] == [] and len(summary["attention_layers"]) == 6


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"layer_types": ["mlp", "full_attention"], "share_groups": ()}, "layer 0 is MLP-only"),
        ({"intermediate_size": 128}, "intermediate_size 128"),
        ({"head_dim": 32}, "head_dim 32"),
        ({"attention_bias": True, "attention_output_bias": False}, "one attention_bias switch"),
        ({"mlp_bias": True}, "mlp_bias"),
    ],
    ids=["mlp-only-layer-0", "ffn-width", "head-dim", "split-bias", "mlp-bias"],
)
def test_unrepresentable_layouts_are_refused_in_one_line(tmp_path, capsys, overrides, message):
    source = save_tiny_hybrid(tmp_path / "tiny", **{**TINY, **overrides})
    out = tmp_path / "nas"
    capsys.readouterr()
    assert shishu_main(["export-nemotron-nas", str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and message in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # nothing written, no lock left


def test_missing_folder_and_existing_output(tmp_path, capsys, exported):
    source, folder = exported
    capsys.readouterr()
    assert shishu_main(["export-nemotron-nas", str(tmp_path / "nope"), "--out", str(tmp_path / "nas")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert shishu_main(["export-nemotron-nas", str(source), "--out", str(folder)]) == 2
    assert "already exists" in capsys.readouterr().err
