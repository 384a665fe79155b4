"""Ratios between two models of a report, figure by figure (> 1: the second model is faster or smaller)."""


def ratio(baseline: float, shishu: float) -> float:
    return baseline / shishu if shishu else float("nan")


def compare(report: dict, numerator: str, denominator: str) -> list[dict]:
    """`numerator / denominator` for every figure both models have (times: > 1 = denominator faster)."""
    figures = []
    models = report["models"]

    def add(figure, a, b, **where):
        change = b / a - 1 if a else float("nan")
        figures.append(
            {"figure": figure, **where, numerator: a, denominator: b, "ratio": ratio(a, b), "change": change}
        )

    for key in ("unique_parameters", "weight_bytes", "kv_cache_bytes_per_token"):
        if models[numerator].get(key) is not None and models[denominator].get(key) is not None:
            add(key, models[numerator][key], models[denominator][key])
    rows = {(r["model"], r["mode"], r["batch"], r["context"]): r for r in report["inference"]}
    for (role, mode, batch, context), row in rows.items():
        if role != numerator or (denominator, mode, batch, context) not in rows:
            continue
        other = rows[(denominator, mode, batch, context)]
        where = dict(mode=mode, batch=batch, context=context)
        if mode == "eager":  # static caches are sized by max_cache_len, not by the layout
            add("kv_cache_bytes", row["kv_cache_bytes"], other["kv_cache_bytes"], **where)
        add("prefill_ms", row["prefill"]["median_ms"], other["prefill"]["median_ms"], **where)
        decode, other_decode = row["decode_per_token"]["median_ms"], other["decode_per_token"]["median_ms"]
        add("decode_ms_per_token", decode, other_decode, **where)
        add("bytes_read_per_step", row["bytes_read_per_step"], other["bytes_read_per_step"], **where)
        add("prefill_flops", row["prefill_flops"], other["prefill_flops"], **where)
    training = report["training"]
    if numerator in training and denominator in training:
        a, b = training[numerator], training[denominator]
        add("training_step_ms", a["step"]["median_ms"], b["step"]["median_ms"])
        add("training_peak_bytes", a["peak_bytes"], b["peak_bytes"])
        add("training_flops", a["flops"], b["flops"])
    return figures
