"""The report as text: markdown tables of sizes, per-point timings, training, overhead and (with --targets)
the verdicts."""

from .comparison import ratio
from .models import ALL_ATTENTION, BASELINE, SHISHU
from .settings import MODES
from .targets import TIMED_FIGURES


def format_report(report: dict) -> str:
    """The report as markdown tables: sizes, per-context timings, training, targets."""
    lines = [_machine_line(report), ""]
    lines += _sizes_table(report["models"])
    lines += _inference_table(report["inference"])
    lines += _notes(report)
    lines += ["", _training_line(report)]
    if "overhead" in report:
        lines += _overhead_table(report)
    if report.get("targets"):
        lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
        for target in report["targets"]:
            met = {True: "yes", False: "no", None: "-"}[target["met"]]
            lines.append(f"| {target['target']} | {target['value']} | {met} |")
    return "\n".join(lines)


def _machine_line(report: dict) -> str:
    machine = report["machine"]
    if machine.get("device_name"):
        device = (
            f"{machine['device_name']} (CUDA {machine['cuda']}), torch {machine['torch']}, "
            f"transformers {machine['transformers']}"
        )
    else:
        device = f"{machine['processor']}, {machine['torch_threads']} torch threads"
    timer = machine.get("timer", report["settings"].get("clock", "wall") + " clock")
    return (
        f"Machine: {device}, memory bandwidth {machine['memory_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (copy); "
        f"dtype {report['settings']['dtype']}; {timer}; load average at end {_load(machine)}."
    )


def _sizes_table(models: dict) -> list[str]:
    lines = [
        "| model | layers (attention / MLP-only) | unique parameters | weight bytes | KV cache / token |",
        "| --- | --- | --- | --- | --- |",
    ]
    for d in models.values():
        kv = d.get("kv_cache_bytes_per_token")
        lines.append(
            f"| {d['label']} | {d['num_hidden_layers']} ({d['attention_layers']} / {d['mlp_layers']}) | "
            f"{d['unique_parameters']:,} | {d['weight_bytes'] / 2**20:.1f} MiB | "
            + (f"{kv:,.0f} B |" if kv is not None else "- |")
        )
    return lines


def _inference_table(inference: list[dict]) -> list[str]:
    lines = [
        "",
        "Prefill: ms for the whole prompt; decode: ms per token (median, p10-p90); ratio = baseline / ShishuLM; "
        "BW% = decode tokens/s as a fraction of the memory-bandwidth limit.",
        "",
        "| mode | batch | context | prefill baseline | prefill ShishuLM | ratio | decode baseline | decode ShishuLM "
        "| ratio | BW% baseline | BW% ShishuLM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = {(r["model"], r["mode"], r["batch"], r["context"]): r for r in inference}
    keys = sorted(
        {(r["mode"], r["batch"], r["context"]) for r in inference}, key=lambda k: (MODES.index(k[0]), k[1], k[2])
    )
    for mode, batch, context in keys:
        b, s = rows[(BASELINE, mode, batch, context)], rows[(SHISHU, mode, batch, context)]
        prefill_ratio = ratio(b["prefill"]["median_ms"], s["prefill"]["median_ms"])
        decode_ratio = ratio(b["decode_per_token"]["median_ms"], s["decode_per_token"]["median_ms"])
        lines.append(
            f"| {mode} | {batch} | {context} | {_ms(b['prefill'])} | {_ms(s['prefill'])} | {prefill_ratio:.2f} | "
            f"{_ms(b['decode_per_token'])} | {_ms(s['decode_per_token'])} | {decode_ratio:.2f} | "
            f"{b['fraction_of_bandwidth_limit']:.0%} | {s['fraction_of_bandwidth_limit']:.0%} |"
        )
    return lines


def _notes(report: dict) -> list[str]:
    """One paragraph per optional figure: aten ops, matmul floor, compile time, peak memory, GPU kernels."""
    models, inference = report["models"], report["inference"]
    notes = []
    if report.get("aten_ops"):
        notes.append(
            "Aten ops dispatched (prefill of the shortest context / one decode step / one training step): "
            + ", ".join(
                f"{models[role]['label']} {c['prefill']} / {c['decode_step']} / {c.get('training_step', '-')}"
                for role, c in report["aten_ops"].items()
            )
        )
    if report.get("matmul_floor"):
        limits = {(r["model"], r["batch"]): r["matmul_floor_fraction_of_bandwidth_limit"] for r in inference}
        notes.append(
            "Matmul floor (the decode step's weight matmuls alone, this device's kernels; ms, and as a fraction of "
            "the bandwidth limit for the weights): "
            + ", ".join(
                f"{models[role]['label']} batch {batch}: {summary['median_ms']:.1f} ({limits[(role, int(batch))]:.0%})"
                for role, per_batch in report["matmul_floor"].items()
                for batch, summary in per_batch.items()
            )
        )
    compile_rows = [r for r in inference if "compile_seconds" in r]
    if compile_rows:
        notes.append(
            "Compile time of the decode step (excluded above): "
            + ", ".join(f"{_point(models, r)}: {r['compile_seconds']:.1f} s" for r in compile_rows)
        )
    memory_rows = [r for r in inference if "peak_bytes" in r]
    if memory_rows:
        notes.append(
            "Peak memory of prefill + decode (weights, cache, activations; MiB): "
            + ", ".join(f"{_point(models, r, mode=True)}: {r['peak_bytes'] / 2**20:,.0f}" for r in memory_rows)
        )
    kernel_rows = [r for r in inference if "decode_kernels" in r]
    if kernel_rows:
        notes.append(
            "One decode step on the GPU (profiler: kernels, their summed time, CPU kernel / graph launches; "
            "kernel time well below the step time = the GPU waits for the CPU): "
            + ", ".join(_kernels(models, r) for r in kernel_rows)
        )
    return [line for note in notes for line in ("", note)]


def _point(models: dict, row: dict, mode: bool = False) -> str:
    return f"{models[row['model']]['label']}{' ' + row['mode'] if mode else ''} b{row['batch']}/{row['context']}"


def _kernels(models: dict, row: dict) -> str:
    kernels = row["decode_kernels"]
    return (
        f"{_point(models, row, mode=True)}: {kernels['kernels']} kernels, {kernels['kernel_ms']:.2f} ms "
        f"(step {row['decode_per_token']['median_ms']:.2f} ms), "
        f"{kernels['kernel_launches']} / {kernels['graph_launches']} launches"
    )


def _training_line(report: dict) -> str:
    settings = report["settings"]
    b, s = report["training"][BASELINE], report["training"][SHISHU]
    mfu = f", MFU {b['mfu']:.1%} vs {s['mfu']:.1%}" if b.get("mfu") is not None and s.get("mfu") is not None else ""
    compiled = ", compiled" if settings.get("train_compile") else ""
    text = (
        f"Training step (forward + backward, batch {settings.get('train_batch', 1)} x {settings['train_seq_len']} "
        f"tokens{compiled}): baseline {_ms(b['step'])}, ShishuLM {_ms(s['step'])}, "
        f"ratio {ratio(b['step']['median_ms'], s['step']['median_ms']):.2f}"
    )
    if "tokens_per_s" in b:
        text += f"; {b['tokens_per_s']:,.0f} vs {s['tokens_per_s']:,.0f} tokens/s{mfu}"
    return text + (
        f"; peak memory {b['peak_bytes'] / 2**20:.0f} MiB vs {s['peak_bytes'] / 2**20:.0f} MiB "
        f"(ratio {ratio(b['peak_bytes'], s['peak_bytes']):.2f})."
    )


def _overhead_table(report: dict) -> list[str]:
    twin = report["models"][ALL_ATTENTION]
    architecture = {(r["figure"], r.get("mode"), r.get("batch"), r.get("context")): r for r in report["architecture"]}
    lines = [
        "",
        f"Same weights, two implementations: the baseline's class vs ShishuLM with every layer attention "
        f"(max |logit difference| {twin.get('max_abs_logit_difference_vs_baseline', float('nan')):.1e}). "
        "overhead = baseline / ShishuLM(all attention), 1.00 = no overhead; "
        "architecture = ShishuLM(all attention) / ShishuLM, the saving of the layout alone (same code). "
        "Eager and training run the same kernels in both classes; in compile mode (static cache, so a mask) "
        "ShishuLM passes grouped queries to the SDPA kernel where the baseline's class copies the cache per "
        "query head, so there the ratio is that kernel's gain.",
        "",
        "| figure | baseline | ShishuLM(all attention) | overhead | architecture |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["overhead"]:
        if row["figure"] not in TIMED_FIGURES:
            continue
        arch = architecture.get((row["figure"], row.get("mode"), row.get("batch"), row.get("context")))
        lines.append(
            f"| {_where(row)} | {row[BASELINE]:.1f} ms | {row[ALL_ATTENTION]:.1f} ms | {row['ratio']:.3f} | "
            + (f"{arch['ratio']:.3f} |" if arch else "- |")
        )
    return lines


def _ms(summary: dict) -> str:
    median = summary["median_ms"]
    digits = 1 if median < 100 else 0
    return f"{median:.{digits}f} ({summary['p10_ms']:.{digits}f}-{summary['p90_ms']:.{digits}f})"


def _where(row: dict) -> str:
    if row["figure"] == "training_step_ms":
        return "training step"
    name = "prefill" if row["figure"] == "prefill_ms" else "decode / token"
    return f"{name}, {row['mode']}, batch {row['batch']}, context {row['context']}"


def _load(machine: dict) -> str:
    load = machine.get("load_average_at_end")
    return "/".join(f"{x:.1f}" for x in load) if load else "n/a"
