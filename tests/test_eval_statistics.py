"""Standard errors of scores, paired differences and means over tasks, against hand-computed values and lm-eval."""

import math

import pytest
from lm_eval.api.metrics import mean_stderr

from modeling_shishu.evaluation.statistics import is_significant, mean_and_stderr, mean_of_tasks, paired_difference


def test_paired_difference_by_hand():
    # Five documents, correct (1) or not (0), listed in different orders for the two models.
    model = {"doc_id": [0, 1, 2, 3, 4], "acc": [1, 1, 0, 1, 0]}
    baseline = {"doc_id": [4, 3, 2, 1, 0], "acc": [1, 0, 0, 0, 1]}
    # d = a - b per document: [0, 1, 0, 1, -1]; mean 0.2; squared deviations .04 + .64 + .04 + .64 + 1.44 = 2.8;
    # sample variance 2.8 / 4 = 0.7; standard error sqrt(0.7 / 5) = 0.374166...
    paired = paired_difference(model, baseline, "acc")
    assert paired["n"] == 5
    assert paired["difference"] == pytest.approx(0.2, abs=1e-15)
    assert paired["stderr"] == pytest.approx(math.sqrt(0.7 / 5), abs=1e-15) and round(paired["stderr"], 6) == 0.374166
    # Unpaired: each model's sample variance is 0.3, so sqrt(0.3 / 5 + 0.3 / 5) = 0.3464; pairing gives more here
    # because these two models disagree more often than chance. Models that agree gain from pairing ...
    unpaired = math.hypot(mean_and_stderr(model["acc"])[1], mean_and_stderr(baseline["acc"])[1])
    assert unpaired == pytest.approx(math.sqrt(0.06 + 0.06))
    similar = {"doc_id": [0, 1, 2, 3, 4], "acc": [1, 1, 0, 1, 1]}  # d = [0, 0, 0, 0, 1]: paired sqrt(0.2 / 5) = 0.2
    assert paired_difference(similar, model, "acc")["stderr"] == pytest.approx(0.2)
    # unpaired: sqrt(0.2 / 5 + 0.3 / 5) = 0.3162
    assert math.hypot(mean_and_stderr(similar["acc"])[1], mean_and_stderr(model["acc"])[1]) == pytest.approx(
        math.sqrt(0.1)
    )
    # ... and identical answers have a paired standard error of zero.
    assert paired_difference(model, model, "acc") == {"n": 5, "difference": 0.0, "stderr": 0.0}


def test_stderr_is_lm_evals():
    values = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    mean, stderr = mean_and_stderr(values)
    assert mean == pytest.approx(4 / 7) and stderr == pytest.approx(mean_stderr(values), rel=1e-12)
    assert mean_and_stderr([1.0]) == (1.0, None)
    with pytest.raises(ValueError, match="no values"):
        mean_and_stderr([])


def test_mean_of_tasks_by_hand():
    # (0.1 - 0.2) / 2 = -0.05; sqrt(0.03^2 + 0.04^2) / 2 = 0.05 / 2 = 0.025
    mean, stderr = mean_of_tasks([(0.1, 0.03), (-0.2, 0.04)])
    assert mean == pytest.approx(-0.05) and stderr == pytest.approx(0.025)
    assert mean_of_tasks([(0.5, 0.1), (0.7, None)]) == (pytest.approx(0.6), None)


def test_significance_reading():
    assert is_significant(-0.08, 0.035) is True  # 2.3 standard errors
    assert is_significant(0.06, 0.035) is False  # 1.7
    assert is_significant(0.06, None) is None


def test_paired_difference_refuses_other_documents():
    with pytest.raises(ValueError, match="different documents"):
        paired_difference({"doc_id": [0, 1], "acc": [1, 0]}, {"doc_id": [0, 2], "acc": [1, 0]}, "acc")
    with pytest.raises(ValueError, match="one value per distinct doc_id"):
        paired_difference({"doc_id": [0, 0], "acc": [1, 0]}, {"doc_id": [0, 1], "acc": [1, 0]}, "acc")
