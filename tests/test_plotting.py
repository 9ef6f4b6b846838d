"""Tests for selfconsume.plotting: files written atomically, figure contents, validation.

The figures are built from small synthetic SweepResults (no sweep is run). Pixels are not compared
(fonts and matplotlib versions change them); the tests check what a reader relies on instead:
labels, titles, legend entries, tick labels, annotated values and the plotted data.
"""

import os
import subprocess
import sys
import threading

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from selfconsume import plotting
from selfconsume.results import SweepResult

# matplotlib reports layout and legend problems (clipped text, empty legends) as UserWarnings.
pytestmark = pytest.mark.filterwarnings("error::UserWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
S, T1 = 4, 6  # seeds, generations 0..5


def _result(values, **grid):
    num_seeds = next(iter(values.values())).shape[0]
    coords = {"seed": np.arange(num_seeds), **{k: np.asarray(v) for k, v in grid.items()}}
    return SweepResult(values=values, axes=("seed", *grid), coords=coords, metadata={})


@pytest.fixture
def one_axis():
    rng = np.random.default_rng(0)
    return _result({"mean_reward": rng.normal(size=(S, 3, T1)) + np.arange(T1),
                    "class_shares": rng.dirichlet(np.ones(3), size=(S, 3, T1)),
                    "final": rng.normal(size=(S, 3))},
                   real_fraction=[0.0, 0.1, 0.5])


@pytest.fixture
def two_axes():
    rng = np.random.default_rng(1)
    return _result({"mean_reward": rng.normal(size=(S, 3, 2, T1)),
                    "final_kl": rng.gamma(2.0, size=(S, 3, 2)),
                    "class_shares": rng.dirichlet(np.ones(2), size=(S, 3, 2, T1))},
                   beta=[0.5, 1.0, 2.0], real_fraction=[0.0, 0.5])


def _check_png(path):
    """The file is a complete PNG of a real figure and no temporary file is left beside it."""
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[-8:-4] == b"IEND"          # written to the end (IEND chunk, then its CRC)
    assert len(data) > 5_000               # an empty 120-dpi canvas compresses to ~1-2 kB
    assert sorted(os.listdir(path.parent)) == [path.name]


def _legend_texts(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    legends += list(fig.legends)
    assert len(legends) == 1
    return [t.get_text() for t in legends[0].get_texts()], legends[0].get_title().get_text()


# ---------------------------------------------------------------------------- metric_vs_generation


def test_metric_vs_generation_one_axis(one_axis, tmp_path):
    path = tmp_path / "figs" / "nested" / "reward.png"  # parent folders are created
    fig = plotting.metric_vs_generation(one_axis, "mean_reward", path=path, title="ring, K=4",
                                        ylabel="mean reward (nats)")
    _check_png(path)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_title() == "ring, K=4"
    assert ax.get_xlabel() == "generation"
    assert ax.get_ylabel() == "mean reward (nats)"
    texts, legend_title = _legend_texts(fig)
    assert texts == ["real_fraction=0", "real_fraction=0.1", "real_fraction=0.5"]
    assert legend_title == "mean ± 95% CI, 4 seeds"
    values = one_axis.values["mean_reward"]
    mean, low, high = plotting.mean_and_interval(values, axis=0)
    for i, line in enumerate(ax.get_lines()):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(T1))
        np.testing.assert_allclose(line.get_ydata(), mean[i])
    assert len(ax.collections) == 3                      # one band per line
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(low[0].min()) and band.max() == pytest.approx(high[0].max())


def test_metric_vs_generation_two_axes_and_defaults(two_axes, tmp_path):
    fig = plotting.metric_vs_generation(two_axes, "mean_reward", path=tmp_path / "r.png",
                                        level=0.9)
    _check_png(tmp_path / "r.png")
    (ax,) = fig.axes
    assert ax.get_title() == "mean_reward" and ax.get_ylabel() == "mean_reward"
    texts, legend_title = _legend_texts(fig)
    assert texts == [f"beta={b}, real_fraction={a}" for b in ("0.5", "1", "2")
                     for a in ("0", "0.5")]
    assert legend_title == "mean ± 90% CI, 4 seeds"
    assert len(ax.get_lines()) == 6
    # colour follows beta, line style follows real_fraction
    lines = ax.get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert lines[0].get_linestyle() == lines[2].get_linestyle() != lines[1].get_linestyle()


def test_metric_vs_generation_no_grid_one_seed(tmp_path):
    result = _result({"reward": np.linspace(0, 1, T1)[None]})
    fig = plotting.metric_vs_generation(result, "reward", path=tmp_path / "r.png", title="t")
    _check_png(tmp_path / "r.png")
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 0   # one seed: no band
    assert _legend_texts(fig) == (["reward"], "1 seed (no band)")


def test_metric_vs_generation_after_save_and_load(one_axis, tmp_path):
    one_axis.save(tmp_path / "run")
    loaded = SweepResult.load(tmp_path / "run")
    fig = plotting.metric_vs_generation(loaded, "mean_reward")
    assert _legend_texts(fig)[0][1] == "real_fraction=0.1"
    assert not (tmp_path / "run" / "mean_reward.png").exists()  # no path: nothing written


def test_many_lines_put_the_legend_outside():
    rng = np.random.default_rng(4)
    result = _result({"m": rng.normal(size=(2, 4, 3, T1))}, a=[1, 2, 3, 4], b=[1, 2, 3])
    fig = plotting.metric_vs_generation(result, "m")
    assert len(fig.legends) == 1 and fig.axes[0].get_legend() is None
    assert len(fig.legends[0].get_texts()) == 12


# ---------------------------------------------------------------------------- heatmap


def test_heatmap(two_axes, tmp_path):
    fig = plotting.heatmap(two_axes, "mean_reward", generation=2, path=tmp_path / "h.png",
                           title="ring")
    _check_png(tmp_path / "h.png")
    ax, cbar = fig.axes
    assert ax.get_title() == "ring\nmean_reward at generation 2, mean of 4 seeds"
    assert ax.get_xlabel() == "real_fraction" and ax.get_ylabel() == "beta"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.5", "1", "2"]
    assert cbar.get_ylabel() == "mean_reward"
    mean = two_axes.values["mean_reward"][..., 2].mean(axis=0)      # (beta, real_fraction)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert cells == {(i, j): f"{mean[i, j]:.3g}" for i in range(3) for j in range(2)}
    np.testing.assert_allclose(ax.images[0].get_array(), mean)


def test_heatmap_scalar_metric_and_last_generation(two_axes):
    fig = plotting.heatmap(two_axes, "final_kl")
    assert fig.axes[0].get_title() == "final_kl, mean of 4 seeds"
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(),
                               two_axes.values["final_kl"].mean(axis=0))
    fig = plotting.heatmap(two_axes, "mean_reward")
    assert "at generation 5" in fig.axes[0].get_title()


def test_heatmap_nan_cell(two_axes):
    values = dict(two_axes.values)
    values["final_kl"] = values["final_kl"].copy()
    values["final_kl"][0, 1, 0] = np.nan
    result = SweepResult(values, two_axes.axes, two_axes.coords, {})
    texts = [t.get_text() for t in plotting.heatmap(result, "final_kl").axes[0].texts]
    assert texts.count("nan") == 1


def test_heatmap_rejects(one_axis, two_axes):
    with pytest.raises(ValueError, match=r"`result` must have exactly two grid axes.*"
                                         r"\('real_fraction',\)"):
        plotting.heatmap(one_axis, "mean_reward")
    for generation in (6, -7, 1.0, True):
        with pytest.raises(ValueError, match=r"`generation` must be an integer in \[-6, 5\]"):
            plotting.heatmap(two_axes, "mean_reward", generation=generation)
    with pytest.raises(ValueError, match="`metric` 'class_shares' must have shape"):
        plotting.heatmap(two_axes, "class_shares")


# ---------------------------------------------------------------------------- snapshots


def _ring(num):
    angles = 2 * np.pi * np.arange(num) / num
    return 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_snapshots(tmp_path):
    rng = np.random.default_rng(5)
    centers = _ring(8)
    samples = centers[rng.integers(0, 8, size=(2, 3, 400))] + 0.3 * rng.normal(size=(2, 3, 400, 2))
    samples[1, 2, :5] = 100.0                                        # far outside the extent

    def reward(x):
        return -np.linalg.norm(x - centers[0], axis=1)

    path = tmp_path / "snap.png"
    fig = plotting.snapshots(samples, [0, 5, 10], reward_fn=reward, centers=centers,
                             extent=(-6, 6, -6, 6), path=path, title="ring, K=4",
                             row_labels=["real_fraction=0", "real_fraction=0.5"])
    _check_png(path)
    panels, cbar = fig.axes[:6], fig.axes[6]
    assert len(fig.axes) == 7
    assert fig.get_suptitle() == "ring, K=4"
    assert [ax.get_title() for ax in panels[:3]] == ["generation 0", "generation 5",
                                                      "generation 10"]
    assert panels[0].get_ylabel() == "real_fraction=0\n$x_2$"
    assert panels[3].get_ylabel() == "real_fraction=0.5\n$x_2$"
    assert all(ax.get_xlabel() == "$x_1$" for ax in panels[3:])
    assert all(ax.get_xlim() == (-6, 6) and ax.get_ylim() == (-6, 6) for ax in panels)
    assert cbar.get_ylabel() == "samples per bin (log scale)"
    assert _legend_texts(fig)[0] == ["mode centres", "reward level sets"]
    assert "5 outside" in [t.get_text() for t in panels[5].texts]
    # each panel's histogram counts its points; one colour scale for all panels
    assert panels[0].images[0].get_array().sum() == 400
    assert len({ax.images[0].norm.vmax for ax in panels}) == 1


def test_snapshots_defaults(tmp_path):
    samples = np.random.default_rng(6).normal(size=(1, 2, 300, 2))
    fig = plotting.snapshots(samples, np.array([0, 20]), path=tmp_path / "s.png")
    _check_png(tmp_path / "s.png")
    x0, x1 = fig.axes[0].get_xlim()
    assert x0 < samples[..., 0].min() and x1 > samples[..., 0].max()   # padded data range
    assert fig.axes[0].get_ylabel() == "$x_2$"
    assert not fig.legends


@pytest.mark.parametrize("change, match", [
    ({"samples": np.zeros((2, 3, 10))}, r"`samples` must have shape \(R, G, n, 2\).*\(2, 3, 10\)"),
    ({"samples": np.zeros((2, 3, 10, 3))}, r"`samples` must have shape"),
    ({"samples": np.zeros((2, 3, 0, 2))}, r"`samples` must have shape"),
    ({"generations": [0, 1]}, r"`generations` must hold one number per snapshot, shape \(3,\)"),
    ({"row_labels": ["a"]}, "`row_labels` must be a sequence of 2 strings"),
    ({"centers": np.zeros((4, 3))}, r"`centers` must have shape \(C, 2\)"),
    ({"extent": (1, 0, 0, 1)}, "`extent` must be four finite numbers"),
    ({"extent": (0, 1, 0)}, "`extent`"),
    ({"reward_fn": lambda x: x}, r"`reward_fn` must map x of shape \(m, 2\) to rewards"),
    ({"reward_fn": 3}, "`reward_fn` must be callable"),
    ({"path": "fig.pdf"}, "`path` must end in .png"),
])
def test_snapshots_rejects(change, match):
    kwargs = {"samples": np.zeros((2, 3, 10, 2)), "generations": [0, 1, 2]} | change
    with pytest.raises(ValueError, match=match):
        plotting.snapshots(kwargs.pop("samples"), kwargs.pop("generations"), **kwargs)


# ---------------------------------------------------------------------------- class_proportions


def test_class_proportions_one_axis(one_axis, tmp_path):
    path = tmp_path / "classes.png"
    fig = plotting.class_proportions(one_axis, path=path, title="digits",
                                     class_names=["zero", "one", "two"])
    _check_png(path)
    assert fig.get_suptitle() == "digits"
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["real_fraction=0", "real_fraction=0.1",
                                                   "real_fraction=0.5"]
    assert fig.axes[0].get_ylabel() == "class share"
    assert all(ax.get_xlabel() == "generation" for ax in fig.axes)
    texts, legend_title = _legend_texts(fig)
    assert sorted(texts) == ["one", "two", "zero"]
    assert legend_title == "mean of 4 seeds"
    # the top of the stack is the summed seed-mean share: 1 for Dirichlet shares
    top = fig.axes[0].collections[-1].get_paths()[0].vertices[:, 1]
    assert top.max() == pytest.approx(1.0)


def test_class_proportions_two_axes_and_no_grid(two_axes, tmp_path):
    fig = plotting.class_proportions(two_axes, path=tmp_path / "c.png")
    _check_png(tmp_path / "c.png")
    assert len(fig.axes) == 6
    assert fig.axes[1].get_title() == "beta=0.5, real_fraction=0.5"
    assert sorted(_legend_texts(fig)[0]) == ["class 0", "class 1"]
    shares = np.random.default_rng(7).dirichlet(np.ones(4), size=(1, T1))
    fig = plotting.class_proportions(_result({"class_shares": shares}))
    assert len(fig.axes) == 1 and fig.get_suptitle() == "class_shares"


def test_class_proportions_rejects(one_axis):
    with pytest.raises(ValueError, match="`class_names` must hold 3 names"):
        plotting.class_proportions(one_axis, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"`metric` 'mean_reward' must have shape \(num_seeds, "
                                         r"\*grid sizes, T \+ 1, num_classes\)"):
        plotting.class_proportions(one_axis, "mean_reward")
    negative = _result({"class_shares": -np.ones((2, 3, 2))})
    with pytest.raises(ValueError, match="non-negative"):
        plotting.class_proportions(negative)


# ---------------------------------------------------------------------------- shared validation


@pytest.mark.parametrize("call", [
    lambda r: plotting.metric_vs_generation(r, "nope"),
    lambda r: plotting.heatmap(r, "nope"),
    lambda r: plotting.class_proportions(r, "nope"),
])
def test_unknown_metric_lists_the_available_ones(two_axes, call):
    with pytest.raises(ValueError, match=r"`metric` must be one of the result's metrics "
                                         r"\['class_shares', 'final_kl', 'mean_reward'\]; "
                                         r"got 'nope'"):
        call(two_axes)


def test_shared_validation(one_axis, tmp_path):
    with pytest.raises(ValueError, match="`result` must be a selfconsume.SweepResult; got dict"):
        plotting.metric_vs_generation({"m": np.ones((2, 3))}, "m")
    with pytest.raises(ValueError, match="`result` must have the seed axis first"):
        plotting.metric_vs_generation(one_axis.sel(seed=0), "mean_reward")
    with pytest.raises(ValueError, match=r"`metric` 'final' must have shape \(num_seeds, "
                                         r"\*grid sizes, T \+ 1\).*got shape \(4, 3\)"):
        plotting.metric_vs_generation(one_axis, "final")
    with pytest.raises(ValueError, match="`level`"):
        plotting.metric_vs_generation(one_axis, "mean_reward", level=95)
    with pytest.raises(ValueError, match="`path` must end in .png"):
        plotting.metric_vs_generation(one_axis, "mean_reward", path=tmp_path / "x.svg")
    with pytest.raises(ValueError, match="`title` must be a string"):
        plotting.heatmap(_result({"m": np.ones((2, 1, 1))}, a=[1], b=[2]), "m", title=None)
    assert not any(tmp_path.iterdir())                   # nothing written on a failed call


def test_overwrite_and_concurrent_calls(one_axis, tmp_path):
    path = tmp_path / "r.png"
    path.write_bytes(b"old")
    errors = []

    def draw(i):
        try:
            plotting.metric_vs_generation(one_axis, "mean_reward", title=f"thread {i}",
                                          path=tmp_path / f"t{i}.png")
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    plotting.metric_vs_generation(one_axis, "mean_reward", path=path)
    for t in threads:
        t.join()
    assert not errors
    assert path.read_bytes()[:8] == PNG_MAGIC               # replaced, not appended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png", "t0.png", "t1.png"]


def test_import_and_use_leave_the_backend_alone():
    # In a fresh interpreter with a non-Agg backend chosen by the user: importing the module and
    # drawing must neither switch the backend nor import pyplot.
    code = (
        "import sys, matplotlib, numpy as np\n"
        "import selfconsume.plotting as P\n"
        "from selfconsume.results import SweepResult\n"
        "r = SweepResult({'m': np.ones((2, 3))}, ('seed',), {'seed': np.arange(2)}, {})\n"
        "P.metric_vs_generation(r, 'm')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print(matplotlib.get_backend())\n"
    )
    env = dict(os.environ, MPLBACKEND="svg", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "svg"
    before = matplotlib.get_backend()
    plotting.metric_vs_generation(_result({"m": np.ones((2, 3))}), "m")
    assert matplotlib.get_backend() == before


def test_metric_vs_generation_reference_line(one_axis):
    values = dict(one_axis.values)
    values["exact"] = np.broadcast_to(np.arange(T1, dtype=float), (S, 3, T1)).copy()
    result = _result(values, real_fraction=[0.0, 0.1, 0.5])
    fig = plotting.metric_vs_generation(result, "mean_reward", reference="exact")
    (ax,) = fig.axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 3  # one reference line per grid point
    np.testing.assert_allclose(dashed[0].get_ydata(), np.arange(T1))
    texts, _ = _legend_texts(fig)
    assert texts.count("exact") == 1
    with pytest.raises(ValueError, match="`reference` .final. must have shape"):
        plotting.metric_vs_generation(result, "mean_reward", reference="final")


def test_image_samples(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "samples.png"
    fig = plotting.image_samples(rng.uniform(size=(2, 3, 10, 64)), [0, 5, 10], (8, 8),
                                 row_labels=["a", "b"], num_images=9, path=path, title="digits")
    _check_png(path)
    assert len(fig.axes) == 6
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (27, 27)  # 3 x 3 images of 8 x 8 with a one-pixel gap
    rgb = plotting.image_samples(rng.uniform(size=(1, 1, 4, 12)), [0], (2, 2, 3))
    assert rgb.axes[0].get_images()[0].get_array().shape == (6, 6, 3)
    for bad, match in [(dict(image_shape=(8, 7)), r"must have shape \(R, G, n, 56\)"),
                       (dict(image_shape=(8, 8, 2)), "`image_shape` must be"),
                       (dict(num_images=0), "`num_images` must be"),
                       (dict(generations=[0, 1]), "`generations` must hold 3")]:
        kwargs = dict(samples=rng.uniform(size=(2, 3, 10, 64)), generations=[0, 5, 10],
                      image_shape=(8, 8))
        kwargs.update(bad)
        with pytest.raises(ValueError, match=match):
            plotting.image_samples(kwargs.pop("samples"), kwargs.pop("generations"),
                                   kwargs.pop("image_shape"), **kwargs)
