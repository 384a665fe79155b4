"""Standard errors of evaluation scores: one model's mean, the paired difference of two models, a mean over tasks.
Definitions as lm-eval's: sample standard deviation (n - 1) over sqrt(n)."""

import math
from collections.abc import Sequence


# |difference| above this many standard errors reads as significant (about 95% two-sided).
SIGNIFICANCE_Z = 2.0


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample standard deviation / sqrt(n)); no standard error below two values."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    variance = math.fsum((value - mean) ** 2 for value in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def paired_difference(model: dict, baseline: dict, metric: str) -> dict:
    """`metric` of `model` minus `baseline` over the documents both were scored on, with its paired standard error.

    `model` and `baseline` are per-document records `{"doc_id": [...], metric: [...]}`. Returns `{"n", "difference",
    "stderr"}`; the two records must hold the same documents.

    The differences d_i = a_i - b_i average to the difference of the two scores, with standard error
    sd(d) / sqrt(n). Pairing removes what the documents contribute to both models' variance (a question easy or
    hard for both), so the paired standard error is below the unpaired sqrt(se_a^2 + se_b^2) whenever the two
    models agree more often than chance.
    """
    scores = []
    for record in (model, baseline):
        if len(record["doc_id"]) != len(record[metric]) or len(set(record["doc_id"])) != len(record["doc_id"]):
            raise ValueError(f"per-document {metric} records need one value per distinct doc_id")
        scores.append(dict(zip(record["doc_id"], record[metric])))
    if scores[0].keys() != scores[1].keys():
        raise ValueError("the two models were scored on different documents; a paired difference needs the same ones")
    differences = [scores[0][doc] - scores[1][doc] for doc in sorted(scores[0])]
    difference, stderr = mean_and_stderr(differences)
    return {"n": len(differences), "difference": difference, "stderr": stderr}


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, float | None]:
    """sum(numerators) / sum(denominators) over paired documents, with its standard error by the delta method.

    With r the ratio and d_i = x_i - r y_i, the standard error is sd(d) / (sqrt(n) mean(y)): the paired analogue of
    `paired_difference` for a ratio of two models' scores on the same documents (model / parent accuracy, or
    parent / model log-loss). Identical inputs give exactly 1 with standard error 0.
    """
    n = len(numerators)
    if n != len(denominators) or n == 0:
        raise ValueError("a paired ratio needs one numerator and one denominator per document")
    total = math.fsum(denominators)
    if total == 0:
        raise ValueError("a paired ratio needs a denominator that does not sum to zero")
    ratio = math.fsum(numerators) / total
    if list(numerators) == list(denominators):
        return 1.0, 0.0 if n > 1 else None
    if n < 2:
        return ratio, None
    _, stderr = mean_and_stderr([x - ratio * y for x, y in zip(numerators, denominators)])
    return ratio, stderr / (total / n)


def z_above(value: float, reference: float, stderr: float | None) -> float | None:
    """How many standard errors `value` lies above `reference` (None without a usable standard error)."""
    if stderr is None or stderr <= 0:
        return None
    return (value - reference) / stderr


def mean_of_tasks(estimates: Sequence[tuple[float, float | None]]) -> tuple[float, float | None]:
    """Unweighted mean of per-task `(value, stderr)` estimates from independent tasks, and its standard error
    sqrt(sum se_t^2) / T."""
    if not estimates:
        raise ValueError("no tasks to average")
    mean = math.fsum(value for value, _ in estimates) / len(estimates)
    if any(stderr is None for _, stderr in estimates):
        return mean, None
    return mean, math.sqrt(math.fsum(stderr**2 for _, stderr in estimates)) / len(estimates)


def is_significant(difference: float, stderr: float | None, z: float = SIGNIFICANCE_Z) -> bool | None:
    """Whether |difference| exceeds z standard errors (None when there is no standard error)."""
    if stderr is None:
        return None
    return abs(difference) > z * stderr


__all__ = [
    "SIGNIFICANCE_Z",
    "is_significant",
    "mean_and_stderr",
    "mean_of_tasks",
    "paired_difference",
    "paired_ratio",
    "z_above",
]
