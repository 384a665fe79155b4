"""Multiple-choice log-likelihoods as an lm-eval model (`--scorer shared-context`): one forward pass per question
instead of one per choice, with lm-eval's numbers."""

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import PreTrainedModel


# Architectures whose forward honours a 4-D attention mask and explicit position ids, and whose logits are the
# head applied to the last hidden state (no soft-capping or scaling): the Llama family ShishuLM converts.
SHARED_CONTEXT_MODEL_TYPES = ("shishu", "llama", "qwen2", "mistral")
SHARED_CONTEXT_ATTENTION = ("sdpa", "eager")


class SharedContextLM(HFLM):
    """`HFLM` that scores all continuations of a context in one packed row.

    lm-eval scores a question with k choices as k requests (context + choice), each a forward pass over the whole
    context, and runs the language-model head and a log-softmax over the full vocabulary at every position.
    `SharedContextLM` is lm-eval's `HFLM` with one change in `_loglikelihood_tokens`: the requests that share a
    context are packed into one row,

        context | choice 1 (all but its last token) | choice 2 (...) | ...

    with an attention mask in which every choice token sees the context and the earlier tokens of its own choice,
    and position ids that restart after the context for every choice. Each scored token therefore gets exactly the
    inputs and positions it has in lm-eval's own request, and the head runs only at the positions that predict a
    choice token. What comes out is lm-eval's `(log-likelihood, is_greedy)` per request, computed the same way
    (the head in the model's dtype, the log-softmax in lm-eval's `softmax_dtype`); tasks, metrics, few-shot
    sampling, data parallelism and per-sample logging stay lm-eval's.

    Everything else (rolling log-likelihoods, generation, requests that lm-eval would truncate, models whose
    forward does not take a custom 4-D mask and position ids) goes through `HFLM` unchanged.

    `stats` counts what went through the shared path: questions (rows), requests and tokens run.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stats = {"questions": 0, "requests": 0, "tokens": 0, "plain_requests": 0}

    def shares_contexts(self) -> bool:
        model = self.model
        if self.backend != "causal" or not isinstance(model, PreTrainedModel):
            return False
        config = model.config
        # A sliding window would be dropped by a custom mask.
        sliding = getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
        return (
            config.model_type in SHARED_CONTEXT_MODEL_TYPES
            and config._attn_implementation in SHARED_CONTEXT_ATTENTION
            and not sliding
        )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not self.shares_contexts():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        groups: dict[tuple, list[int]] = {}
        plain = []
        for index, (request_str, context, continuation) in enumerate(requests):
            # Rolling windows (no request string) and requests lm-eval would truncate keep lm-eval's path.
            if request_str is None or len(context) + len(continuation) > self.max_length:
                plain.append(index)
            else:
                groups.setdefault(tuple(context), []).append(index)
        rows = []
        for context, members in groups.items():
            length = len(context) + sum(len(requests[i][2]) - 1 for i in members)
            if length > self.max_length:
                plain += members
            else:
                rows.append((length, context, members))
        results: list = [None] * len(requests)
        if plain:
            answers = super()._loglikelihood_tokens(
                [requests[i] for i in plain], disable_tqdm=disable_tqdm, override_bs=override_bs
            )
            for index, answer in zip(plain, answers, strict=True):
                results[index] = answer
            self.stats["plain_requests"] += len(plain)
        # Longest rows first, like lm-eval: little padding per batch, and any memory error comes at once.
        rows.sort(key=lambda row: (-row[0], row[1]))
        batch_size = override_bs or (
            self.batch_size if isinstance(self.batch_size, int) else self._detect_batch_size()
        )
        progress = tqdm(
            total=len(rows), disable=disable_tqdm or self.rank != 0, desc="Scoring questions (shared context)"
        )
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            for (_, _, members), answers in zip(batch, self._score_rows(batch, requests), strict=True):
                for index, answer in zip(members, answers, strict=True):
                    results[index] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
            self.stats["questions"] += len(batch)
            self.stats["requests"] += sum(len(members) for _, _, members in batch)
            self.stats["tokens"] += len(batch) * batch[0][0]
            progress.update(len(batch))
        progress.close()
        return results

    def _score_rows(self, batch, requests) -> list[list[tuple[float, bool]]]:
        """One forward pass over a batch of packed rows; per row, the answers of its requests in order."""
        width = batch[0][0]
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        position_ids = torch.zeros(len(batch), width, dtype=torch.long)
        # Padding positions attend to themselves only, so that no row of the mask is empty.
        allowed = torch.eye(width, dtype=torch.bool).repeat(len(batch), 1, 1)
        rows, positions, targets, spans = [], [], [], []
        for row, (_, context, members) in enumerate(batch):
            size = len(context)
            input_ids[row, :size] = torch.tensor(context)
            position_ids[row, :size] = torch.arange(size)
            allowed[row, :size, :size] = torch.ones(size, size, dtype=torch.bool).tril()
            offset, row_spans = size, []
            for index in members:
                continuation = requests[index][2]
                inputs = continuation[:-1]
                end = offset + len(inputs)
                input_ids[row, offset:end] = torch.tensor(inputs, dtype=torch.long)
                position_ids[row, offset:end] = torch.arange(size, size + len(inputs))
                allowed[row, offset:end, :size] = True
                allowed[row, offset:end, offset:end] = torch.ones(len(inputs), len(inputs), dtype=torch.bool).tril()
                # The last context token predicts the first continuation token, each continuation input the next.
                predicting = [size - 1, *range(offset, end)]
                row_spans.append((len(targets), len(targets) + len(continuation)))
                rows += [row] * len(predicting)
                positions += predicting
                targets += continuation
                offset = end
            spans.append(row_spans)

        model = self.model
        if model.config._attn_implementation == "sdpa":
            mask = allowed[:, None]
        else:  # eager attention adds the mask to the scores
            mask = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)[
                :, None
            ]
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            hidden = model.base_model(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=position_ids.to(self.device),
                use_cache=False,
            ).last_hidden_state
            logits = model.get_output_embeddings()(hidden[torch.tensor(rows), torch.tensor(positions)])
        log_probs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        targets = torch.tensor(targets, device=log_probs.device)
        greedy = log_probs.argmax(dim=-1) == targets
        scores = log_probs.gather(1, targets[:, None]).squeeze(1)
        return [[(float(scores[a:b].sum()), bool(greedy[a:b].all())) for a, b in row_spans] for row_spans in spans]


__all__ = ["SharedContextLM"]
