"""`shishu card`: render a checkpoint's model card from its evaluation results.

    shishu card DIR --results OUT/results.json [--repo-id ORG/NAME] [--name LABEL] [--out DIR]

Writes, each file atomically, into DIR (or --out): README.md (the card, `card_template.md` rendered with the
facts of `checkpoint_facts` and `card_context`, and `model-index` metadata), `.eval_results/*.yaml` (the scores
filed under a Hub benchmark, see `eval_results`) and eval_results.json (a copy of the results file naming the
model of the card). The results entry of the card is the one whose recorded weights hash like the folder's
(or the one --name gives, for a model evaluated from the Hub).
"""

import argparse
import os
import shlex
from pathlib import Path

import yaml

from ..evaluation import read_results
from ..evaluation.fidelity_cli import read_fidelity
from ..evaluation.results import reported_tasks
from ..io_utils import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    claim_output,
    final_name,
    final_path,
)
from .card_context import evaluation_facts, parent_facts, training_facts
from .checkpoint_facts import (
    checkpoint_facts,
    layout_rows,
    parent_kv_bytes_per_token,
    weights_sha256,
)
from .eval_results import (
    build_eval_result_entries,
    build_eval_results,
    evaluation_rows,
    official_benchmark,
    recorded_weights,
    select_model,
    task_identity,
)
from .public_records import publish_records, unpublished_paths


CARD_FILE = "README.md"
EVAL_RESULTS_DIR = ".eval_results"
RESULTS_COPY = "eval_results.json"
FIDELITY_COPY = "fidelity.json"


def public_fidelity(path: str | os.PathLike) -> dict:
    """A `shishu fidelity` report as a published card states it: the models by their labels, not this machine's
    paths."""
    report = read_fidelity(path)
    return {**report, **{role: {"label": report[role]["label"]} for role in ("model", "parent")}}


CARD_TAGS = ["shishulm", "hybrid", "mlp-only", "weight-sharing", "custom_code"]


def default_template() -> Path:
    """The card template shipped in the package (`$SHISHU_CARD_TEMPLATE` overrides it)."""
    if os.environ.get("SHISHU_CARD_TEMPLATE"):
        return Path(os.environ["SHISHU_CARD_TEMPLATE"]).expanduser()
    return Path(__file__).resolve().parent / "card_template.md"


def template_macro(name: str, template: str | os.PathLike | None = None):
    """One macro of the card template as a function (renders one paragraph without a whole card)."""
    import jinja2
    from jinja2 import nodes

    environment = jinja2.Environment()
    source = Path(template or default_template()).read_text(encoding="utf-8")
    macros = [node for node in environment.parse(source).find_all(nodes.Macro) if node.name == name]
    if not macros:
        raise ValueError(f"the card template has no macro {name!r}")
    code = environment.compile(nodes.Template(macros, lineno=1))
    module = environment.template_class.from_code(environment, code, environment.make_globals(None)).module
    return getattr(module, name)


def check_repo_id(repo_id: str, argument: str = "--repo-id") -> None:
    """`ValueError` unless `repo_id` is a valid Hub model repository id of the form ORG/NAME."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{argument} {repo_id!r} is not a valid repository id: {error}") from None
    if "/" not in repo_id:
        raise ValueError(f"{argument} {repo_id!r} must be ORG/NAME (or USER/NAME)")


def public_command(command: str, model_id: str, baseline_id: str | None) -> str:
    """The evaluation command as a reader can run it: the model and baseline by the names they are published
    under, results into `eval/`, never the folders of the machine that ran it."""
    words = shlex.split(command)
    replacements = {"--model": model_id, "--baseline": baseline_id, "--out": "eval"}
    for i, word in enumerate(words[:-1]):
        if replacements.get(word):
            words[i + 1] = replacements[word]
    return shlex.join(words)


# The newest transformers release the remote code's version matrix (tests/test_transformers_versions.py) checks;
# the package declares no upper bound, so the card names where testing stops.
NEWEST_TESTED_TRANSFORMERS = "5.25.0"


def supported_transformers_range() -> str:
    """The transformers releases the remote code is tested on: the installed package's requirement, and the newest
    release tested when the requirement has no upper bound."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    for line in requires("shishulm") or []:
        requirement = Requirement(line)
        if requirement.name == "transformers" and requirement.marker is None:
            lower_bounds_first = sorted(requirement.specifier, key=lambda spec: spec.operator.startswith("<"))
            declared = ",".join(str(spec) for spec in lower_bounds_first)
            if any(spec.operator.startswith("<") for spec in requirement.specifier):
                return declared
            return f"{declared},<={NEWEST_TESTED_TRANSFORMERS}"
    raise ValueError("the installed shishulm package declares no transformers requirement")


def _change(new: int | None, old: int | None) -> float | None:
    return (new - old) / old if new and old else None


def card_context(
    folder: Path,
    name: str,
    facts: dict,
    results: dict,
    model: dict,
    parent: dict,
    repo_id: str | None,
    fidelity: dict | None = None,
) -> dict:
    """Everything the template states, as values: names, counts, sizes, rows and flags."""
    parent_layers = parent.get("num_hidden_layers")
    parent_kv = parent_kv_bytes_per_token(facts["config"], parent_layers) if parent_layers else None
    load_id = repo_id or final_name(folder)
    other = next((m for m in results["models"] if m is not model), None)
    command = public_command(results["command"], load_id, parent.get("hub_id") or (other or {}).get("label"))
    # the folder a user exports the GGUF from: the Hub repository's name once downloaded, or this folder's own
    public_folder = repo_id.split("/")[-1] if repo_id else final_name(folder)
    return {
        "model_name": name,
        "is_shishu": facts["model_type"] == "shishu",
        "load_id": load_id,
        "transformers_range": supported_transformers_range(),
        "gguf": {"hub_id": repo_id, "folder": public_folder, "file": f"{public_folder}.gguf"},
        "layers": facts["layers"],
        "layout": layout_rows(facts["layer_types"], facts["share_groups"]),
        "architecture": facts["architecture"],
        "sizes": {
            "num_parameters": facts["num_parameters"],
            "parent_num_parameters": parent.get("num_parameters"),
            "parameter_change": _change(facts["num_parameters"], parent.get("num_parameters")),
            "kv_bytes_per_token": facts["kv_bytes_per_token"],
            "parent_kv_bytes_per_token": parent_kv,
            "kv_change": _change(facts["kv_bytes_per_token"], parent_kv),
        },
        "parent": parent,
        "training": training_facts(facts),
        "evaluation": evaluation_facts(results, model, command),
        "fidelity": fidelity,
    }


def render_card(
    folder: str | os.PathLike,
    results: dict,
    label: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template: str | os.PathLike | None = None,
    fidelity: dict | None = None,
):
    """Build the ModelCard and the `.eval_results` entries of `folder` from a results dict (and the chat fidelity
    report of `shishu fidelity`, when given)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    facts = checkpoint_facts(folder)
    model = select_model(results, folder, facts["weights_sha256"], label)
    parent = parent_facts(facts, results, model)
    license = (license or parent.get("license") or "").lower()
    if not license:
        raise ValueError(
            "cannot tell the parent's licence from the folder or the results; pass --license (e.g. apache-2.0)"
        )
    name = repo_id.split("/")[-1] if repo_id else (facts["conversion"] or {}).get("variant") or model["label"]
    card_data = ModelCardData(
        language=["en"],
        license=license,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=CARD_TAGS,
        base_model=parent.get("hub_id") or None,
        model_name=name,
        eval_results=build_eval_results(results, model),
    )
    template = Path(template) if template else default_template()
    if not template.is_file():
        raise FileNotFoundError(f"no card template at {template} (set SHISHU_CARD_TEMPLATE or pass --template)")
    context = card_context(folder, name, facts, results, model, parent, repo_id, fidelity)
    card = ModelCard.from_template(card_data, template_path=str(template), **context)
    return card, build_eval_result_entries(results, model), model


def write_card(
    folder: str | os.PathLike,
    results_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    label: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template: str | os.PathLike | None = None,
    fidelity_path: str | os.PathLike | None = None,
) -> Path:
    """Render and write README.md, .eval_results/*.yaml and eval_results.json into `out` (default: `folder`), and
    fidelity.json when a `shishu fidelity` report is given."""
    from huggingface_hub import eval_result_entries_to_yaml

    if repo_id is not None:
        check_repo_id(repo_id)
    out = Path(out) if out is not None else Path(folder)
    with claim_output(out, overwrite=True):  # the card files are written into the folder, which may exist
        if out.is_dir():
            check_writable(out)
        results = read_results(results_path)
        fidelity = public_fidelity(fidelity_path) if fidelity_path is not None else None
        card, entry_files, model = render_card(
            folder, results, label=label, repo_id=repo_id, license=license, template=template, fidelity=fidelity
        )
        out.mkdir(parents=True, exist_ok=True)
        # The copy says which of the evaluated models the card is for, so the pair can be checked anywhere.
        atomic_write_json(out / RESULTS_COPY, {**results, "card": {"model": model["label"], "repo_id": repo_id}})
        if fidelity is not None:
            atomic_write_json(out / FIDELITY_COPY, fidelity)
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
    from huggingface_hub import ModelCard

    folder = Path(folder)
    problems = [
        f"{folder} has no {required} (run `shishu card` first)"
        for required in (CARD_FILE, RESULTS_COPY)
        if not (folder / required).is_file()
    ]
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
    weights, recorded = weights_sha256(folder), recorded_weights(model)
    if weights and recorded and weights != recorded:
        problems.append(
            f"the weights in {folder} are not the weights that were evaluated as {label!r} (sha256 differs)"
        )
    for name, paths in unpublished_paths(folder).items():
        problems.append(
            f"{name} names local paths ({', '.join(sorted(set(paths))[:3])}); run `shishu card` to publish it"
        )
    problems += _model_index_problems(card, results, model)
    problems += _table_problems(card, results, model)
    problems += _entry_file_problems(folder / EVAL_RESULTS_DIR, results, model)
    return problems


def _model_index_problems(card, results: dict, model: dict) -> list[str]:
    """The card's `model-index`: one result per task, with the results' metric, value and shots."""
    problems = []
    found = {(result.dataset_type, result.dataset_config): result for result in card.data.eval_results or []}
    for task in reported_tasks(results, model):
        record = results["tasks"][task]
        identity = task_identity(task, record, model["scores"][task])
        value = model["scores"][task]["value"]
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
        shots = (result.dataset_args or {}).get("num_few_shot")
        if shots != record["num_fewshot"]:
            problems.append(f"README.md model-index: {task} shots {shots!r}, results say {record['num_fewshot']!r}")
    return problems + [f"README.md model-index has a result not in the results file: {key}" for key in found]


def _table_problems(card, results: dict, model: dict) -> list[str]:
    """The evaluation table: every task and mean row with the results' difference and paired standard error."""
    baseline = next((m for m in results["models"] if m is not model), None)
    if baseline is None:
        return []
    problems = []
    lines = [line for line in card.text.splitlines() if line.startswith("| ")]
    for row in evaluation_rows(results, model, baseline):
        cells = f"| {row['difference']} | {row['paired_se']} |"
        if not any(line.startswith(f"| {row['task']} | ") and line.endswith(cells) for line in lines):
            problems.append(
                f"README.md evaluation table: the {row['task']} row does not end with {cells} as the results say"
            )
    return problems


def _entry_file_problems(entry_dir: Path, results: dict, model: dict) -> list[str]:
    """`.eval_results/`: a file for each task run in full on a Hub benchmark, holding its score, and no other."""
    from huggingface_hub import parse_eval_result_entries

    problems = []
    present = {path.stem: path for path in entry_dir.glob("*.yaml")} if entry_dir.is_dir() else {}
    for task in reported_tasks(results, model):
        record = results["tasks"][task]
        value = model["scores"][task]["value"]
        hub = official_benchmark(record, model["scores"][task])
        if not hub:
            continue
        if task not in present:
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml is missing")
            continue
        try:
            entries = parse_eval_result_entries(yaml.safe_load(present.pop(task).read_text(encoding="utf-8")))
        except (KeyError, TypeError, AttributeError, yaml.YAMLError) as error:
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml is not a valid eval results file: {error!r}")
            continue
        expected = (hub["id"], hub["task_id"], value)
        if len(entries) != 1 or (entries[0].dataset_id, entries[0].task_id, entries[0].value) != expected:
            problems.append(f"{EVAL_RESULTS_DIR}/{task}.yaml does not hold {hub['id']}/{hub['task_id']} = {value!r}")
    return problems + [f"{EVAL_RESULTS_DIR}/{name}.yaml is not a task of the results file" for name in present]


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
    parser.add_argument("--template", help="card template (default: the one shipped in the package, card_template.md)")
    parser.add_argument(
        "--fidelity",
        metavar="FIDELITY_JSON",
        help="fidelity.json written by `shishu fidelity` (chat fidelity section)",
    )


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
        fidelity_path=args.fidelity,
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


__all__ = ["check_card", "check_repo_id", "render_card", "template_macro", "write_card"]
