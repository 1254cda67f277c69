"""Pure metrics: hand-computed cases and agreement with scikit-learn / SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from facelens.training.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    correlation_ci,
    macro_f1,
    mean_r,
    pearson_columns,
    per_class_f1,
    regression_report,
    spearman_columns,
)


def test_hand_computed_classification() -> None:
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # class 0: tp=1 fp=1 fn=1 -> 0.5; class 1: tp=2 fp=1 fn=0 -> 0.8; class 2: 0
    np.testing.assert_allclose(per_class_f1(y_true, y_pred, 3), [0.5, 0.8, 0.0])
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 200)
    y_pred = np.where(rng.random(200) < 0.5, y_true, rng.integers(0, 6, 200))
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert macro_f1(y_true, y_pred, 7) == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro")
    )
    np.testing.assert_allclose(
        per_class_f1(y_true, y_pred, 7),
        skm.f1_score(y_true, y_pred, average=None, labels=range(7), zero_division=0),
    )
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 7), skm.confusion_matrix(y_true, y_pred, labels=range(7))
    )


def test_macro_f1_ignores_absent_classes() -> None:
    # class 2 never appears: like sklearn, it does not drag the mean to zero
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 7) == 1.0


def test_classification_report() -> None:
    names = ["a", "b", "c"]
    scores = np.array([[2.0, 0, 0], [0, 3, 0], [0, 0, 1], [1, 0, 0]])
    y_true = np.array([0, 1, 2, 2])
    rep = classification_report(y_true, scores, names)
    assert rep["n"] == 4 and rep["accuracy"] == 0.75
    assert rep["support"] == {"a": 1, "b": 1, "c": 2}
    assert rep["per_class_f1"]["c"] == pytest.approx(2 / 3)
    assert rep["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        classification_report([0, 3], [0, 1], names)


def test_correlations_against_scipy() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(50, 3))
    p = t + rng.normal(scale=[0.1, 1.0, 3.0], size=(50, 3))
    p[:, 2] = np.round(p[:, 2])  # ties for Spearman
    before = p.copy()
    r = pearson_columns(t, p)
    rho = spearman_columns(t, p)
    for j in range(3):
        assert r[j] == pytest.approx(stats.pearsonr(t[:, j], p[:, j]).statistic)
        assert rho[j] == pytest.approx(stats.spearmanr(t[:, j], p[:, j]).statistic)
    assert np.array_equal(p, before)  # inputs untouched
    assert r[0] > r[1] > r[2]


def test_fisher_ci_hand_computed() -> None:
    # r = 0.5, n = 28: z = atanh(0.5) = 0.549306, se = 1/5, z +/- 1.959964 * 0.2
    lo, hi = correlation_ci(0.5, 28)
    assert lo == pytest.approx(math.tanh(0.549306 - 0.391993), abs=1e-5)
    assert hi == pytest.approx(math.tanh(0.549306 + 0.391993), abs=1e-5)
    slo, shi = correlation_ci(0.5, 28, spearman=True)
    assert slo < lo and shi > hi  # the Spearman SE is wider
    assert np.isnan(correlation_ci(0.5, 3)).all()
    # agrees with SciPy's Fisher-z interval for Pearson
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    res = stats.pearsonr(x, y).confidence_interval(0.95)
    np.testing.assert_allclose(
        correlation_ci(pearson_columns(x, y)[0], 40), [res.low, res.high], rtol=1e-6
    )


def test_constant_column_is_nan_and_mean_ignores_it() -> None:
    t = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    p = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    r = pearson_columns(t, p)
    assert r[0] > 0.9 and np.isnan(r[1])
    assert mean_r(r) == pytest.approx(r[0])
    assert math.isnan(mean_r([np.nan, np.nan]))


def test_regression_report() -> None:
    t = np.array([[1.0, 4.0], [2.0, 3.0], [3.0, 2.0], [4.0, 1.0], [5.0, 0.0]])
    p = np.array([[1.1, 0.0], [1.9, 1.0], [3.2, 2.0], [3.9, 3.0], [5.0, 4.0]])
    rep = regression_report(t, p, ["up", "down"])
    assert rep["n"] == 5
    assert rep["pearson"]["down"] == pytest.approx(-1.0)
    assert rep["spearman"]["up"] == pytest.approx(1.0)
    assert rep["mean_pearson"] == pytest.approx((rep["pearson"]["up"] - 1.0) / 2)
    lo, hi = rep["pearson_ci"]["up"]
    assert lo < rep["pearson"]["up"] < hi
    with pytest.raises(ValueError, match="2 output columns but 1 names"):
        regression_report(t, p, ["up"])
