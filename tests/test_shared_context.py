"""`SharedContextLM` gives lm-eval's own numbers: the same log-likelihood and greedy flag for every request,
the same acc / acc_norm, with one forward pass per question instead of one per choice.

Both sides run the real lm-eval (`simple_evaluate`) on the real offline benchmark data with tiny float32 models
whose attention matters (`initializer_range` 0.2), so a wrong mask or wrong positions change the numbers.
"""

import pytest
import torch
from conftest import parent_tokenizer, tiny_config_kwargs
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from transformers import AutoConfig, AutoModelForCausalLM

from modeling_shishu import ShishuConfig, ShishuForCausalLM, evaluation
from modeling_shishu.evaluation.shared_context import SharedContextLM


# lm-eval's own multiple-choice tasks on the offline data: 3, 4, 2 and 2 choices sharing one context
MULTIPLE_CHOICE = ["social_iqa", "hellaswag", "piqa", "boolq"]
DOCS = 6

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(kind: str, path, tokenizer):
    special = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    common = tiny_config_kwargs(
        vocab_size=len(tokenizer), num_hidden_layers=4, max_position_embeddings=4096, initializer_range=0.2, **special
    )
    torch.manual_seed(0)
    if kind == "shishu":
        model = ShishuForCausalLM(
            ShishuConfig(**common, layer_types=["full_attention"] * 2 + ["mlp"] * 2, mlp_share_groups=[[2, 3]])
        )
    else:
        model_type, _, variant = kind.partition("-")
        extra = {"sliding_window": 4096 if variant == "sliding" else None} if model_type == "mistral" else {}
        config = AutoConfig.for_model(model_type, **common, **extra)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager" if variant == "eager" else "sdpa")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_lm_eval(lm, tasks, limit=DOCS):
    task_manager = evaluation.build_task_manager(evaluation.load_suite("offline"))
    return simple_evaluate(
        model=lm, tasks=tasks, task_manager=task_manager, limit=limit, log_samples=True, bootstrap_iters=0
    )


def assert_same_numbers(plain, shared, tasks):
    for task in tasks:
        metrics = [key.split(",")[0] for key in plain["results"][task] if key in ("acc,none", "acc_norm,none")]
        assert "acc" in metrics, task
        for metric in metrics:
            key = f"{metric},none"
            assert shared["results"][task][key] == plain["results"][task][key], (task, metric)
        for a, b in zip(plain["samples"][task], shared["samples"][task], strict=True):
            assert a["doc_id"] == b["doc_id"] and [a[m] for m in metrics] == [b[m] for m in metrics]
            for (ll_a, greedy_a), (ll_b, greedy_b) in zip(
                (r[0] for r in a["resps"]), (r[0] for r in b["resps"]), strict=True
            ):
                assert ll_b == pytest.approx(ll_a, abs=1e-4) and greedy_b == greedy_a, (task, a["doc_id"])


@pytest.mark.parametrize("kind", ["shishu", "llama", "llama-eager", "qwen2", "mistral"])
def test_shared_context_gives_lm_evals_numbers(kind, tmp_path):
    path = str(tiny_model(kind, tmp_path / kind, parent_tokenizer()))
    plain = run_lm_eval(
        HFLM(pretrained=path, dtype="float32", batch_size=4, device="cpu", trust_remote_code=True), MULTIPLE_CHOICE
    )
    lm = SharedContextLM(pretrained=path, dtype="float32", batch_size=4, device="cpu", trust_remote_code=True)
    shared = run_lm_eval(lm, MULTIPLE_CHOICE)
    assert_same_numbers(plain, shared, MULTIPLE_CHOICE)
    requests = sum(len(sample["resps"]) for task in MULTIPLE_CHOICE for sample in shared["samples"][task])
    # One row per question, every request on the shared path.
    assert lm.stats == {
        "questions": DOCS * len(MULTIPLE_CHOICE),
        "requests": requests,
        "tokens": lm.stats["tokens"],
        "plain_requests": 0,
    }
    assert requests > 2 * lm.stats["questions"]


def test_other_requests_and_models_keep_lm_evals_path(tmp_path):
    """Rolling log-likelihoods (held-out Shakespeare) and a model with a sliding window go through HFLM."""
    tokenizer = parent_tokenizer()
    path = str(tiny_model("shishu", tmp_path / "shishu", tokenizer))
    tasks = ["boolq", "offline_shakespeare"]
    lm = SharedContextLM(pretrained=path, dtype="float32", batch_size=4, device="cpu")
    shared = run_lm_eval(lm, tasks, limit=2)
    plain = run_lm_eval(HFLM(pretrained=path, dtype="float32", batch_size=4, device="cpu"), tasks, limit=2)
    assert (
        shared["results"]["offline_shakespeare"]["bits_per_byte,none"]
        == plain["results"]["offline_shakespeare"]["bits_per_byte,none"]
    )
    assert lm.stats["questions"] == 2 and lm.stats["plain_requests"] > 0

    sliding = str(tiny_model("mistral-sliding", tmp_path / "sliding", tokenizer))
    lm = SharedContextLM(pretrained=sliding, dtype="float32", batch_size=4, device="cpu")
    assert not lm.shares_contexts()
    run_lm_eval(lm, ["boolq"], limit=2)
    assert lm.stats["questions"] == 0
