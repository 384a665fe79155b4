"""Layer analysis: which layers of a Llama-family model can lose their attention (the paper's evidence, as a tool).

    shishu analyze --model smollm2-135m --k 10 --out analysis-smollm2-135m

    from modeling_shishu.conversion.analysis import analyze_layers
    analyze_layers(model, tokenizer, texts, ks=[10]).recommend(10).layers

Per attention layer, on held-out windows: how linear the attention is (held-out R^2 of a ridge fit from its
normalised input), what dropping it alone costs, and for each K the joint cost of the candidate sets. The
columns, the recommendation rule and measurements: docs/model_family.md ("Layer analysis").
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from ..configuration_shishu import ATTENTION_LAYER
from ..io_utils import atomic_write_json, check_output_location
from ..loading import add_trust_remote_code_argument
from .analysis_plot import plot_analysis
from .analysis_result import LayerAnalysis, LayerRow, Recommendation, lowest_cost_pairs
from .decoder_stack import DecoderStack, attention_dropped


# The fit sees 14x as many tokens as it has inputs on the 135M parent (d+1 = 577); removal costs are paired
# differences on the same tokens, so fewer tokens suffice for them.
DEFAULTS = dict(context_length=256, fit_tokens=8192, eval_tokens=2048, ablation_tokens=1024, ridge=1e-3, batch_size=4)


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


# ------------------------------------------------------------------------------------ linear fit


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


# ------------------------------------------------------------------------------------ the passes


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
    ks = sorted({int(k) for k in ks})
    _check_settings(context_length, ablation_tokens, ks, len(stack.attention_layers))
    fit_windows, eval_windows = make_windows(tokenizer, texts, context_length, fit_tokens, eval_tokens)
    num_ablation = min(len(eval_windows), math.ceil(max(ablation_tokens, 0) / context_length))
    ablation_windows = eval_windows[torch.tensor(_spread(len(eval_windows), num_ablation))]
    num_batches = math.ceil(len(fit_windows) / batch_size) + math.ceil(len(eval_windows) / batch_size)
    num_ablation_batches = math.ceil(len(ablation_windows) / batch_size)
    # Candidate sets join the total once the single-layer costs that pick them are known.
    progress = tqdm(
        total=num_batches + num_ablation_batches + (len(stack.attention_layers) if num_ablation_batches else 0),
        desc="analyzing layers",
        unit="pass",
        disable=not show_progress,
    )

    rows = _linearity_rows(stack, fit_windows, eval_windows, ridge, batch_size, progress)
    fit_seconds = time.perf_counter() - started
    ablation_started = time.perf_counter()
    removal = _RemovalCosts(stack, ablation_windows, batch_size, progress)
    for row in rows:
        if row.layer_type == ATTENTION_LAYER and removal.batches:
            row.removal_cost = removal.cost([row.layer])
            progress.update(1)

    analysis = LayerAnalysis(
        model=model_name or getattr(model.config, "_name_or_path", "") or type(model).__name__,
        rows=rows,
        baseline_loss=removal.baseline_loss,
        candidates={},
        settings=dict(
            context_length=context_length,
            fit_tokens=fit_windows.numel(),
            eval_tokens=eval_windows.numel(),
            ablation_tokens=ablation_windows.numel(),
            ridge=ridge,
        ),
    )
    for k in ks:
        analysis.candidates[k] = _measure_candidates(analysis, k, removal, progress)
    progress.close()
    analysis.timings = {
        "fit_pass_seconds": round(fit_seconds, 1),
        "ablation_seconds": round(time.perf_counter() - ablation_started, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return analysis


def _check_settings(context_length: int, ablation_tokens: int, ks: list[int], num_attention_layers: int) -> None:
    if ablation_tokens > 0 and context_length < 2:
        raise ValueError("removal costs need next-token losses: context_length must be >= 2 (or ablation_tokens 0)")
    if ks and ablation_tokens <= 0:
        raise ValueError("recommendations (ks) need removal costs: ablation_tokens must be > 0")
    for k in ks:
        if not 0 < k <= num_attention_layers:
            raise ValueError(f"k={k} is not between 1 and the number of attention layers ({num_attention_layers})")


def _linearity_rows(stack: DecoderStack, fit_windows, eval_windows, ridge: float, batch_size: int, progress):
    """Pass 1: one forward over the fit and eval windows; per attention layer, fit the linear map on the fit
    windows and score it (R^2), cosine and update ratio on the eval windows. One row per layer."""
    attention_layers = stack.attention_layers
    device = stack.model.lm_head.weight.device
    dim = stack.model.config.hidden_size
    stats = {role: {i: _LinearFitStats(dim, device) for i in attention_layers} for role in ("fit", "eval")}
    cosine_sum = dict.fromkeys(attention_layers, 0.0)
    ratio_sum = dict.fromkeys(attention_layers, 0.0)
    captured = {}

    def capture(layer_idx):
        def hook(module, args, kwargs, output):
            normed = kwargs.get("hidden_states", args[0] if args else None)
            captured[layer_idx] = (normed, output[0])

        return hook

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
                    stats[role][layer_idx].add(normed, attn)
                    if role == "eval":
                        x, a = residual.float(), attn.float()
                        cosine_sum[layer_idx] += torch.nn.functional.cosine_similarity(x, x + a, dim=-1).sum().item()
                        ratio_sum[layer_idx] += (a.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).sum().item()
                progress.update(1)
    finally:
        for handle in handles:
            handle.remove()

    rows, num_eval_tokens = [], eval_windows.numel()
    for layer_idx in range(stack.num_layers):
        if layer_idx not in stats["fit"]:
            rows.append(LayerRow(layer_idx, stack.layer_types[layer_idx]))
            continue
        weights = stats["fit"][layer_idx].solve(ridge)
        rows.append(
            LayerRow(
                layer=layer_idx,
                layer_type=ATTENTION_LAYER,
                r2=stats["eval"][layer_idx].r2(weights),
                train_r2=stats["fit"][layer_idx].r2(weights),
                cosine=cosine_sum[layer_idx] / num_eval_tokens,
                update_ratio=ratio_sum[layer_idx] / num_eval_tokens,
            )
        )
    return rows


class _RemovalCosts:
    """Pass 2: every layer's input on the ablation windows is cached once, so the loss with some attention
    blocks dropped reruns only the layers from the lowest dropped one up."""

    def __init__(self, stack: DecoderStack, ablation_windows, batch_size: int, progress):
        self.stack = stack
        self.batches = []
        device = stack.model.lm_head.weight.device
        loss_sum = self.count = 0
        for start in range(0, len(ablation_windows), batch_size):
            input_ids = ablation_windows[start : start + batch_size].to(device)
            hidden, context = stack.prepare(input_ids)
            inputs = []
            for layer_idx in range(stack.num_layers):
                inputs.append(hidden)
                hidden = stack.layer(layer_idx, hidden, context)
            loss, count = stack.loss_sum(hidden, input_ids)
            loss_sum, self.count = loss_sum + loss, self.count + count
            self.batches.append((input_ids, context, inputs))
            progress.update(1)
        self.baseline_loss = loss_sum / self.count if self.count else None

    def cost(self, layers: list[int]) -> float:
        """Held-out loss increase with the attention of `layers` dropped at once."""
        stack, total, first = self.stack, 0.0, min(layers)
        with attention_dropped([stack.attention(i) for i in layers]):
            for input_ids, context, inputs in self.batches:
                hidden = inputs[first]
                for layer_idx in range(first, stack.num_layers):
                    hidden = stack.layer(layer_idx, hidden, context)
                total += stack.loss_sum(hidden, input_ids)[0]
        return total / self.count - self.baseline_loss


def _measure_candidates(analysis: LayerAnalysis, k: int, removal: _RemovalCosts, progress) -> dict[str, dict]:
    """The joint cost and shared pairs of each candidate set for K; a set found under two names is measured once."""
    measured = {}
    sets = analysis.candidate_sets(k)
    progress.total += len(sets)
    for name, layers in sets.items():
        if not any(layers == m["layers"] for m in measured.values()):
            measured[name] = {
                "layers": layers,
                "joint_cost": removal.cost(layers),
                "shared_pairs": analysis.shared_pairs(layers),
            }
        progress.update(1)
    return measured


# ------------------------------------------------------------------------------------ outputs


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

    from ..loading import remote_code_consent, resolve_checkpoint

    name = Path(args.model).name if Path(args.model).expanduser().is_dir() else args.model.replace("/", "--")
    out = args.out or f"analysis-{name}"
    check_output_location(out)  # now, not after a download or the analysis
    try:
        folder = resolve_checkpoint(args.model, args.trust_remote_code, download=True)
    except RuntimeError as error:  # Hub unreachable, registry download failed, ...
        raise FileNotFoundError(f"model {args.model!r} is not available: {error}") from error
    texts = read_text_files(args.data) if args.data else default_analysis_texts()
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {args.dtype!r}")
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
    "lowest_cost_pairs",
    "make_windows",
    "plot_analysis",
    "write_outputs",
]
