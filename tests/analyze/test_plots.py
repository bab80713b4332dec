"""The plots as a reader sees them: files written, axes labelled and scaled, frontier right."""

import json

import matplotlib.image
import pytest

import prunekit as pk
from prunekit.analyze import SensitivityProfile, SensitivityRow
from prunekit.analyze.plots import (
    DPI,
    ParetoPoint,
    pareto_figure,
    pareto_frontier,
    plot_pareto,
    plot_sensitivity,
    points_from_reports,
    sensitivity_figure,
)

POINTS = [
    ParetoPoint("dense", 4_000_000, 0.99),
    ParetoPoint("90% sparse", 600_000, 0.98),
    ParetoPoint("int8", 1_000_000, 0.985),
    ParetoPoint("worse int8", 1_100_000, 0.97),  # bigger and less accurate than int8
    ParetoPoint("tiny", 100_000, 0.80),
]


@pytest.fixture
def profile():
    rows = [
        SensitivityRow(layer, s, 95.0 - k * s * 30, 100 * (k + 1))
        for k, layer in enumerate(["conv1", "fc", "out"])
        for s in (0.1, 0.5, 0.9)
    ]
    return SensitivityProfile(95.0, rows, "top-1 accuracy (%)")


def _png_size(path):
    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]  # width, height in pixels


def test_sensitivity_plot_has_one_curve_per_layer_and_labelled_axes(profile, tmp_path):
    fig = sensitivity_figure(profile, title="LeNet")
    (ax,) = fig.axes
    assert ax.get_xlabel() == "sparsity of the layer pruned alone"
    assert ax.get_ylabel() == "top-1 accuracy (%)"
    assert ax.get_title() == "LeNet"
    assert ax.get_xlim() == (0.0, 1.0)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["conv1", "fc", "out", "dense"]
    assert list(lines["out"].get_xdata()) == [0.1, 0.5, 0.9]
    assert list(lines["out"].get_ydata()) == [r.metric for r in profile.curve("out")]
    assert lines["dense"].get_linestyle() == "--" and lines["dense"].get_ydata()[0] == 95.0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)

    path = plot_sensitivity(profile, tmp_path / "sub" / "s.png")
    assert path.stat().st_size > 10_000
    assert _png_size(path) == (round(7.5 * DPI), round(4.5 * DPI))


def test_pareto_frontier_keeps_only_undominated_points():
    front = pareto_frontier(POINTS)
    assert [p.label for p in front] == ["tiny", "90% sparse", "int8", "dense"]
    assert pareto_frontier([POINTS[0], ParetoPoint("same size, worse", 4_000_000, 0.5)]) == [
        POINTS[0]
    ]


def test_pareto_plot_labels_points_and_draws_the_frontier(tmp_path):
    fig = pareto_figure(POINTS)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "size on disk (bytes, log scale)"
    assert ax.get_ylabel() == "accuracy"
    assert sorted(t.get_text() for t in ax.texts) == sorted(p.label for p in POINTS)
    (frontier,) = [line for line in ax.get_lines() if line.get_label() == "Pareto frontier"]
    assert list(frontier.get_xdata()) == [100_000, 600_000, 1_000_000, 4_000_000]
    assert pareto_figure(POINTS, x="params").axes[0].get_xscale() == "linear"

    path = plot_pareto(POINTS, tmp_path / "p.png")
    assert path.stat().st_size > 10_000
    assert _png_size(path) == (round(7.0 * DPI), round(4.5 * DPI))
    with pytest.raises(pk.PrunekitError, match="nothing to plot"):
        plot_pareto([], tmp_path / "empty.png")


def _run_dir(tmp_path, name, before, after):
    d = tmp_path / name
    d.mkdir()
    comparison = {"before": before, "after": after, "ratios": {}, "deltas": {}}
    (d / "report.json").write_text(json.dumps({"comparison": comparison}))
    return d


def test_points_come_from_run_reports(tmp_path):
    dense = {"artifact_bytes": 1000, "params": 500, "accuracy": 0.99}
    a = _run_dir(
        tmp_path, "sparse", dense, {"artifact_bytes": 300, "params": 500, "accuracy": 0.97}
    )
    b = _run_dir(tmp_path, "int8", dense, {"artifact_bytes": 260, "params": 500, "accuracy": 0.98})
    points = points_from_reports([a, b])
    assert points == [
        ParetoPoint("sparse", 300, 0.97),
        ParetoPoint("dense", 1000, 0.99),
        ParetoPoint("int8", 260, 0.98),
    ]
    text = _run_dir(tmp_path, "lm", dense, {"artifact_bytes": 300, "params": 5, "accuracy": None})
    with pytest.raises(pk.PrunekitError, match="no measured accuracy"):
        points_from_reports([text])
    with pytest.raises(pk.PrunekitError, match=r"no report\.json"):
        points_from_reports([tmp_path])
