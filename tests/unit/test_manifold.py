"""Tests for facelens.explain.manifold: layouts, metrics, alignment, figures, HTML."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from facelens.constants import EXPRESSIONS
from facelens.errors import DataError
from facelens.manifold.alignment import align_to_reference, alignment_subset
from facelens.manifold.analysis import run_manifold_analysis
from facelens.manifold.figures import panel_figure
from facelens.manifold.html import interactive_html, thumbnail_png
from facelens.manifold.layouts import embed_2d
from facelens.manifold.quality import knn_accuracy, manifold_metrics
from facelens.manifold.reference import ManifoldReference, load_reference, save_reference


def _rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


# ---------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_shape_and_determinism(blobs, method: str) -> None:
    X, _ = blobs()
    X_before = X.copy()
    a = embed_2d(X, method, seed=3)
    b = embed_2d(X, method, seed=3)
    assert a.shape == (len(X), 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(X, X_before)  # input not mutated


def test_tsne_adapts_perplexity_to_tiny_sets(blobs) -> None:
    X, _ = blobs(n_per=3, n_classes=3)  # 9 samples: default perplexity 30 would fail
    assert embed_2d(X, "tsne", seed=0).shape == (9, 2)


def test_embed_rejects_bad_input(blobs) -> None:
    X, _ = blobs()
    with pytest.raises(ValueError, match="method must be one of"):
        embed_2d(X, "mds", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D array"):
        embed_2d(X[:, 0], "pca", seed=0)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        embed_2d(bad, "pca", seed=0)
    with pytest.raises(ValueError, match="at least"):
        embed_2d(X[:3], "tsne", seed=0)


# ---------------------------------------------------------------------------- metrics


def test_metrics_on_separated_blobs_are_high(blobs) -> None:
    X, labels = blobs()
    met = manifold_metrics(X, embed_2d(X, "pca", seed=0), labels, label_names=EXPRESSIONS)
    assert met["knn_accuracy"] == pytest.approx(1.0)
    assert met["knn_accuracy_input"] == pytest.approx(1.0)
    assert met["silhouette"] > 0.7
    assert met["trustworthiness"] > 0.85
    assert met["knn_chance"] == pytest.approx(0.25)
    assert set(met["silhouette_per_class"]) == set(EXPRESSIONS[:4])


def test_metrics_with_random_labels_are_near_chance() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8))
    labels = rng.integers(0, 4, size=300)
    met = manifold_metrics(X, embed_2d(X, "pca", seed=0), labels)
    assert met["knn_accuracy"] < 0.4  # chance is ~0.25
    assert abs(met["silhouette"]) < 0.15


def test_trustworthiness_drops_for_scrambled_layout(blobs) -> None:
    X, labels = blobs()
    Y = embed_2d(X, "pca", seed=0)
    scrambled = np.random.default_rng(0).permutation(Y)
    good = manifold_metrics(X, Y, labels)["trustworthiness"]
    bad = manifold_metrics(X, scrambled, labels)["trustworthiness"]
    assert good - bad > 0.3


def test_knn_accuracy_matches_sklearn_leave_one_out() -> None:
    rng = np.random.default_rng(2)
    Y = rng.normal(size=(60, 2))
    labels = (Y[:, 0] + 0.7 * rng.normal(size=60) > 0).astype(int) + (Y[:, 1] > 1)
    expected = cross_val_score(
        KNeighborsClassifier(n_neighbors=5), Y, labels, cv=LeaveOneOut()
    ).mean()
    assert knn_accuracy(Y, labels, k=5) == pytest.approx(expected)


def test_metrics_without_labels_and_with_one_class(blobs) -> None:
    X, _ = blobs()
    Y = embed_2d(X, "pca", seed=0)
    assert set(manifold_metrics(X, Y, None)) == {"n", "k", "trustworthiness"}
    one = manifold_metrics(X, Y, np.zeros(len(X), dtype=int))
    assert np.isnan(one["silhouette"])
    assert one["knn_accuracy"] == 1.0


# ---------------------------------------------------------------------------- alignment


def test_alignment_undoes_rotation_reflection_scale_and_shift() -> None:
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(50, 2))
    ids = [f"s{i:03d}" for i in range(50)]
    reflect = np.diag([1.0, -1.0])
    copy1 = 3.5 * ref @ _rotation(0.9) + np.array([10.0, -4.0])
    copy2 = 0.2 * ref @ reflect @ _rotation(-2.1) - 7.0
    # The copies list the samples in another order and carry extra samples.
    perm = rng.permutation(50)
    extra = rng.normal(size=(5, 2))
    ids2 = [ids[i] for i in perm] + [f"x{i}" for i in range(5)]
    copy2 = np.vstack([copy2[perm], extra])
    a1 = align_to_reference(copy1, ids, ref, ids)
    a2 = align_to_reference(copy2, ids2, ref, ids)
    np.testing.assert_allclose(a1, ref, atol=1e-9)
    np.testing.assert_allclose(a2[:50], ref[perm], atol=1e-9)
    assert a2.shape == (55, 2)
    assert not np.allclose(copy1, ref)  # the test data really were transformed


def test_alignment_errors() -> None:
    ref = np.random.default_rng(0).normal(size=(10, 2))
    ids = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="shared"):
        align_to_reference(ref, [f"z{i}" for i in range(10)], ref, ids)
    with pytest.raises(ValueError, match="dimensions"):
        align_to_reference(np.zeros((10, 3)), ids, ref, ids)


def test_alignment_subset_is_seeded_and_order_free() -> None:
    ids = [f"id{i}" for i in range(100)]
    a = alignment_subset(ids, 10, seed=1)
    b = alignment_subset(list(reversed(ids)), 10, seed=1)
    assert a == b == sorted(a)
    assert len(a) == 10
    assert alignment_subset(ids, 10, seed=2) != a
    assert alignment_subset(ids, 500, seed=1) == sorted(ids)


def test_reference_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref = ManifoldReference(
        ids=("a", "b", "c", "d"),
        layouts={"penultimate/pca": rng.normal(size=(4, 2)), "p/umap3d": rng.normal(size=(4, 3))},
        meta={"data_version": "abc"},
    )
    path = tmp_path / "ref.json"
    save_reference(ref, path)
    back = load_reference(path)
    assert back.ids == ref.ids
    for key, lay in ref.layouts.items():
        np.testing.assert_array_equal(back.layouts[key], lay)
    assert back.meta == {"data_version": "abc"}
    assert [p.name for p in tmp_path.iterdir()] == ["ref.json"]  # written atomically


def test_a_foreign_reference_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "0123abcd.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(DataError, match=r"0123abcd\.json: not a manifold reference.*delete it"):
        load_reference(path)


# ---------------------------------------------------------------------------- figures / HTML


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_panel_figure_categorical_continuous_identity(blobs) -> None:
    X, labels = blobs()
    Y = embed_2d(X, "pca", seed=0)
    attractive = np.linspace(1.0, 9.0, len(X))
    identity = np.array([f"p{i % 30}" for i in range(len(X))])
    panels = panel_figure(
        Y,
        {"expression": labels, "attractive": attractive, "id": identity},
        category_names={"expression": EXPRESSIONS},
    )
    assert isinstance(panels, Figure)
    legend = panels.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(EXPRESSIONS[:4])
    assert sum(ax.get_visible() for ax in panels.axes) >= 3
    buf = io.BytesIO()
    panels.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_interactive_html_is_offline_and_has_thumbnails(blobs) -> None:
    X, labels = blobs(n_per=5, n_classes=2)
    ids = [f"img{i:02d}" for i in range(len(X))]
    thumbs = [_png((i * 20, 0, 0)) for i in range(len(X))]
    Y2 = embed_2d(X, "pca", seed=0)
    Y3 = embed_2d(X, "pca", seed=0, n_components=3)
    page = interactive_html(
        {"pca": Y2, "pca 3d": Y3},
        ids,
        labels,
        label_names=EXPRESSIONS,
        hover={"attractive": np.linspace(1, 9, len(X)), "identity": np.array(ids)},
        thumbnails=thumbs,
    )
    assert page.count("Plotly.newPlot") == 2
    # Works offline: plotly.js is inlined once and no script is loaded from elsewhere.
    assert "<script src=" not in page.replace('"', "").replace("'", "")
    assert page.count("* plotly.js v") == 1
    for t in thumbs:
        assert base64.b64encode(t).decode() in page
    assert "scatter3d" in page
    assert "plotly_hover" in page and "fl-thumb" in page
    assert "angry" in page and "img07" in page


def test_interactive_html_escapes_ids(blobs) -> None:
    X, _ = blobs(n_per=3, n_classes=2)
    ids = [f"</script><b>{i}" for i in range(len(X))]
    page = interactive_html({"p": embed_2d(X, "pca", seed=0)}, ids, None)
    assert "</script><b>" not in page


# ---------------------------------------------------------------------------- whole analysis


def test_run_manifold_analysis_rejects_bad_arguments(blobs) -> None:
    X, labels = blobs()
    ids = [str(i) for i in range(len(X))]
    with pytest.raises(ValueError, match="methods must be"):
        run_manifold_analysis({"e": X}, ids, labels, EXPRESSIONS, methods=("mds",))
    with pytest.raises(ValueError, match="rows"):
        run_manifold_analysis({"e": X[:-1]}, ids, labels, EXPRESSIONS, methods=("pca",))


def test_thumbnail_png() -> None:
    img = np.zeros((96, 64, 3), dtype=np.uint8)
    out = Image.open(io.BytesIO(thumbnail_png(img, size=48)))
    assert max(out.size) == 48


def test_run_manifold_analysis_and_alignment_across_runs(blobs) -> None:
    X, labels = blobs(n_per=12, n_classes=3)
    n = len(X)
    ids = [f"f{i:03d}" for i in range(n)]
    attrs = np.random.default_rng(0).normal(size=(n, 40))
    common = {
        "ids": ids,
        "labels": labels,
        "label_names": EXPRESSIONS,
        "colour_by": {"attractive": np.linspace(1, 9, n), "identity": np.array(ids)},
        "thumbnails": [_png((0, i, 0)) for i in range(n)],
        "methods": ("pca", "tsne"),
        "seed": 0,
        "anchors": 20,
    }
    first = run_manifold_analysis({"penultimate": X, "attributes": attrs}, **common)
    assert set(first.layouts) == {
        "penultimate/pca",
        "penultimate/tsne",
        "attributes/pca",
        "attributes/tsne",
    }
    assert not any(first.aligned.values())
    assert set(first.figures) == {k.replace("/", "_") for k in first.layouts}
    assert first.metrics["penultimate/pca"]["knn_accuracy"] == pytest.approx(1.0)
    assert len(first.reference.ids) == 20
    flat = first.flat_metrics()
    assert "penultimate.tsne.trustworthiness" in flat
    assert f"penultimate.pca.silhouette.{EXPRESSIONS[0]}" in flat
    assert "manifold.html" in first.html

    # A second run whose features are a rotated copy: aligned layouts coincide with the first.
    q, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(16, 16)))
    second = run_manifold_analysis(
        {"penultimate": X @ q * 2.0, "attributes": attrs},
        reference=ManifoldReference.from_json(first.reference.to_json()),
        **common,
    )
    assert all(second.aligned.values())
    # PCA of a rotated, scaled copy is the same layout up to scale/reflection -> equal after
    # alignment to the first run's reference.
    np.testing.assert_allclose(
        second.layouts["penultimate/pca"], first.layouts["penultimate/pca"], atol=1e-6
    )
    assert second.reference.ids == first.reference.ids
    json.loads(second.reference.to_json())
