"""The replication study (`modeling_shishu.training.ablations`) on a micro setting: two arms, a few steps."""

import json
import math
from pathlib import Path

import pytest
import yaml

from modeling_shishu.training import ablations


REPO_ROOT = Path(__file__).resolve().parents[1]
STUDY_DIR = REPO_ROOT / "recipes" / "ablations"


MICRO_SHAPE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    vocab_size=300,
)


@pytest.fixture(scope="module")
def micro_parent(tmp_path_factory):
    """A local Llama config folder standing in for the parent (no 135M download)."""
    from transformers import LlamaConfig

    folder = tmp_path_factory.mktemp("parent")
    LlamaConfig(**MICRO_SHAPE, tie_word_embeddings=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def micro_tokenizer(tmp_path_factory):
    """A 300-token byte-level BPE trained on a slice of the Shakespeare train split."""
    from modeling_shishu import assets

    texts = [text[:40_000] for text in assets.shakespeare_texts("train")[:4]]
    return ablations.train_tokenizer(300, tmp_path_factory.mktemp("tok") / "bpe", texts)


def _write_arm(folder: Path, name: str, parent: Path, **layout) -> str:
    recipe = {
        "config_name": str(parent),
        "num_mlp_layers": 0,
        "share": "none",
        "extra_mlp_layers": 0,
        "dataset_name": "shakespeare",
        "max_length": 32,
        "max_train_samples": 64,
        "max_eval_samples": 4,
        "seed": 7,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 3e-3,
        "warmup_steps": 1,
        "max_steps": 3,
        "logging_steps": 1,
        "save_steps": 3,
        "progress_bar": False,
        **layout,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return f"{name}.yaml"


def _write_study(folder: Path, arms: list[dict], **settings) -> Path:
    study = {
        "arms": arms,
        "seeds": [0, 1],
        "eval_blocks": 4,
        "decode_context": 16,
        "decode_steps": 2,
        "decode_repeats": 2,
        "num_threads": 2,
        **settings,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def _expected_parameters(attention_layers: int, owned_mlp_blocks: int) -> int:
    d, ffn, heads, kv, head_dim, vocab = 32, 64, 4, 2, 8, 300
    attention = 2 * d * heads * head_dim + 2 * d * kv * head_dim + d  # q, o, k, v + input_layernorm
    mlp_block = 3 * d * ffn + d  # gate, up, down + post_attention_layernorm
    return vocab * d + attention_layers * (attention + mlp_block) + owned_mlp_blocks * mlp_block + d


def test_micro_study_writes_table_plot_and_json(tmp_path, micro_parent, micro_tokenizer):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    arms = [
        {"name": "parent", "recipe": _write_arm(recipes, "parent", micro_parent), "label": "parent"},
        {
            "name": "pairs",
            "label": "top half shared",
            "recipe": _write_arm(recipes, "pairs", micro_parent, num_mlp_layers=2, share="pairs"),
        },
    ]
    study = ablations.Study.from_yaml(_write_study(recipes, arms))
    results_dir = tmp_path / "docs"
    results_dir.mkdir()
    (results_dir / "ablations.md").write_text(
        "# Study\n\nHand-written intro.\n\n## Conclusions\nkept\n", encoding="utf-8"
    )

    results = ablations.run_study(study, tmp_path / "runs", results_dir, tokenizer_dir=micro_tokenizer)

    saved = json.loads((results_dir / "ablations.json").read_text(encoding="utf-8"))
    assert [row["arm"] for row in saved["arms"]] == ["parent", "pairs"]
    parent, pairs = saved["arms"]
    # 4 attention layers vs 2 attention layers + one shared MLP block (layers 2 and 3).
    assert parent["unique_parameters"] == _expected_parameters(4, 0)
    assert pairs["unique_parameters"] == _expected_parameters(2, 1)
    assert pairs["share_groups"] == [[2, 3]] and pairs["layout"] == "2xA+2xM"
    # float32 cache: layers x (keys + values) x kv heads x head_dim x 4 bytes
    assert parent["kv_bytes_per_token"] == 4 * 2 * 2 * 8 * 4
    assert pairs["kv_bytes_per_token"] == 2 * 2 * 2 * 8 * 4
    assert pairs["kv_vs_parent"] == 0.5
    for row in saved["arms"]:
        assert len(row["bits_per_byte_per_seed"]) == 2
        assert all(0 < value < 20 for value in row["bits_per_byte_per_seed"])
        assert row["bits_per_byte_std"] > 0  # two init seeds give two different models
        assert row["train_tokens"] == 3 * 4 * 32
        assert row["decode_ms_per_token_median"] > 0
    # Same data order for every run: the first logged losses differ only through the initialisation.
    runs = saved["runs"]
    assert runs["parent"][0]["loss_curve"][0][0] == runs["pairs"][1]["loss_curve"][0][0] == 4 * 32
    held_out = runs["parent"][0]["held_out"]
    assert math.isclose(
        held_out["bits_per_byte"], held_out["loss"] * held_out["tokens"] / math.log(2) / held_out["bytes"]
    )

    assert (results_dir / "ablations.png").stat().st_size > 10_000
    markdown = (results_dir / "ablations.md").read_text(encoding="utf-8")
    assert markdown.startswith("# Study\n\nHand-written intro.")
    assert "## Conclusions\nkept" in markdown
    assert "| parent | 4xA |" in markdown and "| top half shared | 2xA+2xM (shared 2+3) |" in markdown

    # A second invocation reuses the finished runs and rewrites the same block in place.
    finished = tmp_path / "runs" / "pairs" / "seed-1" / "training_summary.json"
    stamp = finished.stat().st_mtime_ns
    again = ablations.run_study(study, tmp_path / "runs", results_dir, tokenizer_dir=micro_tokenizer)
    assert finished.stat().st_mtime_ns == stamp
    assert again["arms"][1]["bits_per_byte_mean"] == results["arms"][1]["bits_per_byte_mean"]
    assert (results_dir / "ablations.md").read_text(encoding="utf-8").count(ablations.RESULTS_START) == 1


def test_arms_must_share_data_and_trainer(tmp_path, micro_parent):
    arms = [
        {"name": "parent", "recipe": _write_arm(tmp_path, "parent", micro_parent)},
        {"name": "other", "recipe": _write_arm(tmp_path, "other", micro_parent, num_mlp_layers=2, learning_rate=1e-3)},
    ]
    study = ablations.Study.from_yaml(_write_study(tmp_path, arms))
    with pytest.raises(ValueError, match="learning_rate"):
        ablations.load_arm_recipes(study, tmp_path / "runs", [])


def test_parameter_matched_arm_is_checked(tmp_path, micro_parent, micro_tokenizer):
    from modeling_shishu.training.runner import load_tokenizer

    # Making the top 2 layers MLP-only and shared removes 2 attentions + 1 MLP block (12,384 parameters);
    # 3 extra layers (one more shared pair + an unshared block on top) add back 2 blocks (12,352).
    arms = [
        {"name": "parent", "recipe": _write_arm(tmp_path, "parent", micro_parent)},
        {
            "name": "matched",
            "match_parent_params": True,
            "recipe": _write_arm(
                tmp_path, "matched", micro_parent, num_mlp_layers=2, share="pairs", extra_mlp_layers=1
            ),
        },
    ]
    study = ablations.Study.from_yaml(_write_study(tmp_path, arms))
    recipes = ablations.load_arm_recipes(study, tmp_path / "runs", [])
    tokenizer = load_tokenizer(str(micro_tokenizer))
    with pytest.raises(ValueError, match=r"extra_mlp_layers=3 gives 46,720, but .* sets 1"):
        ablations.check_parameter_matching(study, recipes, tokenizer)
    _write_arm(tmp_path, "matched", micro_parent, num_mlp_layers=2, share="pairs", extra_mlp_layers=3)
    recipes = ablations.load_arm_recipes(study, tmp_path / "runs", [])
    ablations.check_parameter_matching(study, recipes, tokenizer)


def test_study_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("arms: []\nseedz: [1]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="seedz"):
        ablations.Study.from_yaml(path)
    path.write_text("arms: [{name: a, recipe: a.yaml}]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least two arms"):
        ablations.Study.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        ablations.Study.from_yaml(tmp_path / "missing.yaml")


def test_token_byte_lengths_count_utf8_bytes(micro_tokenizer):
    from modeling_shishu.training.runner import load_tokenizer

    tokenizer = load_tokenizer(str(micro_tokenizer))
    lengths = ablations.token_byte_lengths(tokenizer)
    text = "Wherefore art thou, Romeo? Ægir’s café — naïve.\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


@pytest.mark.slow
def test_committed_study_is_consistent_and_parameter_matched(tmp_path):
    """The committed arms share data and trainer settings, and the v2 arm matches the parent's count."""
    from transformers import PreTrainedTokenizerFast

    study = ablations.Study.from_yaml(STUDY_DIR / "study.yaml")
    assert [arm.name for arm in study.arms][0] == "parent"
    recipes = ablations.load_arm_recipes(study, tmp_path, [])
    # Only the special-token ids and the vocabulary size of the tokenizer enter the configs.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_stub(study.tokenizer_vocab_size),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    ablations.check_parameter_matching(study, recipes, tokenizer)
    layouts = {
        name: (args[0].num_mlp_layers, args[0].share, args[0].extra_mlp_layers) for name, args in recipes.items()
    }
    assert layouts == {
        "parent": (0, "none", 0),
        "third-mlp": (4, "none", 0),
        "third-mlp-pairs": (4, "pairs", 0),
        "third-mlp-pairs-extra": (4, "pairs", 5),
        "half-mlp-pairs": (6, "pairs", 0),
    }


def _byte_level_stub(vocab_size: int):
    """An untrained byte-level BPE with one special token (enough for config building)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.add_special_tokens(["<|endoftext|>"])
    return backend
