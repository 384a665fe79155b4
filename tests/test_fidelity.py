"""What a model keeps of its parent: paired ratios, the chat fidelity measures and `% retained`.

A model identical to its parent keeps exactly everything (100% retained, KL 0, agreement 100%, standard error 0);
a model with the attention of four middle layers of the real parent dropped (no fitting) keeps significantly less.
"""

import json

import pytest
import torch
from conftest import parent_tokenizer, tiny_config_kwargs

from modeling_shishu import evaluation
from modeling_shishu.cli import main as shishu_main
from modeling_shishu.evaluation.fidelity import assistant_spans, chat_fidelity
from modeling_shishu.evaluation.results import paired_comparison
from modeling_shishu.evaluation.statistics import paired_ratio


CONVERSATIONS = [
    [
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "An apple."},
        {"role": "user", "content": "And a colour?"},
        {"role": "assistant", "content": "Blue, like the sky."},
    ],
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "It is 4."}],
]


def tiny_llama_with_parent_tokenizer(folder, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = parent_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(**tiny_config_kwargs(vocab_size=len(tokenizer), max_position_embeddings=1024))
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_paired_ratio_is_exact_for_identical_models_and_the_delta_method_otherwise():
    assert paired_ratio([1.0, 0.0, 1.0], [1.0, 0.0, 1.0]) == (1.0, 0.0)
    x, y = [1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]
    ratio, stderr = paired_ratio(x, y)
    assert ratio == 1.0
    # d_i = x_i - r y_i = [0, -1, 0, 1]: sd 0.8165 / sqrt(4) / mean(y) 0.75
    assert stderr == pytest.approx((2 / 3) ** 0.5 / 2 / 0.75)
    with pytest.raises(ValueError, match="one numerator and one denominator"):
        paired_ratio([1.0], [1.0, 2.0])


def test_identical_documents_keep_exactly_everything():
    documents = {"doc_id": [0, 1, 2, 3], "acc": [1.0, 0.0, 1.0, 1.0]}
    same = paired_comparison(documents, documents, {"metric": "acc", "higher_is_better": True})
    assert (same["difference"], same["stderr"], same["retained"], same["retained_stderr"]) == (0.0, 0.0, 1.0, 0.0)
    text = {"doc_id": [0, 1], "loglikelihood": [-30.0, -12.5], "bytes": [40, 20]}
    same = paired_comparison(text, text, {"metric": "bits_per_byte", "higher_is_better": False})
    assert (same["difference"], same["retained"], same["retained_stderr"]) == (0.0, 1.0, 0.0)
    worse = paired_comparison(
        {**text, "loglikelihood": [-33.0, -15.0]}, text, {"metric": "bits_per_byte", "higher_is_better": False}
    )
    assert worse["retained"] == pytest.approx(42.5 / 48.0) and worse["difference"] > 0
    with pytest.raises(ValueError, match="different documents"):
        paired_comparison(
            {"doc_id": [0, 9], "acc": [1.0, 0.0]}, documents | {"doc_id": [0, 1, 2, 5]}, {"metric": "acc"}
        )


def test_assistant_spans_cover_exactly_the_assistant_turns():
    tokenizer = parent_tokenizer()
    ids, spans = assistant_spans(tokenizer, CONVERSATIONS[0], max_length=1024)
    texts = [tokenizer.decode(ids[start:end]) for start, end in spans]
    assert texts == ["An apple.<|im_end|>\n", "Blue, like the sky.<|im_end|>\n"]
    _, cut = assistant_spans(tokenizer, CONVERSATIONS[0], max_length=spans[1][0] + 2)
    assert cut == [spans[0], (spans[1][0], spans[1][0] + 2)]  # a turn past the cut is scored up to it


def test_a_model_identical_to_its_parent_has_kl_0_and_full_agreement(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tiny_llama_with_parent_tokenizer(tmp_path / "a", seed=0)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    parent = AutoModelForCausalLM.from_pretrained(folder).eval()
    same = chat_fidelity(model, parent, parent_tokenizer(), CONVERSATIONS, max_length=512)
    assert same["retained"] == 1.0 and same["kl_per_token"] == 0.0 and same["top1_agreement"] == 1.0
    assert same["retained_stderr"] == same["kl_per_token_stderr"] == same["top1_agreement_stderr"] == 0.0
    assert same["model_bits_per_byte"] == same["parent_bits_per_byte"] > 0
    other = AutoModelForCausalLM.from_pretrained(tiny_llama_with_parent_tokenizer(tmp_path / "b", seed=1)).eval()
    different = chat_fidelity(other, parent, parent_tokenizer(), CONVERSATIONS, max_length=512)
    assert different["kl_per_token"] > 0 and different["top1_agreement"] < 1.0 and different["retained"] != 1.0


def test_fidelity_command_writes_the_report_and_the_greedy_answers(tmp_path, capsys):
    folder = tiny_llama_with_parent_tokenizer(tmp_path / "a", seed=0)
    out = tmp_path / "fidelity"
    argv = ["fidelity", "--model", str(folder), "--parent", str(folder), "--out", str(out), "--dtype", "float32"]
    assert shishu_main([*argv, "--conversations", "3", "--max-length", "256", "--max-new-tokens", "4"]) == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert report["measures"]["kl_per_token"] == 0.0 and report["settings"]["dtype"] == "float32"
    assert len(report["greedy"]) == 5 and all(row["parent"] == row["model"] for row in report["greedy"])
    assert "| top-1 agreement with the parent | 100.00% |" in (out / "fidelity.md").read_text()
    assert shishu_main(argv) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_parent_with_dropped_attention_is_retained_significantly_below_100(tmp_path):
    """The real parent against itself with the attention of layers 13-16 dropped and nothing fitted."""
    damaged = tmp_path / "damaged"
    convert = ["convert", "--parent", "smollm2-135m", "--mlp-layers", "4", "--layers", "13,14,15,16"]
    assert shishu_main([*convert, "--share", "none", "--no-fit", "--out", str(damaged)]) == 0
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(damaged), "--baseline", "smollm2-135m", "--suite", "offline"]
    argv += [
        "--tasks",
        "arc_easy,lambada_openai",
        "--task-limit",
        "arc_easy=150",
        "--task-limit",
        "lambada_openai=100",
    ]
    assert shishu_main([*argv, "--out", str(out)]) == 0
    retained = evaluation.read_results(out / "results.json")["comparison"]["retained"]
    assert retained["tasks"] == ["arc_easy", "lambada_openai"]  # the parent is far above chance on both
    assert retained["mean"] + 2 * retained["stderr"] < 1.0, retained
