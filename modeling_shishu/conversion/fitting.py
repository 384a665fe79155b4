"""Local fitting: make each converted MLP-only block compute what the parent computed at its layers.

    from modeling_shishu.conversion.fitting import FitSettings, fit_mlp_only_blocks
    record = fit_mlp_only_blocks(parent, shishu, calibration_ids, FitSettings())

Bottom-up, on the hidden states the converted model itself produces, each block (a share group: one set of
weights, run once per layer of the group) is initialised from the parent's most important neurons of its layers
(`"union"`), gets its down projection by ridge least squares towards the parent's residual updates, then Adam maps
the state entering its first layer to the parent's state leaving its last. The record lists each group's relative
error `|y - t| / |t - x|` data-free, after init and after training. Recipe and measurements: docs/model_family.md
("Local fitting").
"""

import bisect
import dataclasses
import itertools
import logging
import math
import time

import torch
from torch import nn

from ..configuration_shishu import MLP_LAYER


logger = logging.getLogger(__name__)

FIT_INITS = ("union", "converted")
FIT_LOSSES = ("normed", "mse")


@dataclasses.dataclass
class FitSettings:
    tokens: int = 8192  # calibration tokens, cut into windows of `context_length`
    context_length: int = 256
    init: str = "union"  # "union" (parent neurons of the group's layers) or "converted" (the data-free weights)
    solve_down: bool = True  # least-squares down projection before training
    steps: int = 100  # Adam steps per group (0: init and solve only)
    batch_tokens: int = 1024
    learning_rate: float = 1e-3
    loss: str = "normed"
    ridge: float = 1e-3  # relative to the mean diagonal of the feature Gram matrix
    seed: int = 0

    def check(self) -> None:
        if self.init not in FIT_INITS:
            raise ValueError(f"fit init must be one of {FIT_INITS}, got {self.init!r}")
        if self.loss not in FIT_LOSSES:
            raise ValueError(f"fit loss must be one of {FIT_LOSSES}, got {self.loss!r}")
        for name in ("tokens", "context_length", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"fit {name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.learning_rate <= 0 or self.ridge < 0:
            raise ValueError("fit steps must be >= 0, learning_rate > 0 and ridge >= 0")


def fit_groups(config, num_parent_layers: int) -> list[list[int]]:
    """The MLP-only blocks to fit, as lists of layers run by one set of weights; groups holding a layer the
    parent does not have (extra layers) are left as converted."""
    groups = {}
    for layer_idx, layer_type in enumerate(config.layer_types):
        if layer_type == MLP_LAYER:
            groups.setdefault(config.weight_owners[layer_idx], []).append(layer_idx)
    return [group for _, group in sorted(groups.items()) if group[-1] < num_parent_layers]


def calibration_windows(tokenizer, texts: list[str], tokens: int, context_length: int) -> torch.Tensor:
    """`ceil(tokens / context_length)` windows of `context_length` tokens starting at evenly spaced characters of
    the texts (at a line or word start; a window that reaches a text's end goes on into the next one after an
    EOS token). Every part of the corpus is sampled and only the windows are tokenised, not the whole corpus."""
    count = math.ceil(tokens / context_length)
    texts = [text for text in texts if text.strip()]
    ends = list(itertools.accumulate(len(text) for text in texts))
    if not ends:
        raise ValueError("the calibration texts are empty")
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    chars = 12 * context_length  # comfortably more than `context_length` tokens of any text

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    windows = []
    for index in range(count):
        position = index * ends[-1] // count
        text_index = bisect.bisect_right(ends, position)
        text = texts[text_index]
        offset = position - (ends[text_index] - len(text))
        offset = max(text.rfind("\n", 0, offset), text.rfind(" ", 0, offset)) + 1
        ids = encode(text[offset : offset + chars])
        for following in range(1, len(texts)):
            if len(ids) >= context_length:
                break
            ids += separator + encode(texts[(text_index + following) % len(texts)][:chars])
        if len(ids) < context_length:
            raise ValueError(f"the calibration texts hold fewer than {context_length} tokens")
        windows.append(ids[:context_length])
    return torch.tensor(windows)


# ---------------------------------------------------------------------------------------- one group


def _rms_normalised(hidden: torch.Tensor) -> torch.Tensor:
    return hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)


def _loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "normed":
        output, target = _rms_normalised(output), _rms_normalised(target)
    return (output - target).pow(2).mean()


def relative_error(output: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor) -> float:
    """|output - target| / |target - inputs|: 0 is the parent's update exactly, 1 is as far off as no update."""
    return ((output - target).pow(2).sum() / (target - inputs).pow(2).sum().clamp_min(1e-12)).sqrt().item()


def _mlp_features(mlp: nn.Module, normed: torch.Tensor) -> torch.Tensor:
    return mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed)


@torch.no_grad()
def init_from_parent_neurons(block: nn.Module, parent_layers, members: list[int], mlp_inputs: dict) -> dict:
    """Give `block` the most important neurons of the members' parent MLPs, their norm weights folded in.

    Importance of a neuron: mean |activation| on the parent's own MLP inputs x the norm of its down column,
    normalised by its layer's total, so each layer competes with its share of the work.
    """
    width = block.mlp.gate_proj.weight.shape[0]
    candidates = []
    for layer_idx in members:
        mlp = parent_layers[layer_idx].mlp
        importance = _mlp_features(mlp, mlp_inputs[layer_idx]).abs().mean(0) * mlp.down_proj.weight.norm(dim=0)
        importance = importance / importance.sum()
        candidates += [(value, layer_idx, neuron) for neuron, value in enumerate(importance.tolist())]
    chosen = sorted(candidates, reverse=True)[:width]
    chosen.sort(key=lambda item: (item[1], item[2]))
    for target, source in (("gate_proj", "gate_proj"), ("up_proj", "up_proj")):
        rows = [
            getattr(parent_layers[i].mlp, source).weight[n] * parent_layers[i].post_attention_layernorm.weight
            for _, i, n in chosen
        ]
        getattr(block.mlp, target).weight.copy_(torch.stack(rows))
    block.mlp.down_proj.weight.copy_(
        torch.stack([parent_layers[i].mlp.down_proj.weight[:, n] for _, i, n in chosen], 1)
    )
    for name in ("gate_proj", "up_proj"):
        bias = getattr(block.mlp, name).bias
        if bias is not None:
            bias.copy_(torch.stack([getattr(parent_layers[i].mlp, name).bias[n] for _, i, n in chosen]))
    if block.mlp.down_proj.bias is not None:
        block.mlp.down_proj.bias.copy_(torch.stack([parent_layers[i].mlp.down_proj.bias for i in members]).mean(0))
    block.post_attention_layernorm.weight.fill_(1.0)
    return {str(i): sum(1 for _, layer_idx, _ in chosen if layer_idx == i) for i in members}


@torch.no_grad()
def solve_down_projection(block: nn.Module, inputs: list[torch.Tensor], updates: list[torch.Tensor], ridge: float):
    """Ridge least squares for `down_proj`: the block's features of each input -> the wanted residual update."""
    features = torch.cat([_mlp_features(block.mlp, block.post_attention_layernorm(x)) for x in inputs]).double()
    if block.mlp.down_proj.bias is not None:
        features = torch.cat([features, torch.ones_like(features[:, :1])], 1)
    updates = torch.cat(updates).double()
    gram = features.T @ features
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    solution = torch.linalg.solve(gram, features.T @ updates)
    width = block.mlp.down_proj.weight.shape[1]
    block.mlp.down_proj.weight.copy_(solution[:width].T.to(block.mlp.down_proj.weight.dtype))
    if block.mlp.down_proj.bias is not None:
        block.mlp.down_proj.bias.copy_(solution[width].to(block.mlp.down_proj.bias.dtype))


def train_block(block, run_group, inputs, target, settings: FitSettings, generator, progress=None) -> None:
    """Adam with warmup and cosine decay on random token batches; the block runs as the model runs it."""
    optimizer = torch.optim.Adam(block.parameters(), lr=settings.learning_rate)
    warmup = max(1, settings.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
    )
    for _ in range(settings.steps):
        rows = torch.randint(0, inputs.shape[0], (settings.batch_tokens,), generator=generator)
        loss = _loss(settings.loss, run_group(inputs[rows]), target[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress.update(1)


# ------------------------------------------------------------------------------------------ the model


@torch.no_grad()
def _parent_states(parent_stack, calibration_ids: torch.Tensor, members: set[int]):
    """The parent's hidden state leaving every layer in `members`, and the (normalised) inputs of their MLPs."""
    hidden, context = parent_stack.prepare(calibration_ids)
    leaving, mlp_inputs, hooks = {}, {}, []
    for layer_idx in members:

        def keep_input(module, args, layer_idx=layer_idx):
            mlp_inputs[layer_idx] = args[0].reshape(-1, args[0].shape[-1])

        hooks.append(parent_stack.base.layers[layer_idx].mlp.register_forward_pre_hook(keep_input))
    try:
        for layer_idx in range(max(members) + 1):
            hidden = parent_stack.layer(layer_idx, hidden, context)
            if layer_idx in members:
                leaving[layer_idx] = hidden.reshape(-1, hidden.shape[-1])
    finally:
        for hook in hooks:
            hook.remove()
    return leaving, mlp_inputs


def _fit_group(block, group, inputs, targets, parent_stack, mlp_inputs, settings, generator, progress):
    """Init, solve and train one group's block on the converted model's `inputs` against the parent's states
    `targets` (one per layer of the group); return its record entry and the block's fitted outputs."""
    started = time.time()

    def run_group(states):
        for _ in group:
            states = block(states)
        return states

    with torch.no_grad():
        error_converted = relative_error(run_group(inputs), targets[-1], inputs)
        neurons = None
        if settings.init == "union":
            neurons = init_from_parent_neurons(block, parent_stack.base.layers, group, mlp_inputs)
        if settings.solve_down:
            layer_inputs = [inputs] + targets[:-1]
            updates = [target - source for source, target in zip(layer_inputs, targets)]
            solve_down_projection(block, layer_inputs, updates, settings.ridge)
        error_init = relative_error(run_group(inputs), targets[-1], inputs)
    with torch.enable_grad():
        train_block(block, run_group, inputs, targets[-1], settings, generator, progress)
    with torch.no_grad():
        outputs = run_group(inputs)
        error_fitted = relative_error(outputs, targets[-1], inputs)
    entry = {
        "layers": group,
        "relative_error": {
            "converted": round(error_converted, 4),
            "init": round(error_init, 4),
            "fitted": round(error_fitted, 4),
        },
        "seconds": round(time.time() - started, 1),
    }
    if neurons is not None:
        entry["neurons_from_layer"] = neurons
    return entry, outputs


def fit_mlp_only_blocks(
    parent, model, calibration_ids: torch.Tensor, settings: FitSettings, show_progress=True
) -> dict:
    """Fit every MLP-only block of `model` (a ShishuLM converted from `parent`) in place; return the record."""
    from tqdm.auto import tqdm

    from .decoder_stack import DecoderStack

    settings.check()
    started = time.time()
    num_parent_layers = parent.config.num_hidden_layers
    groups = fit_groups(model.config, num_parent_layers)
    record = {"settings": dataclasses.asdict(settings), "tokens": calibration_ids.numel(), "groups": []}
    if not groups:
        return record
    parent_stack, stack = DecoderStack(parent), DecoderStack(model)
    leaving, mlp_inputs = _parent_states(parent_stack, calibration_ids, {i for group in groups for i in group})
    generator = torch.Generator().manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    progress = tqdm(
        total=len(groups) * settings.steps, desc="fitting MLP-only blocks", unit="step", disable=not show_progress
    )
    with torch.no_grad():
        hidden, context = stack.prepare(calibration_ids)
    width = hidden.shape[-1]
    next_group = 0
    layer_idx = 0
    try:
        while layer_idx < stack.num_layers:
            group = groups[next_group] if next_group < len(groups) else None
            if group is None or layer_idx != group[0]:
                with torch.no_grad():
                    hidden = stack.layer(layer_idx, hidden, context)
                layer_idx += 1
                continue
            block = model.model.layers[group[0]]
            inputs = hidden.reshape(-1, width)
            targets = [leaving[i] for i in group]
            entry, outputs = _fit_group(
                block, group, inputs, targets, parent_stack, mlp_inputs, settings, generator, progress
            )
            record["groups"].append(entry)
            errors = entry["relative_error"]
            progress.set_postfix(
                layers=f"{group[0]}-{group[-1]}", error=f"{errors['converted']:.2f}->{errors['fitted']:.2f}"
            )
            hidden = outputs.view_as(hidden)
            layer_idx = group[-1] + 1
            next_group += 1
    finally:
        progress.close()
        model.train(was_training)
    record["seconds"] = round(time.time() - started, 1)
    return record


__all__ = ["FIT_INITS", "FIT_LOSSES", "FitSettings", "calibration_windows", "fit_groups", "fit_mlp_only_blocks"]
