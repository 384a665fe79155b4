"""Checks a saved ShishuLM through its remote code alone, under whatever transformers is importable.

Run as a script in a fresh process (`tests/test_transformers_versions.py` puts one transformers release first on
`PYTHONPATH`); the ShishuLM package itself is made unimportable. Prints one JSON object: the transformers version
and, per check, the measured figures. Exits non-zero if a model fails to load.

    python remote_code_checks.py FOLDER

FOLDER holds `hybrid/` (a ShishuLM with MLP-only layers and a shared pair, initialised large enough that attention
changes the logits), `all_attention/` + `llama/` (the same weights as ShishuLM and as `LlamaForCausalLM`) and
`reference.json` (the hybrid's logits as the saving release computed them).
"""

import json
import shutil
import sys
from pathlib import Path


sys.modules["modeling_shishu"] = None  # the package must not be needed: only the files next to the weights

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig, LlamaForCausalLM  # noqa: E402


NEW_TOKENS = 12


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def greedy(model, input_ids, attention_mask, **settings) -> list[list[int]]:
    output = model.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=model.config.pad_token_id,
        **settings,
    )
    return output[:, input_ids.shape[1] :].tolist()


def check_hybrid(folder: Path, reference: dict) -> dict:
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    results = {"module": type(model).__module__}
    input_ids = torch.tensor(reference["input_ids"])
    with torch.no_grad():
        full = model(input_ids).logits
        results["logits_vs_saving_release"] = max_diff(full, torch.tensor(reference["logits"]))
        # attention must matter, or a cache that is silently dropped would go unnoticed
        results["last_token_alone_vs_in_context"] = max_diff(model(input_ids[:, -1:]).logits[:, -1], full[:, -1])

        split = input_ids.shape[1] // 2
        out = model(input_ids[:, :split], use_cache=True)
        steps = [out.logits]
        for position in range(split, input_ids.shape[1]):
            out = model(input_ids[:, position : position + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
        results["incremental_vs_full"] = max_diff(torch.cat(steps, dim=1), full)

        prompt = input_ids[:1, :6]
        ones = torch.ones_like(prompt)
        tokens = {
            "no_cache": greedy(model, prompt, ones, use_cache=False),
            "dynamic_cache": greedy(model, prompt, ones, use_cache=True),
            "static_cache": greedy(model, prompt, ones, cache_implementation="static"),
        }
        results["greedy_tokens"] = tokens

        prompts = [input_ids[0, :5], input_ids[1, :9]]
        width = max(len(p) for p in prompts)
        padded = torch.full((2, width), model.config.pad_token_id)
        mask = torch.zeros((2, width), dtype=torch.long)
        for row, p in enumerate(prompts):
            padded[row, width - len(p) :] = p
            mask[row, width - len(p) :] = 1
        batched = greedy(model, padded, mask)
        singles = [greedy(model, p[None], torch.ones(1, len(p), dtype=torch.long))[0] for p in prompts]
        results["left_padded_batch"] = batched
        results["single_prompts"] = singles

        # a compiled static-cache step on a padded batch (what generate() does by itself on GPUs), then eager
        compile_config = CompileConfig(fullgraph=True)
        compile_config._compile_all_devices = True
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        results["compiled_static_cache"] = greedy(
            model, padded, mask, cache_implementation="static", compile_config=compile_config
        )
        results["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        results["eager_static_cache"] = greedy(model, padded, mask, cache_implementation="static")
    return results


def check_layout_mismatch_is_refused(folder: Path, scratch: Path) -> str:
    """Load a copy of `folder` whose config.json no longer shares the pair: the error message, or "" if it loads."""
    shutil.copytree(folder, scratch)
    config = json.loads((scratch / "config.json").read_text())
    config["mlp_share_groups"] = []
    (scratch / "config.json").write_text(json.dumps(config))
    try:
        AutoModelForCausalLM.from_pretrained(scratch, trust_remote_code=True)
    except ValueError as error:
        return str(error)
    return ""


def check_tokenizer_without_remote_code(folder: Path) -> dict:
    """`AutoTokenizer.from_pretrained(folder)` as most users call it: no `trust_remote_code` (stdin is closed, so
    transformers' question about the config's code gets no answer)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    trusted = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    text = "w4 w5 w98"
    return {
        "class": type(tokenizer).__name__,
        "same_ids_as_trusted": tokenizer(text).input_ids == trusted(text).input_ids,
    }


def check_transformers_conventions(folder: Path, input_ids: torch.Tensor) -> dict:
    """What transformers' common model tests expect of every model."""
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        base_output = model.model(input_ids, return_dict=False)
        model.config.return_dict = False
        config_output = model(input_ids)
        model.config.return_dict = True
    fresh = type(model).from_pretrained(None, config=model.config, state_dict={})
    return {
        "return_dict_false": type(base_output).__name__,
        "config_return_dict_false": type(config_output).__name__,
        "init_without_weights": type(fresh).__name__,
    }


def check_all_attention(shishu_folder: Path, llama_folder: Path, input_ids: torch.Tensor) -> dict:
    shishu = AutoModelForCausalLM.from_pretrained(shishu_folder, trust_remote_code=True).eval()
    llama = LlamaForCausalLM.from_pretrained(llama_folder).eval()
    with torch.no_grad():
        return {"logits_vs_llama": max_diff(shishu(input_ids).logits, llama(input_ids).logits)}


def main(folder: Path) -> None:
    torch.manual_seed(0)
    reference = json.loads((folder / "reference.json").read_text())
    report = {"transformers": transformers.__version__, "torch": torch.__version__}
    report["hybrid"] = check_hybrid(folder / "hybrid", reference)
    report["layout_mismatch_error"] = check_layout_mismatch_is_refused(folder / "hybrid", Path.cwd() / "edited")
    report["tokenizer_without_remote_code"] = check_tokenizer_without_remote_code(folder / "hybrid")
    report["conventions"] = check_transformers_conventions(folder / "hybrid", torch.tensor(reference["input_ids"]))
    report["all_attention"] = check_all_attention(
        folder / "all_attention", folder / "llama", torch.tensor(reference["input_ids"])
    )
    # on a line of its own: transformers prints its remote-code question without a newline
    print("\n" + json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
