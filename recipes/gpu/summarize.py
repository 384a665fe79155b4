"""The figures of one `run_gpu_checks.sh` run as markdown: steps, tests, benchmark, pretraining.

    python recipes/gpu/summarize.py OUT_DIR > OUT_DIR/summary.md

Reads what the steps left in OUT_DIR and reports what is there; a missing or broken file is one line.
"""

import json
import statistics
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def steps_section(out: Path) -> list[str]:
    lines = ["## Steps", "", "| step | exit code | seconds | limit |", "| --- | --- | --- | --- |"]
    for record in read_jsonl(out / "steps.jsonl"):
        code = record["rc"]
        note = " (timed out)" if code in (124, 137) else f" ({record['skipped']})" if record.get("skipped") else ""
        lines.append(f"| {record['step']} | {code}{note} | {record['seconds']} | {record['limit']} |")
    return lines


def environment_section(out: Path) -> list[str]:
    env = json.loads((out / "environment.json").read_text())
    device = f"{env['gpu']} ({env['gpu_memory_gib']:.0f} GiB, CUDA {env['cuda']})" if env.get("gpu") else "CPU"
    return [
        f"Device: {device}; torch {env['torch']}, transformers {env['transformers']}, accelerate {env['accelerate']}, "
        f"huggingface-hub {env['huggingface_hub']}, tokenizers {env['tokenizers']}, flash-attn 2 "
        f"{'installed' if env['flash_attn_2'] else 'not installed'}."
    ]


def tests_section(out: Path) -> list[str]:
    suite = ElementTree.parse(out / "test_cuda.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    lines = [
        "## tests/test_cuda.py",
        "",
        f"{counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']} passed, {counts['failures']} failed, "
        f"{counts['errors']} errors, {counts['skipped']} skipped ({float(suite.get('time', 0)):.0f} s).",
    ]
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                lines.append(f"- {kind}: `{case.get('name')}`: {(element.get('message') or '').splitlines()[0][:200]}")
    return lines


def bench_section(out: Path) -> list[str]:
    report = json.loads((out / "bench.json").read_text())
    machine, models = report["machine"], report["models"]
    shishu, baseline = models["shishu"], models["baseline"]
    lines = [
        "## shishu bench (random weights)",
        "",
        f"{machine.get('device_name', machine['processor'])}; {report['settings']['dtype']}; {machine['timer']}; "
        f"copy bandwidth {machine['memory_bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s; torch {machine['torch']}, "
        f"transformers {machine['transformers']}; {report['seconds']:.0f} s.",
        f"Baseline: {baseline['num_hidden_layers']} layers, {baseline['unique_parameters']:,} parameters; ShishuLM: "
        f"{shishu['attention_layers']} attention + {shishu['mlp_layers']} MLP-only layers, share groups "
        f"{shishu['mlp_share_groups']}, {shishu['unique_parameters']:,} parameters.",
        "",
        "| mode | batch | context | decode ms/token baseline | ShishuLM | ratio | tokens/s ShishuLM | BW% baseline / ShishuLM "
        "| bytes-read ratio | prefill ms baseline | ShishuLM | ratio | kernels / step baseline / ShishuLM | peak MiB baseline / ShishuLM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = {(r["model"], r["mode"], r["batch"], r["context"]): r for r in report["inference"]}
    for mode, batch, context in sorted({(r["mode"], r["batch"], r["context"]) for r in report["inference"]}):
        b, s = rows[("baseline", mode, batch, context)], rows[("shishu", mode, batch, context)]
        bd, sd = b["decode_per_token"]["median_ms"], s["decode_per_token"]["median_ms"]
        bp, sp = b["prefill"]["median_ms"], s["prefill"]["median_ms"]
        kernels = " / ".join(str(r["decode_kernels"]["kernels"]) for r in (b, s)) if "decode_kernels" in b else "-"
        peak = " / ".join(f"{r['peak_bytes'] / 2**20:,.0f}" for r in (b, s)) if "peak_bytes" in b else "-"
        lines.append(
            f"| {mode} | {batch} | {context} | {bd:.3f} | {sd:.3f} | {bd / sd:.3f} | {s['tokens_per_s']:,.0f} | "
            f"{b['fraction_of_bandwidth_limit']:.0%} / {s['fraction_of_bandwidth_limit']:.0%} | "
            f"{b['bytes_read_per_step'] / s['bytes_read_per_step']:.3f} | {bp:.2f} | {sp:.2f} | {bp / sp:.3f} | {kernels} | {peak} |"
        )
    settings, training = report["settings"], report["training"]
    b, s = training["baseline"], training["shishu"]

    def mfu(result):
        return f"{result['mfu']:.1%}" if result.get("mfu") is not None else "-"

    lines += [
        "",
        f"Training step (forward + backward, {settings['train_batch']} x {settings['train_seq_len']} tokens"
        f"{', compiled' if settings['train_compile'] else ''}): baseline {b['step']['median_ms']:.1f} ms, "
        f"{b['tokens_per_s']:,.0f} tokens/s, MFU {mfu(b)}; ShishuLM {s['step']['median_ms']:.1f} ms, "
        f"{s['tokens_per_s']:,.0f} tokens/s, MFU {mfu(s)}; tokens/s ratio {s['tokens_per_s'] / b['tokens_per_s']:.3f} "
        f"(FLOPs ratio {b['flops'] / s['flops']:.3f}); peak memory {b['peak_bytes'] / 2**20:,.0f} vs "
        f"{s['peak_bytes'] / 2**20:,.0f} MiB.",
    ]
    compile_rows = [r for r in report["inference"] if "compile_seconds" in r]
    if compile_rows or "compile_seconds" in b:
        lines.append(
            "Compile seconds: "
            + ", ".join(
                f"{r['model']} decode b{r['batch']}/{r['context']} {r['compile_seconds']:.0f}" for r in compile_rows
            )
            + "".join(
                f", {role} training {training[role]['compile_seconds']:.0f}"
                for role in ("baseline", "shishu")
                if "compile_seconds" in training[role]
            )
        )
    profiled = [r for r in report["inference"] if "decode_kernels" in r]
    if profiled:
        lines += ["", "Longest kernels of one decode step:"]
        for r in profiled:
            top = ", ".join(
                f"{k['name'][:60]} x{k['count']} {k['ms']:.3f} ms" for k in r["decode_kernels"]["longest_kernels"][:3]
            )
            skips = f", {r['cudagraph_skips']} CUDA-graph skips" if "cudagraph_skips" in r else ""
            lines.append(
                f"- {r['model']} {r['mode']} b{r['batch']}/{r['context']}{skips}: {r['decode_kernels']['kernels']} kernels, "
                f"{r['decode_kernels']['kernel_ms']:.3f} ms of kernels, {r['decode_kernels']['kernel_launches']} kernel / "
                f"{r['decode_kernels']['graph_launches']} graph launches; {top}"
            )
    return lines


def pretrain_section(out: Path) -> list[str]:
    records = [r for r in read_jsonl(out / "pretrain" / "metrics.jsonl") if r.get("loss") is not None]
    lines = ["## Pretraining recipe (config_gpu.yaml, 1 process)", ""]
    if not records:
        return lines + ["No training records."]
    steady = records[1:] or records  # the first logging window includes compilation
    tokens = statistics.median(r["tokens_per_second"] for r in steady)
    mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
    lines.append(
        f"{records[-1]['step']} steps; loss {records[0]['loss']:.3f} -> {records[-1]['loss']:.3f}; steady tokens/s "
        f"{tokens:,.0f} (median of {len(steady)} logging windows after the first)"
        + (f", MFU {statistics.median(mfus):.1%}" if mfus else ", no MFU (no known peak)")
        + f"; first window {records[0]['tokens_per_second']:,.0f} tokens/s (includes compiling)."
    )
    summary_path = out / "pretrain" / "training_summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        lines.append(
            f"Summary: {summary['tokens_seen']:,} tokens in {summary['train_seconds']:.1f} s, mixed precision "
            f"{summary['mixed_precision']}, torch.compile {summary.get('torch_compile')}, FLOPs/token "
            f"{summary['flops_per_token']:.3g}, peak {summary.get('peak_flops_per_device')}."
        )
    return lines


def main(out: Path) -> int:
    print(f"# GPU checks: {out}\n")
    for section in (environment_section, steps_section, tests_section, bench_section, pretrain_section):
        try:
            lines = section(out)
        except (OSError, KeyError, ValueError, TypeError, ZeroDivisionError, ElementTree.ParseError) as error:
            lines = [f"{section.__name__.removesuffix('_section')}: not available ({type(error).__name__}: {error})"]
        print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/gpu-checks")))
