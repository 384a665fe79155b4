"""GGUF export: the file read back with gguf's own reader holds llama.cpp's `deci` layout of a ShishuLM.

Running the file in llama.cpp itself is tests/test_llamacpp.py (marker `llamacpp`).
"""

import json

import gguf
import numpy as np
import pytest
import torch
from conftest import CHAT_TEMPLATE, save_parent, save_tiny_hybrid, tiny_bpe_tokenizer, tiny_hybrid, tiny_llama

from modeling_shishu import ShishuForCausalLM
from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.export_gguf import export_gguf, permute_for_rope, pre_tokenizer_name


pytestmark = pytest.mark.usefixtures("one_thread")


def field(reader: gguf.GGUFReader, key: str):
    value = reader.get_field(key)
    assert value is not None, f"{key} missing"
    return value.contents()


def tensors(reader: gguf.GGUFReader) -> dict:
    return {tensor.name: tensor for tensor in reader.tensors}


def as_float32(tensor) -> np.ndarray:
    """A GGUF tensor dequantized, in transformers' (rows, columns) order."""
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))


# ----------------------------------------------------------------------------------------------------


def test_hybrid_layout_metadata_tensors_and_tokenizer(tmp_path):
    folder = save_tiny_hybrid(tmp_path / "tiny", tie_word_embeddings=False)
    model = ShishuForCausalLM.from_pretrained(folder).eval()
    out = tmp_path / "tiny.gguf"
    lines = []
    summary = export_gguf(folder, out, log=lines.append)
    assert summary["head_count"] == [4, 4, 0, 0, 4, 0] and summary["head_count_kv"] == [2, 2, 0, 0, 2, 0]
    assert any("layer 4/6: MLP-only, 0 heads, a copy of layer 2's weights" in line for line in lines)
    assert not list(tmp_path.glob(".tiny.tmp-*"))  # the temporary file was renamed

    reader = gguf.GGUFReader(out)
    assert field(reader, "general.architecture") == "deci"
    assert field(reader, "deci.block_count") == 6
    assert field(reader, "deci.attention.head_count") == [4, 4, 0, 0, 4, 0]
    assert field(reader, "deci.attention.head_count_kv") == [2, 2, 0, 0, 2, 0]
    assert field(reader, "deci.attention.key_length") == field(reader, "deci.attention.value_length") == 16
    assert field(reader, "deci.rope.dimension_count") == 16
    assert field(reader, "deci.rope.freq_base") == 10000.0
    assert field(reader, "deci.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert field(reader, "deci.context_length") == 256
    assert field(reader, "deci.embedding_length") == 64 and field(reader, "deci.feed_forward_length") == 128
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32

    by_name = tensors(reader)
    for layer_idx in (2, 3, 5):  # MLP-only: no attention tensor at all
        names = sorted(n.split(".", 2)[2] for n in by_name if n.startswith(f"blk.{layer_idx}."))
        assert names == ["ffn_down.weight", "ffn_gate.weight", "ffn_norm.weight", "ffn_up.weight"]
    for layer_idx in (0, 1, 4):
        assert {
            f"blk.{layer_idx}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output")
        } <= by_name.keys()
    assert len(by_name) == 3 + 3 * 9 + 3 * 4  # token_embd, output_norm, output; attention and MLP-only layers
    assert by_name["blk.0.attn_k.weight"].shape.tolist() == [64, 32]  # GGUF lists dims innermost first

    state = model.state_dict()
    # The MLP-only block's post_attention_layernorm is llama.cpp's ffn_norm, which deci applies to a 0-head layer.
    np.testing.assert_array_equal(
        as_float32(by_name["blk.5.ffn_norm.weight"]), state["model.layers.5.post_attention_layernorm.weight"].numpy()
    )
    np.testing.assert_array_equal(
        as_float32(by_name["blk.0.attn_norm.weight"]), state["model.layers.0.input_layernorm.weight"].numpy()
    )
    np.testing.assert_array_equal(
        as_float32(by_name["blk.1.ffn_up.weight"]), state["model.layers.1.mlp.up_proj.weight"].numpy()
    )
    np.testing.assert_array_equal(as_float32(by_name["output.weight"]), state["lm_head.weight"].numpy())
    # Q and K rows are permuted for llama.cpp's interleaved RoPE; V is not.
    q = state["model.layers.4.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(as_float32(by_name["blk.4.attn_q.weight"]), permute_for_rope(q, 4).numpy())
    assert not np.array_equal(as_float32(by_name["blk.4.attn_q.weight"]), q.numpy())
    k = state["model.layers.4.self_attn.k_proj.weight"]
    np.testing.assert_array_equal(as_float32(by_name["blk.4.attn_k.weight"]), permute_for_rope(k, 2).numpy())
    np.testing.assert_array_equal(
        as_float32(by_name["blk.4.attn_v.weight"]), state["model.layers.4.self_attn.v_proj.weight"].numpy()
    )
    # The shared pair: stored once in safetensors, twice in the GGUF (each layer its own copy).
    assert not any(name.startswith("model.layers.3.") for name in state)
    for suffix in ("ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"):
        lower, upper = by_name[f"blk.2.{suffix}"], by_name[f"blk.3.{suffix}"]
        np.testing.assert_array_equal(lower.data, upper.data)
        assert lower.data_offset != upper.data_offset
    np.testing.assert_array_equal(
        as_float32(by_name["blk.3.ffn_down.weight"]), state["model.layers.2.mlp.down_proj.weight"].numpy()
    )

    tokenizer = tiny_bpe_tokenizer()
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    token_list = field(reader, "tokenizer.ggml.tokens")
    assert len(token_list) == model.config.vocab_size and token_list[5] == tokenizer.convert_ids_to_tokens(5)
    token_types = field(reader, "tokenizer.ggml.token_type")
    assert token_types[tokenizer.convert_tokens_to_ids("<|im_start|>")] == gguf.TokenType.CONTROL
    assert token_types[10] == gguf.TokenType.NORMAL
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert field(reader, "tokenizer.ggml.merges") == [" ".join(pair) for pair in merges]
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE
    assert field(reader, "tokenizer.ggml.add_bos_token") is False  # the tokenizer adds no BOS: nor may llama.cpp


@pytest.mark.parametrize(
    "dtype, matrix_type, file_type",
    [
        ("f16", gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        ("bf16", gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        ("q8_0", gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    ],
)
def test_dtypes_keep_norms_float32(tmp_path, dtype, matrix_type, file_type):
    folder = save_tiny_hybrid(tmp_path / "tiny")
    reader = gguf.GGUFReader(export_gguf(folder, tmp_path / f"tiny-{dtype}.gguf", dtype=dtype)["path"])
    by_name = tensors(reader)
    assert field(reader, "general.file_type") == file_type
    assert "output.weight" not in by_name  # tied: llama.cpp reuses token_embd
    assert by_name["blk.3.ffn_up.weight"].tensor_type == matrix_type
    assert by_name["token_embd.weight"].tensor_type == matrix_type
    assert by_name["blk.3.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    expected = ShishuForCausalLM.from_pretrained(folder).model.layers[2].mlp.up_proj.weight.detach().numpy()
    np.testing.assert_allclose(
        as_float32(by_name["blk.3.ffn_up.weight"]), expected, rtol=0, atol=np.abs(expected).max() / 64
    )


def test_biases_are_exported_permuted(tmp_path):
    folder = save_tiny_hybrid(tmp_path / "tiny", attention_bias=True, attention_output_bias=False, mlp_bias=True)
    model = ShishuForCausalLM.from_pretrained(folder)
    by_name = tensors(gguf.GGUFReader(export_gguf(folder, tmp_path / "tiny.gguf")["path"]))
    q_bias = model.model.layers[1].self_attn.q_proj.bias.detach()
    np.testing.assert_array_equal(by_name["blk.1.attn_q.bias"].data, permute_for_rope(q_bias, 4).numpy())
    assert "blk.1.attn_output.bias" not in by_name and "blk.1.attn_v.bias" in by_name
    assert "blk.3.ffn_down.bias" in by_name and "blk.3.attn_q.bias" not in by_name


def test_parent_exports_as_all_attention(tmp_path):
    folder = save_parent(tiny_llama(), tmp_path / "parent")
    with pytest.raises(ValueError, match="WordLevel model.*only byte-level BPE"):  # the tiny parent's tokenizer
        export_gguf(folder, tmp_path / "parent.gguf")
    tiny_bpe_tokenizer().save_pretrained(folder)
    # The parent's vocabulary (99) is smaller than the BPE's: refused by name, not written wrong.
    with pytest.raises(ValueError, match="does not fit the 99 embedding rows"):
        export_gguf(folder, tmp_path / "parent.gguf")
    folder = save_parent(tiny_llama(vocab_size=len(tiny_bpe_tokenizer())), tmp_path / "parent-bpe")
    tiny_bpe_tokenizer().save_pretrained(folder)
    reader = gguf.GGUFReader(export_gguf(folder, tmp_path / "parent.gguf")["path"])
    assert field(reader, "deci.attention.head_count") == [4] * 6
    assert field(reader, "deci.attention.head_count_kv") == [2] * 6


def test_refusals_name_layer_and_reason(tmp_path, capsys):
    with pytest.raises(
        ValueError, match="layer 0 is MLP-only: llama.cpp's deci reads the head size of all layers from layer 0"
    ):
        export_gguf(
            save_tiny_hybrid(tmp_path / "a", layer_types=["mlp", "full_attention"] * 3, share_groups=()),
            tmp_path / "a.gguf",
        )
    with pytest.raises(ValueError, match="rope_type 'linear': only unscaled RoPE"):
        export_gguf(
            save_tiny_hybrid(
                tmp_path / "c", rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}
            ),
            tmp_path / "c.gguf",
        )
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        export_gguf(save_tiny_hybrid(tmp_path / "d", hidden_act="gelu"), tmp_path / "d.gguf")
    big = tiny_hybrid()
    with torch.no_grad():
        big.model.layers[1].self_attn.q_proj.weight[0, 0] = 1e5  # beyond f16's largest value, 65504
    big.save_pretrained(tmp_path / "e")
    tiny_bpe_tokenizer().save_pretrained(tmp_path / "e")
    with pytest.raises(ValueError, match=r"blk\.1\.attn_q\.weight: a value of magnitude 1e\+05 overflows f16"):
        export_gguf(tmp_path / "e", tmp_path / "e.gguf", dtype="f16")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*tmp-*"))

    folder = save_tiny_hybrid(tmp_path / "tiny")
    assert shishu_main(["export-gguf", str(folder), "--out", str(tmp_path / "tiny.gguf"), "--dtype", "f16"]) == 0
    captured = capsys.readouterr()
    assert "GGUF (deci, f16)" in captured.out and "3 MLP-only layers without attention or KV cache" in captured.out
    assert "shishu export-gguf: layer 6/6: MLP-only, 0 heads" in captured.err
    assert shishu_main(["export-gguf", str(folder), "--out", str(tmp_path / "tiny.gguf")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert shishu_main(["export-gguf", str(tmp_path / "a"), "--out", str(tmp_path / "a.gguf")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress line: one line, no traceback
    assert error.startswith("shishu export-gguf: error: layer 0 is MLP-only") and error.endswith(
        "must be an attention layer"
    )


def test_pre_tokenizer_names():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert pre_tokenizer_name({"pre_tokenizer": byte_level}) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert (
        pre_tokenizer_name({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]}}) == "smollm"
    )
    with pytest.raises(ValueError, match="pre-tokenizer Metaspace is not one llama.cpp implements"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Metaspace"}})
    with pytest.raises(
        ValueError, match="pre-tokenizer ByteLevel is not"
    ):  # a prefix space changes every word's first token
        pre_tokenizer_name({"pre_tokenizer": {**byte_level, "add_prefix_space": True}})
