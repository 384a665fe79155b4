"""Layer analysis: which layers of a Llama-family model can lose their attention (the paper's evidence, as a tool).

    shishu analyze --model smollm2-135m --k 10 --out analysis-smollm2-135m
    shishu analyze --model path/to/checkpoint --data a.txt b.txt --context-length 512 --device cuda

    from modeling_shishu.conversion.analysis import analyze_layers
    result = analyze_layers(model, tokenizer, texts, ks=[10])
    result.recommend(10).layers

For every attention layer, on held-out text cut into windows of `context_length` tokens:

- linearity (`r2`): a ridge least-squares fit of a linear map (with bias) from the layer's normalised
  input `RMSNorm(x)` to its attention output, fitted on `fit_tokens` tokens and scored on different,
  held-out tokens: held-out R^2 (1 = attention there is a linear map of its input; the paper's claim
  for the top layers at moderate context). The fit is d+1 -> d per layer, so `fit_tokens` must be many
  times d; the training R^2 is reported next to it to show the fit is not over-fitted.
- removal cost (`removal_cost`): the held-out loss increase when only that layer's attention is
  dropped (its residual passes through unchanged), on `ablation_tokens` tokens;
- `cosine`: mean cosine similarity between the attention block's input `x` and output `x + attn(norm(x))`
  (1 = the block barely changes the residual stream), and `update_ratio` = mean |attn| / |x|.

Recommended set for K (`LayerAnalysis.recommend(k)`). Three candidate sets are measured with all K
attention blocks dropped at once (the joint cost, which includes their interactions):
- "top": the top K layers, the paper's choice;
- "lowest-cost-pairs": K // 2 disjoint pairs of adjacent layers (plus one single layer if K is odd) with
  the lowest summed single-layer cost;
- "lowest-cost": the K layers with the lowest single-layer cost, adjacent or not.
The rule: among the candidates that keep the most layers in shared pairs (so the converted model saves
as many parameters as the paper's layout, as well as the same KV cache), the lowest joint cost wins,
"top" on ties. "lowest-cost" is reported for comparison; it is recommended only when it pairs as well.
For a K whose joint costs were not measured, `recommend` returns "lowest-cost-pairs" from the single
costs and says so. The joint cost covers dropping attention only; sharing a pair's MLP adds its own
damage, which conversion (`pair_init`) and healing deal with.

Outputs: a table on the terminal, `layer_analysis.json` and `layer_analysis.png` (matplotlib, Agg).
Cost is dominated by forward passes: one over fit + eval windows, then for each layer a pass over the
ablation windows from that layer up (layer inputs are cached, so lower layers are not recomputed).
"""

import argparse
import dataclasses
import logging
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.masking_utils import create_causal_mask

from ..configuration_shishu import MLP_LAYER, pair_adjacent_mlp_layers
from ..io_utils import atomic_save_figure, atomic_write_json, check_output_location
from ..loading import add_trust_remote_code_argument


logger = logging.getLogger(__name__)

# Chosen so the default run on the 135M parent takes a few minutes on 2 CPU cores: the fit sees 14x as many
# tokens as it has inputs (d+1 = 577), and removal costs are paired differences on the same tokens.
DEFAULTS = dict(context_length=256, fit_tokens=8192, eval_tokens=2048, ablation_tokens=1024, ridge=1e-3, batch_size=4)


@dataclasses.dataclass
class LayerRow:
    layer: int
    # "full_attention", or "mlp" for a ShishuLM MLP-only layer (no attention: no numbers)
    layer_type: str
    r2: float | None = None
    train_r2: float | None = None
    removal_cost: float | None = None
    cosine: float | None = None
    update_ratio: float | None = None


@dataclasses.dataclass
class Recommendation:
    k: int
    layers: list[int]
    rule: str
    description: str
    # Held-out loss increase with all `layers` dropped at once; None if not measured.
    joint_cost: float | None


@dataclasses.dataclass
class LayerAnalysis:
    """Per-layer rows plus the measured candidate sets; `recommend(k)` applies the documented rule."""

    model: str
    rows: list[LayerRow]
    # None when the removal costs were skipped (ablation_tokens=0)
    baseline_loss: float | None
    # k -> {"top": {"layers": [...], "joint_cost": float}, "lowest-cost": {...}}
    candidates: dict[int, dict[str, dict]]
    settings: dict
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def attention_rows(self) -> list[LayerRow]:
        return [row for row in self.rows if row.layer_type == "full_attention"]

    def ranked_by_cost(self) -> list[int]:
        return [row.layer for row in sorted(self.attention_rows, key=lambda row: (row.removal_cost, -row.layer))]

    def candidate_sets(self, k: int) -> dict[str, list[int]]:
        """The candidate layer sets for K (see the module docstring), from the single-layer costs."""
        costs = {row.layer: row.removal_cost for row in self.attention_rows}
        candidates = {"top": sorted(costs)[-k:]}
        paired = lowest_cost_pairs(costs, k)
        if paired is not None:
            candidates["lowest-cost-pairs"] = paired
        candidates["lowest-cost"] = sorted(self.ranked_by_cost()[:k])
        return candidates

    def shared_pairs(self, layers: list[int]) -> int:
        """How many shared pairs converting `layers` gives (adjacent MLP-only layers pair up)."""
        layer_types = [row.layer_type for row in self.rows]
        for layer in layers:
            layer_types[layer] = MLP_LAYER
        return len(pair_adjacent_mlp_layers(layer_types))

    def recommend(self, k: int) -> Recommendation:
        attention_layers = [row.layer for row in self.attention_rows]
        if not 0 < k <= len(attention_layers):
            raise ValueError(f"k must be between 1 and {len(attention_layers)} (the attention layers), got {k}")
        if self.baseline_loss is None:
            raise ValueError("this analysis has no removal costs (ablation_tokens was 0): nothing to recommend from")
        measured = self.candidates.get(k) or self.candidates.get(str(k))
        if not measured:
            name, layers = next((n, l) for n, l in self.candidate_sets(k).items() if n != "top")
            return Recommendation(
                k,
                layers,
                name,
                f"{name} set from single-layer removal costs (joint cost not measured for k={k}; "
                f"run the analysis with k={k} to compare candidates)",
                None,
            )
        # Only sets that keep every pair shared save as much as the paper's layout; among them, the
        # lowest joint cost wins, "top" on ties.
        most_pairs = max(c["shared_pairs"] for c in measured.values())
        eligible = [name for name, c in measured.items() if c["shared_pairs"] == most_pairs]
        best = min(eligible, key=lambda name: (measured[name]["joint_cost"], name != "top"))
        chosen = measured[best]
        others = ", ".join(
            f"{name} {c['layers']}: {c['joint_cost']:+.4f} ({c['shared_pairs']} pairs)"
            for name, c in measured.items()
            if name != best
        )
        description = (
            f"{best} set for k={k}: joint held-out loss increase {chosen['joint_cost']:+.4f} nats/token, "
            f"{chosen['shared_pairs']} shared pairs" + (f"; other candidates: {others}" if others else "")
        )
        return Recommendation(k, list(chosen["layers"]), best, description, chosen["joint_cost"])

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["candidates"] = {str(k): v for k, v in self.candidates.items()}
        data["recommendations"] = {str(k): dataclasses.asdict(self.recommend(k)) for k in self.candidates}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LayerAnalysis":
        rows = [LayerRow(**row) for row in data["rows"]]
        candidates = {int(k): v for k, v in data["candidates"].items()}
        return cls(data["model"], rows, data["baseline_loss"], candidates, data["settings"], data.get("timings", {}))

    def table(self) -> str:
        lines = [
            f"{self.model}: baseline held-out loss "
            + ("not measured " if self.baseline_loss is None else f"{self.baseline_loss:.4f} ")
            + f"(context {self.settings['context_length']}, fit {self.settings['fit_tokens']} tokens, "
            f"held-out {self.settings['eval_tokens']} tokens, ablation {self.settings['ablation_tokens']} tokens)",
            f"{'layer':>5}  {'held-out R2':>11}  {'train R2':>8}  {'removal cost':>12}  {'cos(in,out)':>11}  {'|attn|/|x|':>10}",
        ]
        for row in self.rows:
            if row.layer_type != "full_attention":
                lines.append(f"{row.layer:>5}  {'(MLP-only layer: no attention)':>58}")
                continue
            cost = "-" if row.removal_cost is None else f"{row.removal_cost:+.4f}"
            lines.append(
                f"{row.layer:>5}  {row.r2:>11.4f}  {row.train_r2:>8.4f}  {cost:>12}  "
                f"{row.cosine:>11.4f}  {row.update_ratio:>10.4f}"
            )
        for k in sorted(self.candidates):
            rec = self.recommend(k)
            lines.append(f"k={k}: recommend layers {rec.layers}: {rec.description}")
        return "\n".join(lines)


def lowest_cost_pairs(costs: dict[int, float], k: int) -> list[int] | None:
    """k // 2 disjoint pairs of adjacent attention layers, plus one single layer if k is odd, with the
    lowest summed single-layer cost (dynamic programming over the layers); None if no such set exists."""
    layers = sorted(costs)
    num_pairs, num_singles = k // 2, k % 2
    infinity = (math.inf, ())
    best = {(0, 0): (0.0, ())}  # (pairs used, singles used) -> (cost, chosen layers) over the layers seen so far
    previous_best = {}
    for position, layer in enumerate(layers):
        current = dict(best)
        for (pairs, singles), (cost, chosen) in best.items():
            if singles < num_singles:
                key = (pairs, singles + 1)
                current[key] = min(current.get(key, infinity), (cost + costs[layer], chosen + (layer,)))
        # a pair (previous layer, this layer): extend the states from before the previous layer
        if position > 0 and layers[position - 1] == layer - 1:
            for (pairs, singles), (cost, chosen) in previous_best.items():
                if pairs < num_pairs:
                    key = (pairs + 1, singles)
                    pair_cost = cost + costs[layer - 1] + costs[layer]
                    current[key] = min(current.get(key, infinity), (pair_cost, chosen + (layer - 1, layer)))
        previous_best, best = best, current
    cost, chosen = best.get((num_pairs, num_singles), infinity)
    return sorted(chosen) if chosen or k == 0 else None


# --------------------------------------------------------------------------------------- data


def default_analysis_texts() -> list[str]:
    """Held-out text for the analysis: the validation split of the offline corpora, verse and chat in equal parts
    (`assets.mixed_texts`), so the layers picked are cheap to lose on general text, not on one genre."""
    from ..assets import mixed_texts

    return mixed_texts("validation")


def read_text_files(paths) -> list[str]:
    texts = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"no such text file: {path}")
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def _spread(n: int, k: int) -> list[bool]:
    """k of n positions marked True, spread evenly (Bresenham)."""
    return [(j * k) // n != ((j + 1) * k) // n for j in range(n)]


def make_windows(tokenizer, texts: list[str], context_length: int, fit_tokens: int, eval_tokens: int):
    """Cut the tokenised texts into non-overlapping windows; return (fit, eval) LongTensors of windows.

    The windows used are spread evenly over the whole corpus, and every window is either a fit window or
    an eval window, so held-out numbers are measured on tokens the fit never saw.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    num_fit = math.ceil(fit_tokens / context_length)
    num_eval = math.ceil(eval_tokens / context_length)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = []
    for text in texts:
        # verbose=False: a whole play is longer than the model's context; it is cut into windows below.
        stream += tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + separator
    available = len(stream) // context_length
    if available < num_fit + num_eval:
        raise ValueError(
            f"the analysis text has {len(stream):,} tokens = {available} windows of {context_length}, but "
            f"{num_fit} fit + {num_eval} eval windows are needed: give more text or fewer tokens"
        )
    windows = torch.tensor(stream[: available * context_length]).view(available, context_length)
    chosen = windows[torch.linspace(0, available - 1, num_fit + num_eval).round().long()]
    is_eval = torch.tensor(_spread(num_fit + num_eval, num_eval))
    return chosen[~is_eval], chosen[is_eval]


# ------------------------------------------------------------------------------------ the model


class DecoderStack:
    """Runs a Llama-family causal LM (Llama, Mistral, Qwen2, ShishuLM) one layer at a time, so the
    analysis can start a forward pass at any layer from cached inputs and drop one layer's attention."""

    def __init__(self, model):
        if not all(
            hasattr(model, "model") and hasattr(model.model, name)
            for name in ("embed_tokens", "layers", "norm", "rotary_emb")
        ):
            raise ValueError(
                f"{type(model).__name__} is not a Llama-family causal LM (model.embed_tokens/layers/norm/rotary_emb)"
            )
        self.model = model
        self.base = model.model
        num_layers = model.config.num_hidden_layers
        # A ShishuLM runs a share group's owner block once per layer of the group.
        self.owners = list(getattr(self.base, "weight_owners", range(num_layers)))
        layer_types = getattr(model.config, "layer_types", None) or ["full_attention"] * num_layers
        self.layer_types = [
            "full_attention" if t in ("full_attention", "sliding_attention") else t for t in layer_types
        ]
        self.num_layers = num_layers

    def attention(self, layer_idx: int):
        return (
            self.base.layers[self.owners[layer_idx]].self_attn
            if self.layer_types[layer_idx] == "full_attention"
            else None
        )

    def prepare(self, input_ids: torch.Tensor):
        hidden = self.base.embed_tokens(input_ids)
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.model.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=None,
            position_ids=position_ids,
        )
        position_embeddings = self.base.rotary_emb(hidden, position_ids=position_ids)
        return hidden, dict(attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings)

    def layer(self, layer_idx: int, hidden: torch.Tensor, context: dict) -> torch.Tensor:
        output = self.base.layers[self.owners[layer_idx]](hidden, **context)
        return output[0] if isinstance(output, tuple) else output

    def loss_sum(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> tuple[float, int]:
        """Summed next-token cross entropy over the windows, and the number of predicted tokens."""
        logits = self.model.lm_head(self.base.norm(hidden[:, :-1])).float()
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), input_ids[:, 1:].flatten(), reduction="sum")
        return loss.item(), input_ids[:, 1:].numel()


@contextmanager
def attention_dropped(attention_modules):
    """Make the given attention modules output zeros: the residual stream passes through those layers."""

    def zero_output(module, args, output):
        return (torch.zeros_like(output[0]),) + tuple(output[1:])

    handles = [module.register_forward_hook(zero_output) for module in attention_modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _LinearFitStats:
    """Sufficient statistics of a least-squares fit Y ~ [X, 1] W, accumulated in float64."""

    def __init__(self, dim: int, device):
        self.xtx = torch.zeros(dim + 1, dim + 1, dtype=torch.float64, device=device)
        self.xty = torch.zeros(dim + 1, dim, dtype=torch.float64, device=device)
        self.y_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.y_sq = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        # One batch's products in float32 (half the cost of float64 on CPU), summed across batches in float64.
        x = torch.nn.functional.pad(x.reshape(-1, x.shape[-1]).float(), (0, 1), value=1.0)
        y = y.reshape(-1, y.shape[-1]).float()
        self.xtx += (x.T @ x).double()
        self.xty += (x.T @ y).double()
        self.y_sum += y.double().sum(0)
        self.y_sq += (y.double() ** 2).sum()
        self.count += y.shape[0]

    def solve(self, ridge: float) -> torch.Tensor:
        dim = self.xtx.shape[0] - 1
        scale = self.xtx.diagonal()[:dim].mean()
        penalty = torch.zeros(dim + 1, dtype=torch.float64, device=self.xtx.device)
        penalty[:dim] = ridge * scale  # the bias is not penalised
        return torch.linalg.solve(self.xtx + torch.diag(penalty), self.xty)

    def r2(self, weights: torch.Tensor) -> float:
        """R^2 of `weights` on these statistics: 1 - SSE / total sum of squares around the mean."""
        sse = self.y_sq - 2 * (weights * self.xty).sum() + (weights * (self.xtx @ weights)).sum()
        sst = self.y_sq - (self.y_sum * self.y_sum).sum() / self.count
        return float(1.0 - sse / sst)


@torch.no_grad()
def analyze_layers(
    model,
    tokenizer,
    texts: list[str],
    context_length: int = DEFAULTS["context_length"],
    fit_tokens: int = DEFAULTS["fit_tokens"],
    eval_tokens: int = DEFAULTS["eval_tokens"],
    ablation_tokens: int = DEFAULTS["ablation_tokens"],
    ridge: float = DEFAULTS["ridge"],
    batch_size: int = DEFAULTS["batch_size"],
    ks: list[int] = (),
    model_name: str | None = None,
    show_progress: bool = True,
) -> LayerAnalysis:
    """Measure per-layer attention linearity and removal cost on `texts` (see the module docstring).

    Args:
        model: a Llama-family causal LM (or a ShishuLM: its MLP-only layers get empty rows), in eval mode.
        tokenizer: its tokenizer.
        texts: held-out text (not the model's training data), at least (fit + eval) tokens long.
        context_length: tokens per window.
        fit_tokens / eval_tokens: tokens for fitting the linear maps / for the held-out numbers.
        ablation_tokens: tokens (a subset of the eval windows) for the removal costs; 0 skips them
            (linearity and cosine only, no recommendation).
        ridge: ridge penalty relative to the mean input energy.
        ks: set sizes K for which the candidate sets' joint removal cost is measured.
        show_progress: a tqdm bar with one step per forward pass over a batch or over the ablation windows.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    stack = DecoderStack(model)
    device = model.lm_head.weight.device
    ks = sorted({int(k) for k in ks})
    attention_layers = [i for i in range(stack.num_layers) if stack.layer_types[i] == "full_attention"]
    if ablation_tokens > 0 and context_length < 2:
        raise ValueError("removal costs need next-token losses: context_length must be >= 2 (or ablation_tokens 0)")
    if ks and ablation_tokens <= 0:
        raise ValueError("recommendations (ks) need removal costs: ablation_tokens must be > 0")
    for k in ks:
        if not 0 < k <= len(attention_layers):
            raise ValueError(f"k={k} is not between 1 and the number of attention layers ({len(attention_layers)})")
    fit_windows, eval_windows = make_windows(tokenizer, texts, context_length, fit_tokens, eval_tokens)
    num_ablation = min(len(eval_windows), math.ceil(max(ablation_tokens, 0) / context_length))
    ablation_windows = eval_windows[torch.tensor(_spread(len(eval_windows), num_ablation))]
    dim = model.config.hidden_size
    num_batches = math.ceil(len(fit_windows) / batch_size) + math.ceil(len(eval_windows) / batch_size)
    num_ablation_batches = math.ceil(len(ablation_windows) / batch_size)
    # Candidate sets join the total once the single-layer costs that pick them are known.
    progress = tqdm(
        total=num_batches + num_ablation_batches + (len(attention_layers) if num_ablation_batches else 0),
        desc="analyzing layers",
        unit="pass",
        disable=not show_progress,
    )

    fit_stats = {i: _LinearFitStats(dim, device) for i in attention_layers}
    eval_stats = {i: _LinearFitStats(dim, device) for i in attention_layers}
    cosine_sum = dict.fromkeys(attention_layers, 0.0)
    ratio_sum = dict.fromkeys(attention_layers, 0.0)
    captured = {}

    def capture(layer_idx):
        def hook(module, args, kwargs, output):
            normed = kwargs.get("hidden_states", args[0] if args else None)
            captured[layer_idx] = (normed, output[0])

        return hook

    # Pass 1: one forward over fit and eval windows, accumulating the fit statistics per layer.
    handles = [stack.attention(i).register_forward_hook(capture(i), with_kwargs=True) for i in attention_layers]
    try:
        for role, windows in (("fit", fit_windows), ("eval", eval_windows)):
            for start in range(0, len(windows), batch_size):
                input_ids = windows[start : start + batch_size].to(device)
                hidden, context = stack.prepare(input_ids)
                for layer_idx in range(stack.num_layers):
                    residual = hidden
                    hidden = stack.layer(layer_idx, hidden, context)
                    if layer_idx not in captured:
                        continue
                    normed, attn = captured.pop(layer_idx)
                    (fit_stats if role == "fit" else eval_stats)[layer_idx].add(normed, attn)
                    if role == "eval":
                        x, a = residual.float(), attn.float()
                        cosine_sum[layer_idx] += torch.nn.functional.cosine_similarity(x, x + a, dim=-1).sum().item()
                        ratio_sum[layer_idx] += (a.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).sum().item()
                progress.update(1)
    finally:
        for handle in handles:
            handle.remove()
    fit_seconds = time.perf_counter() - started

    rows = []
    num_eval_tokens = eval_windows.numel()
    for layer_idx in range(stack.num_layers):
        if layer_idx not in fit_stats:
            rows.append(LayerRow(layer_idx, stack.layer_types[layer_idx]))
            continue
        weights = fit_stats[layer_idx].solve(ridge)
        rows.append(
            LayerRow(
                layer=layer_idx,
                layer_type="full_attention",
                r2=eval_stats[layer_idx].r2(weights),
                train_r2=fit_stats[layer_idx].r2(weights),
                cosine=cosine_sum[layer_idx] / num_eval_tokens,
                update_ratio=ratio_sum[layer_idx] / num_eval_tokens,
            )
        )

    # Pass 2: removal costs. Cache every layer's input on the ablation windows, then for each layer rerun
    # only the layers from it up, with its attention dropped.
    ablation_started = time.perf_counter()
    batches = []
    baseline_sum = baseline_count = 0
    for start in range(0, len(ablation_windows), batch_size):
        input_ids = ablation_windows[start : start + batch_size].to(device)
        hidden, context = stack.prepare(input_ids)
        inputs = []
        for layer_idx in range(stack.num_layers):
            inputs.append(hidden)
            hidden = stack.layer(layer_idx, hidden, context)
        loss, count = stack.loss_sum(hidden, input_ids)
        baseline_sum, baseline_count = baseline_sum + loss, baseline_count + count
        batches.append((input_ids, context, inputs))
        progress.update(1)
    baseline_loss = baseline_sum / baseline_count if baseline_count else None

    def loss_without(layers: list[int]) -> float:
        total = 0.0
        first = min(layers)
        with attention_dropped([stack.attention(i) for i in layers]):
            for input_ids, context, inputs in batches:
                hidden = inputs[first]
                for layer_idx in range(first, stack.num_layers):
                    hidden = stack.layer(layer_idx, hidden, context)
                total += stack.loss_sum(hidden, input_ids)[0]
        return total / baseline_count

    for row in rows:
        if row.layer_type == "full_attention" and batches:
            row.removal_cost = loss_without([row.layer]) - baseline_loss
            progress.update(1)

    analysis = LayerAnalysis(
        model=model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__,
        rows=rows,
        baseline_loss=baseline_loss,
        candidates={},
        settings=dict(
            context_length=context_length,
            fit_tokens=fit_windows.numel(),
            eval_tokens=num_eval_tokens,
            ablation_tokens=ablation_windows.numel(),
            ridge=ridge,
        ),
    )
    for k in ks:
        measured = {}
        sets = analysis.candidate_sets(k)
        progress.total += len(sets)
        for name, layers in sets.items():
            if not any(layers == m["layers"] for m in measured.values()):  # the same set under another name: once
                measured[name] = {
                    "layers": layers,
                    "joint_cost": loss_without(layers) - baseline_loss,
                    "shared_pairs": analysis.shared_pairs(layers),
                }
            progress.update(1)
        analysis.candidates[k] = measured
    progress.close()
    analysis.timings = {
        "fit_pass_seconds": round(fit_seconds, 1),
        "ablation_seconds": round(time.perf_counter() - ablation_started, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return analysis


# ------------------------------------------------------------------------------------ outputs


def plot_analysis(analysis: LayerAnalysis, path: str | Path, k: int | None = None) -> Path:
    """Write a PNG with the per-layer numbers (the recommended set for `k` shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = analysis.attention_rows
    layers = [row.layer for row in rows]
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    panels = [
        ([row.r2 for row in rows], "held-out R$^2$\n(linear fit of attention)", "tab:blue"),
        (
            [math.nan if row.removal_cost is None else row.removal_cost for row in rows],
            "loss increase when\nthis attention is dropped",
            "tab:red",
        ),
        ([row.cosine for row in rows], "cos(block input, output)", "tab:green"),
    ]
    highlighted = analysis.recommend(k).layers if k else []
    for axis, (values, label, color) in zip(axes, panels):
        axis.plot(layers, values, marker="o", color=color)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        for layer in highlighted:
            axis.axvspan(layer - 0.5, layer + 0.5, color="0.85", zorder=0)
    axes[1].set_yscale("symlog", linthresh=0.01)
    axes[-1].set_xlabel("layer" + (f" (shaded: recommended set for K={k})" if k else ""))
    figure.suptitle(f"{analysis.model}: per-layer attention analysis (context {analysis.settings['context_length']})")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=110)


def write_outputs(analysis: LayerAnalysis, out_dir: str | Path, k: int | None = None) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "layer_analysis.json"
    atomic_write_json(json_path, analysis.to_dict())
    png_path = plot_analysis(analysis, out_dir / "layer_analysis.png", k=k)
    return json_path, png_path


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="checkpoint folder, offline parent name or Hub id (default: smollm2-135m)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="FILE",
        help="held-out text files (default: Shakespeare validation plays and as much ShareGPT validation chat)",
    )
    parser.add_argument(
        "--k",
        type=int,
        nargs="+",
        default=[10],
        help="set sizes to recommend (joint cost measured for each; default: 10)",
    )
    parser.add_argument("--context-length", type=int, default=DEFAULTS["context_length"])
    parser.add_argument(
        "--fit-tokens", type=int, default=DEFAULTS["fit_tokens"], help="tokens for the linear fits (>> hidden size)"
    )
    parser.add_argument(
        "--eval-tokens", type=int, default=DEFAULTS["eval_tokens"], help="held-out tokens for R^2 and cosine"
    )
    parser.add_argument(
        "--ablation-tokens",
        type=int,
        default=DEFAULTS["ablation_tokens"],
        help="held-out tokens for the removal costs",
    )
    parser.add_argument("--ridge", type=float, default=DEFAULTS["ridge"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default="float32", help="model dtype (statistics are always accumulated in float64)"
    )
    parser.add_argument(
        "--out", default=None, help="folder for layer_analysis.json and .png (default: analysis-<model name>)"
    )
    add_trust_remote_code_argument(parser)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..assets import fetch_parent
    from ..loading import check_checkpoint_folder, check_remote_code, remote_code_consent

    try:
        folder = fetch_parent(args.model)
    except RuntimeError as error:  # Hub unreachable, registry download failed, ...
        raise FileNotFoundError(f"model {args.model!r} is not available: {error}") from error
    name = Path(args.model).name if Path(args.model).expanduser().is_dir() else args.model.replace("/", "--")
    out = args.out or f"analysis-{name}"
    check_output_location(out)  # now, not after the analysis has run
    texts = read_text_files(args.data) if args.data else default_analysis_texts()
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {args.dtype!r}")
    check_checkpoint_folder(folder)
    check_remote_code(folder, args.trust_remote_code)
    with remote_code_consent(args.model):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=args.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=args.trust_remote_code)
    model = model.to(args.device).eval()
    analysis = analyze_layers(
        model,
        tokenizer,
        texts,
        context_length=args.context_length,
        fit_tokens=args.fit_tokens,
        eval_tokens=args.eval_tokens,
        ablation_tokens=args.ablation_tokens,
        ridge=args.ridge,
        batch_size=args.batch_size,
        ks=args.k,
        model_name=name,
    )
    json_path, png_path = write_outputs(analysis, out, k=args.k[0] if args.k else None)
    print(analysis.table())
    print(f"wrote {json_path} and {png_path} ({analysis.timings['total_seconds']} s)", file=sys.stderr)
    return 0


__all__ = [
    "DecoderStack",
    "LayerAnalysis",
    "LayerRow",
    "Recommendation",
    "analyze_layers",
    "attention_dropped",
    "plot_analysis",
    "write_outputs",
]
