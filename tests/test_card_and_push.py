"""`shishu card` and `shishu push`: card round trip, .eval_results files, validation, dry run, refusals.

A tiny Llama parent (with the real SmolLM2 tokenizer) is converted with `convert_checkpoint`, both are
evaluated with the real lm-eval on three offline tasks, and the converted folder is carded and pushed
with --dry-run. The upload itself (`HfApi.upload_folder`) is the one step that cannot run here.
"""

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import parent_tokenizer, sha256, tiny_config_kwargs
from huggingface_hub import ModelCard, parse_eval_result_entries
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from modeling_shishu import evaluation
from modeling_shishu.cli import main as shishu_main
from modeling_shishu.conversion.convert import convert_checkpoint
from modeling_shishu.evaluation import read_results
from modeling_shishu.release import card as model_card
from modeling_shishu.release import push as publishing


TASKS = "boolq,social_iqa,offline_shakespeare"
REPO_ID = "shishu-test/tiny-m2"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(converted folder, results.json): tiny parent -> convert (top 2 of 6 layers, pairs) -> eval both."""
    root = tmp_path_factory.mktemp("pipeline")
    tokenizer = parent_tokenizer()
    torch.manual_seed(0)
    parent = LlamaForCausalLM(
        LlamaConfig(
            **tiny_config_kwargs(
                vocab_size=len(tokenizer),
                max_position_embeddings=4096,
                tie_word_embeddings=True,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    )
    parent.save_pretrained(root / "tiny-parent")
    tokenizer.save_pretrained(root / "tiny-parent")
    converted = convert_checkpoint(root / "tiny-parent", root / "tiny-m2", num_mlp_layers=2, share="pairs")
    argv = [
        "eval",
        "--model",
        str(converted),
        "--baseline",
        str(root / "tiny-parent"),
        "--tasks",
        TASKS,
        "--limit",
        "2",
        "--bootstrap-iters",
        "10",
        "--dtype",
        "float32",
        "--out",
        str(root / "eval"),
    ]
    assert shishu_main(argv) == 0
    return converted, with_parent_above_chance(root / "eval" / "results.json", root / "reported-results.json")


def with_parent_above_chance(results_path: Path, out: Path) -> Path:
    """The results as if the (random, tiny) parent answered every multiple-choice question right, far above chance:
    the case in which a card reports a task. Which tasks a real parent can do is measured in test_fidelity."""
    results = read_results(results_path)
    baseline = next(m for m in results["models"] if m["role"] == "baseline")
    for score in baseline["scores"].values():
        if score["chance"] is not None:
            documents = score["documents"]
            documents[score["metric"]] = [1.0] * len(documents["doc_id"])
            score.update(value=1.0, stderr=0.0, z_above_chance=10.0)
    results["comparison"] = evaluation.compare(results)
    out.write_text(json.dumps(results))
    return out


@pytest.fixture
def carded(evaluated, tmp_path):
    """A fresh copy of the converted folder with its card rendered for REPO_ID."""
    folder = tmp_path / "tiny-m2"
    shutil.copytree(evaluated[0], folder)
    model_card.write_card(folder, evaluated[1], repo_id=REPO_ID, license="apache-2.0")
    return folder


def test_card_round_trip(carded, evaluated):
    results = read_results(evaluated[1])
    model = next(m for m in results["models"] if m["role"] == "model")
    baseline = next(m for m in results["models"] if m["role"] == "baseline")
    card = ModelCard.load(carded / "README.md")
    assert card.data.license == "apache-2.0" and card.data.model_name == "tiny-m2"
    parsed = {(r.dataset_type, r.dataset_config): r for r in card.data.eval_results}
    assert len(parsed) == len(results["tasks"]) == 3
    for task, record in results["tasks"].items():
        result = parsed[(task, task)]  # a --limit run: filed under the task's own name, never a benchmark's id
        assert result.metric_value == model["scores"][task]["value"]  # exactly, not rounded
        assert result.metric_type == record["metric"] and result.dataset_args == {
            "num_few_shot": record["num_fewshot"]
        }
        assert f"({record['num_fewshot']}-shot)" in result.dataset_name
    assert parsed[("social_iqa", "social_iqa")].metric_type == "acc"
    assert not (carded / ".eval_results").exists() or not list((carded / ".eval_results").iterdir())
    assert model_card.check_card(carded) == []

    text = (carded / "README.md").read_text()
    # Layout, sizes and KV cache computed from the checkpoint: 4 attention layers, one shared MLP-only pair.
    assert "| 0-3 | decoder (attention + MLP) | own | yes |" in text
    assert "| 4+5 | MLP-only | one set per pair | none |" in text
    num_parameters = sum(t.numel() for t in load_file(carded / "model.safetensors").values())
    assert f"| unique parameters | {num_parameters:,} | {baseline['num_parameters']:,} |" in text
    assert (
        f"{2 * 4 * 2 * 8 * 2:,} B | {2 * 6 * 2 * 8 * 2:,} B | -33.3% |" in text
    )  # 2 x layers x kv heads x head_dim x bf16
    assert "None after conversion" in text and f'model_id = "{REPO_ID}"' in text
    assert "| tiny-parent | difference |" in text  # the baseline column
    # the range setup.cfg declares, up to the newest release the version matrix tests
    assert "tested on every transformers release\n`>=5.10.4,<=5.25.0`" in text
    assert json.loads((carded / "eval_results.json").read_text())["card"] == {"model": "tiny-m2", "repo_id": REPO_ID}
    # the share of the parent retained comes first, over the headline tasks
    assert text.index("### Share of the parent retained") < text.index("### Scores")
    assert "| **mean of the 2 headline tasks** |" in text


def test_card_reports_no_task_its_parent_does_at_chance(evaluated, tmp_path):
    """The real results of two random tiny models: every multiple-choice task is at chance for the parent, so the
    card's table, model-index and .eval_results hold only the bits-per-byte task, and name the others as unreported."""
    folder = tmp_path / "tiny-m2"
    shutil.copytree(evaluated[0], folder)
    raw = evaluated[1].parent / "eval" / "results.json"
    model_card.write_card(folder, full_run(raw, tmp_path), repo_id=REPO_ID, license="apache-2.0")
    card = ModelCard.load(folder / "README.md")
    assert [(r.dataset_type, r.dataset_config) for r in card.data.eval_results] == [
        ("offline_shakespeare", "offline_shakespeare")
    ]
    assert not list((folder / ".eval_results").glob("*.yaml"))
    text = card.text
    assert "Scored but not reported" in text and "boolq (" in text and "social_iqa (" in text
    assert "headline tasks** |" not in text and "| BoolQ" not in text  # no headline: only bits per byte is retained
    assert model_card.check_card(folder) == []


def test_card_shows_paired_differences_and_means(carded, evaluated, tmp_path, capsys):
    results = read_results(evaluated[1])
    rows = {row["task"]: row for row in results["comparison"]["rows"]}
    lines = (carded / "README.md").read_text().splitlines()
    assert "| task | metric | shots | examples | tiny-m2 | tiny-parent | difference | paired SE |" in lines
    social = rows["social_iqa"]
    cells = f"| {social['difference']:+.4f} | {social['paired_stderr']:.4f} |"
    assert any(line.startswith("| Social IQa (validation) |") and line.endswith(cells) for line in lines)
    shakespeare = rows["offline_shakespeare"]  # bits per byte pairs per document too
    cells = f"| {shakespeare['difference']:+.4f} | {shakespeare['paired_stderr']:.4f} |"
    assert any(line.startswith("| Shakespeare") and line.endswith(cells) for line in lines)

    # A suite mean becomes a row of its own: the same functions `shishu eval` uses, over two of the tasks.
    suite = evaluation.load_suite("offline").select(TASKS.split(","))
    suite.means = [evaluation.SuiteMean("two", "mean of two", ["social_iqa", "boolq"])]
    for model in results["models"]:
        model["means"] = evaluation.suite_means(model["scores"], suite)
    results["comparison"] = evaluation.compare(results)
    (mean,) = results["comparison"]["means"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    model_card.write_card(carded, tmp_path / "results.json", repo_id=REPO_ID, license="apache-2.0")
    row = next(line for line in (carded / "README.md").read_text().splitlines() if line.startswith("| mean of two |"))
    assert row.endswith(f"| {mean['difference']:+.4f} | {mean['paired_stderr']:.4f} |") and "| 4 |" in row
    assert model_card.check_card(carded) == []

    # A table that disagrees with the results is refused.
    readme = carded / "README.md"
    readme.write_text(readme.read_text().replace(f"| {mean['paired_stderr']:.4f} |", "| 0.0001 |"))
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    assert "evaluation table: the mean of two row does not end with" in capsys.readouterr().err


def full_run(results_path, tmp_path) -> Path:
    """The results as if every document had been scored: the case in which a score may carry a benchmark's id."""
    results = read_results(results_path)
    for model in results["models"]:
        for score in model["scores"].values():
            score["n_samples_total"] = score["n_samples"]
    path = tmp_path / "full-results.json"
    path.write_text(json.dumps(results))
    return path


def test_eval_results_files_only_for_full_benchmark_runs(carded, evaluated, tmp_path):
    results = read_results(full_run(evaluated[1], tmp_path))
    model_card.write_card(carded, tmp_path / "full-results.json", repo_id=REPO_ID, license="apache-2.0")
    model = next(m for m in results["models"] if m["role"] == "model")
    files = sorted(p.name for p in (carded / ".eval_results").iterdir())
    assert files == ["boolq.yaml", "social_iqa.yaml"]  # Shakespeare: no Hub benchmark
    for name in files:
        data = yaml.safe_load((carded / ".eval_results" / name).read_text())
        assert set(data[0]) == {"dataset", "value", "date", "notes"} and set(data[0]["dataset"]) == {"id", "task_id"}
        (entry,) = parse_eval_result_entries(data)
        task = name.removesuffix(".yaml")
        hub = results["tasks"][task]["hub_dataset"]
        assert (entry.dataset_id, entry.task_id) == (hub["id"], hub["task_id"])
        assert entry.value == model["scores"][task]["value"] and entry.date == results["date"]
        assert "0-shot, acc (accuracy), 2 examples;" in entry.notes  # every example of the (here tiny) run
    parsed = {(r.dataset_type, r.dataset_config) for r in ModelCard.load(carded / "README.md").data.eval_results}
    assert ("allenai/social_i_qa", "default") in parsed and ("aps/super_glue", "boolq") in parsed
    assert ("offline_shakespeare", "offline_shakespeare") in parsed
    assert model_card.check_card(carded) == []

    # A later --limit evaluation removes the files, and a push deletes them on the Hub too.
    model_card.write_card(carded, evaluated[1], repo_id=REPO_ID, license="apache-2.0")
    assert not list((carded / ".eval_results").glob("*.yaml")) and model_card.check_card(carded) == []
    upload = publishing.upload_folder_arguments(carded, publishing.list_upload_files(carded), REPO_ID)
    assert any(fnmatch.fnmatch(".eval_results/social_iqa.yaml", p) for p in upload["delete_patterns"])
    assert not any(name.startswith(".eval_results/") for name in upload["allow_patterns"])


def test_only_standard_protocol_tasks_name_a_benchmark():
    """The offline GSM8K draws its exemplars from test rows, and the offline SciQ is its validation split while lm-eval
    scores the test split: neither may be filed under the benchmark's id."""

    class TaskLoader(yaml.SafeLoader):  # lm-eval task files carry `!function` tags
        pass

    TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
    templates = evaluation.eval_root() / "tasks" / "offline"
    metadata = {
        path.stem: yaml.load(path.read_text(), Loader=TaskLoader).get("metadata", {})
        for path in templates.glob("*.yaml")
    }
    assert "hub_dataset" not in metadata["offline_gsm8k"]
    assert "hub_dataset" not in metadata["sciq"]
    assert metadata["arc_easy"]["hub_dataset"] == {"id": "allenai/ai2_arc", "task_id": "ARC-Easy"}


def test_card_needs_a_licence_and_the_evaluated_weights(evaluated, tmp_path):
    with pytest.raises(ValueError, match="pass --license"):
        model_card.write_card(evaluated[0], evaluated[1], out=tmp_path / "card")
    other = tmp_path / "other"
    shutil.copytree(evaluated[0], other)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 1 for k, v in weights.items()}, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="holds no scores for the weights"):
        model_card.write_card(other, evaluated[1], license="apache-2.0")


def test_licence_is_inherited_from_an_offline_parent(evaluated):
    results = read_results(evaluated[1])
    baseline = next(m for m in results["models"] if m["role"] == "baseline")
    baseline["fetched_from"] = {"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0"}
    card, _, _ = model_card.render_card(evaluated[0], results)
    assert card.data.license == "apache-2.0" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_push_dry_run_validates_and_lists_the_files(carded, evaluated, tmp_path, capsys):
    model_card.write_card(carded, full_run(evaluated[1], tmp_path), repo_id=REPO_ID, license="apache-2.0")
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "loads in a fresh process as ShishuForCausalLM (shishu" in out
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_shishu.py",
        "configuration_shishu.py",
        "README.md",
        "eval_results.json",
        ".eval_results/social_iqa.yaml",
        "tokenizer.json",
        "conversion.json",
    ):
        assert f"  {name} " in out, name
    assert "dry run: nothing uploaded" in out and f"-> https://huggingface.co/{REPO_ID}" in out
    listed = dict(publishing.list_upload_files(carded))
    assert listed["model.safetensors"] == (carded / "model.safetensors").stat().st_size


def test_push_refuses_card_results_mismatch(carded, evaluated, tmp_path, capsys):
    model_card.write_card(carded, full_run(evaluated[1], tmp_path), repo_id=REPO_ID, license="apache-2.0")
    readme = carded / "README.md"
    card = ModelCard.load(readme)
    card.data.eval_results[0].metric_value += 0.25
    card.save(readme)
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "card and results disagree" in error and "README.md model-index: boolq" in error

    model_card.write_card(carded, carded / "eval_results.json", repo_id=REPO_ID, license="apache-2.0")  # repair
    entry = carded / ".eval_results" / "social_iqa.yaml"
    entry.write_text(entry.read_text().replace("value: ", "value: 7"))
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    assert ".eval_results/social_iqa.yaml does not hold" in capsys.readouterr().err


def test_push_refuses_bad_results_file(carded, capsys):
    (carded / "eval_results.json").write_text('{"format": "something-else"}')
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "eval_results.json is not a `shishu eval` results file" in error and "Traceback" not in error


def test_push_refuses_other_repo_pickles_and_changed_weights(carded, capsys):
    assert shishu_main(["push", str(carded), "--repo-id", "someone/else", "--dry-run"]) == 2
    assert "rendered for repo id 'shishu-test/tiny-m2', not 'someone/else'" in capsys.readouterr().err
    assert shishu_main(["push", str(carded), "--repo-id", "not a repo id", "--dry-run"]) == 2
    assert "not a valid repository id" in capsys.readouterr().err

    (carded / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    assert "refusing to publish pickle files (safetensors only): pytorch_model.bin" in capsys.readouterr().err
    (carded / "pytorch_model.bin").unlink()

    weights = load_file(carded / "model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, carded / "model.safetensors", metadata={"format": "pt"})
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    assert "are not the weights that were evaluated as 'tiny-m2'" in capsys.readouterr().err


def test_push_refuses_a_folder_that_fails_to_load(carded, capsys):
    # The folder's own remote code is what a user downloads; break it and the fresh process must fail.
    code = carded / "modeling_shishu.py"
    code.write_text(code.read_text().replace("class ShishuForCausalLM(", "class ShishuForCausalLMRenamed("))
    push = ["push", str(carded), "--repo-id", REPO_ID, "--dry-run", "--allow-stale-remote-code"]
    assert shishu_main(push) == 2
    error = capsys.readouterr().err
    assert "fails to load with trust_remote_code=True in a fresh process" in error and "ShishuForCausalLM" in error
    assert sha256(carded / "model.safetensors")  # nothing was modified by the refusal


def test_card_states_the_training_record(evaluated, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(evaluated[0], folder)
    # The records `modeling_shishu.training` writes next to a trained model (values from a short run).
    (folder / "training_summary.json").write_text(
        json.dumps(
            {
                "stage": "distill",
                "steps": 30,
                "world_size": 2,
                "mixed_precision": "no",
                "tokens_seen": 245760,
                "first_loss": 3.5,
                "final_loss": 2.25,
                "final_eval": {"eval_loss": 2.5, "eval_kl": 0.75},
            }
        )
    )
    (folder / "training_config.json").write_text(
        json.dumps(
            {
                "dataset_name": "shakespeare",
                "train_split": "train",
                "teacher_name_or_path": "smollm2-135m",
                "kl_weight": 1.0,
                "lm_weight": 0.1,
                "temperature": 1.0,
                "learning_rate": 1e-4,
                "seed": 42,
            }
        )
    )
    card, _, _ = model_card.render_card(folder, read_results(evaluated[1]), license="apache-2.0")
    text = str(card)
    assert "- Stage: distill, 30 optimizer steps, 245,760 tokens on 2 process(es), mixed precision no." in text
    assert "- Data: `shakespeare`, split `train`." in text and "Teacher: `smollm2-135m` (KL weight 1.0" in text
    assert "Training loss: 3.5000 at the first logged step, 2.2500 at the last." in text
    assert "eval_loss 2.5000, eval_kl 0.7500" in text and "None after conversion" not in text


def test_card_names_hub_ids_and_final_folder_names_never_local_paths(evaluated, tmp_path, capsys):
    from modeling_shishu.io_utils import atomic_directory

    results = read_results(evaluated[1])
    teacher = tmp_path / "cache" / "parents" / "smollm2-135m"
    teacher.mkdir(parents=True)
    (teacher / "fetch.json").write_text(json.dumps({"hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    with atomic_directory(tmp_path / "release") as tmp:  # what `shishu demo` does: the card is written inside
        for item in evaluated[0].iterdir():
            shutil.copy2(item, tmp / item.name)
        (tmp / "training_summary.json").write_text(json.dumps({"stage": "distill", "steps": 2, "world_size": 1}))
        (tmp / "training_config.json").write_text(
            json.dumps(
                {"dataset_mixture": {"sharegpt": 0.1, "shakespeare": 1.0}, "teacher_name_or_path": str(teacher)}
            )
        )
        card, _, _ = model_card.render_card(tmp, results, license="apache-2.0")
        assert shishu_main(["card", str(tmp), "--results", str(evaluated[1]), "--license", "apache-2.0"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'release' / 'README.md'}" in printed and ".tmp-" not in printed  # the log, too
    text = str(card)
    assert 'model_id = "release"' in text and ".tmp-" not in text
    assert "Teacher: `HuggingFaceTB/SmolLM2-135M-Instruct`" in text and str(tmp_path) not in text
    # the records published with the card name the teacher by Hub id and folders by name, and push checks that
    assert (
        shishu_main(["card", str(tmp_path / "release"), "--results", str(evaluated[1]), "--license", "apache-2.0"])
        == 0
    )
    published = tmp_path / "release"
    assert (
        json.loads((published / "training_config.json").read_text())["teacher_name_or_path"]
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    for name in ("conversion.json", "eval_results.json", "training_config.json"):
        assert str(tmp_path) not in (published / name).read_text() and "/tmp" not in (published / name).read_text(), (
            name
        )
    (published / "training_config.json").write_text(json.dumps({"teacher_name_or_path": str(teacher)}))
    assert model_card.check_card(published) == [
        f"training_config.json names local paths ({teacher}); run `shishu card` to publish it"
    ]
    # the command that reproduces the scores names published models, not the folders evaluated here
    assert (
        str(evaluated[0].parent) not in text
        and "--model release --baseline tiny-parent" in text
        and "--out eval" in text
    )
    assert "Data: `sharegpt` (0.1 of its documents), `shakespeare` (1 of its documents)" in text
    assert "research" in text.lower() and "Public-domain texts" in text  # each corpus's licence terms
    # how to run it in llama.cpp: exported from the folder under its final name
    assert "shishu export-gguf release --out release.gguf" in text and 'Llama("release.gguf"' in text
    hub_text = str(model_card.render_card(evaluated[0], results, repo_id="someone/shishu-x", license="apache-2.0")[0])
    assert (
        "hf download someone/shishu-x --local-dir shishu-x" in hub_text
        and "llama-cli -m q8_0-shishu-x.gguf -fa on" in hub_text
    )


def test_architecture_summary_says_where_the_mlp_only_blocks_are():
    from modeling_shishu.release.card import template_macro
    from modeling_shishu.release.checkpoint_facts import layer_counts

    summary = template_macro("architecture_summary")  # the template's paragraph, rendered on its own

    def _architecture_summary(facts):
        return summary(layer_counts(facts["layer_types"], facts["share_groups"]))

    def facts(layer_types, share_groups):
        return {"layer_types": layer_types, "share_groups": share_groups}

    A, M = "full_attention", "mlp"
    top = _architecture_summary(facts([A, A, A, A, M, M], [[4, 5]]))
    assert top.startswith("4 decoder blocks") and "followed by 2 MLP-only blocks in 1 group of adjacent blocks" in top
    mixed = _architecture_summary(facts([A, M, M, A, A, M], [[1, 2]]))
    assert "interleaved with 3 MLP-only blocks, 2 of which run in 1 group that" in mixed
    assert "Llama architecture" in _architecture_summary(facts([A, A], []))


def test_push_refuses_remote_code_this_version_did_not_write(carded, capsys):
    code = carded / "modeling_shishu.py"
    code.write_text(code.read_text() + "\n# an edit made after saving\n")
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "modeling_shishu.py in" in error and "differ from the remote code this version of shishulm writes" in error
    assert "Traceback" not in error
    (carded / "configuration_shishu.py").unlink()
    assert publishing.stale_remote_code(carded) == ["configuration_shishu.py", "modeling_shishu.py"]
    code.write_text(code.read_text().replace("\n# an edit made after saving\n", ""))
    (carded / "configuration_shishu.py").write_bytes(
        (Path(publishing.__file__).parents[1] / "configuration_shishu.py").read_bytes()
    )
    assert publishing.stale_remote_code(carded) == []
    assert shishu_main(["push", str(carded), "--repo-id", REPO_ID, "--dry-run"]) == 0
