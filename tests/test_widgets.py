"""The kernel explorer: the plain function ``explore`` and the thin widget layer over it."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import neuralspec as ns
from neuralspec.widgets import (
    KERNELS,
    MODELS,
    ExplorerData,
    ExplorerSettings,
    build_model,
    explore,
)


# --- explore(): settings in, figure data out ------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_explore_shapes_and_invariants(model, kernel):
    d = explore(model=model, kernel=kernel, width=32, depth=2, n_points=50, n_eigenfunctions=3)
    assert isinstance(d, ExplorerData)
    assert d.x.shape == (50,) and d.x[0] == 0 and d.x[-1] == 1
    assert d.kernel.shape == (50, 50) and d.kernel.dtype == np.float32
    assert d.eigvals.shape == (50,) and d.eigvecs.shape == (50, 3)
    assert np.all(np.diff(d.eigvals) <= 0), "eigenvalues come sorted, largest first"
    np.testing.assert_allclose(d.kernel, d.kernel.T, rtol=0, atol=1e-5 * np.abs(d.kernel).max())
    np.testing.assert_allclose(d.eigvecs.T @ d.eigvecs, np.eye(3), atol=1e-4)
    # The eigenvectors are eigenvectors of the kernel shown.
    np.testing.assert_allclose(d.kernel @ d.eigvecs, d.eigvecs * d.eigvals[:3],
                               atol=1e-4 * d.eigvals[0])
    assert d.floor == pytest.approx(10 * np.finfo(np.float32).eps * np.abs(d.eigvals).max())
    assert d.numerical_rank == int((d.eigvals > d.floor).sum())
    assert 1 <= d.effective_rank <= 50
    assert d.settings.model == model and d.settings.kernel == kernel
    assert KERNELS[kernel] in d.description


def test_explore_matches_the_library_kernels():
    s = ExplorerSettings(model="RFF-MLP", width=64, depth=2, n_points=40)
    x = torch.linspace(0, 1, 40)[:, None]
    net = build_model(s)
    np.testing.assert_allclose(explore(s, kernel="NTK").kernel, ns.ntk(net, x).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explore(s, kernel="CK").kernel, ns.conjugate_kernel(net, x).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explore(s, kernel="feature").kernel,
                               ns.feature_kernel(net[0], x, normalize=True).numpy(), rtol=1e-5, atol=1e-6)


def test_explore_models_are_what_they_say():
    rff, lff = build_model(model="RFF", width=16), build_model(model="LFF", width=16)
    assert isinstance(rff[0], ns.RFF) and len(rff) == 2
    assert isinstance(lff[0], ns.LFF) and not isinstance(lff[0], ns.RFF)
    assert all(p.requires_grad for p in lff[0].parameters())
    assert not any(p.requires_grad for p in rff[0].parameters())
    deep = build_model(model="RFF-MLP", depth=3, activation="tanh", width=16)
    assert sum(isinstance(m, torch.nn.Linear) for m in deep) == 4  # 3 hidden + readout
    assert sum(isinstance(m, torch.nn.Tanh) for m in deep) == 3
    mlp = build_model(model="MLP", depth=2, width=16)
    assert isinstance(mlp, ns.MLP) and mlp.latent_layers == 2
    assert build_model(dtype="float64")[-1].weight.dtype == torch.float64


def test_explore_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = explore(n_points=60, width=64)
    b = explore(ExplorerSettings(n_points=60, width=64))
    after = torch.rand(3)
    assert torch.equal(before, after), "explore must not consume the global random stream"
    for name in ("x", "kernel", "eigvals", "eigvecs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = explore(n_points=60, width=64, seed=1)
    assert not np.allclose(a.kernel, c.kernel), "another seed, another network"


def test_the_kernel_choice_matters():
    s = ExplorerSettings(model="RFF-MLP", width=64, depth=2, n_points=60)
    ks = {k: explore(s, kernel=k).kernel for k in KERNELS}
    for k1 in ks:
        for k2 in ks:
            if k1 < k2:
                assert not np.allclose(ks[k1], ks[k2], rtol=0.05), f"{k1} and {k2} should differ"
    # The readout's share of the NTK is width * CK + 1, and the rest is PSD.
    rest = ks["NTK"] - 64 * ks["CK"] - 1.0
    assert np.linalg.eigvalsh(rest.astype(np.float64)).min() > -1e-4 * np.abs(ks["NTK"]).max()


def test_rff_and_lff_differ_only_in_the_ntk():
    s = ExplorerSettings(width=64, n_points=60)
    for k in ("feature", "CK"):
        np.testing.assert_array_equal(explore(s, model="RFF", kernel=k).kernel,
                                      explore(s, model="LFF", kernel=k).kernel)
    assert not np.allclose(explore(s, model="RFF", kernel="NTK").kernel,
                           explore(s, model="LFF", kernel="NTK").kernel)


def test_scale_flattens_the_rff_spectrum():
    ranks = [explore(model="RFF", kernel="feature", scale=sc, width=256).effective_rank
             for sc in (2, 10, 40)]
    assert ranks[0] < ranks[1] < ranks[2]
    assert 5 < ranks[1] < 20, "about `scale` significant eigenvalues (Landau-Slepian count)"


def test_settings_are_canonicalized():
    s = ExplorerSettings(model="rffmlp", kernel="ntk", activation="ReLU", scale=3)
    assert (s.model, s.kernel, s.activation, s.scale) == ("RFF-MLP", "NTK", "relu", 3.0)
    assert ExplorerSettings(kernel="feature Gram").kernel == "feature"
    assert s.replace(width=8).width == 8 and s.width == 256
    assert ExplorerSettings(model="MLP").unused == ("scale",)


@pytest.mark.parametrize("bad, match", [
    (dict(model="CNN"), "model must be one of"),
    (dict(kernel="NNGP2"), "kernel must be one of"),
    (dict(scale=0), "scale must be a positive finite number"),
    (dict(scale=float("nan")), "scale must be a positive finite number"),
    (dict(width=0), "width must be"),
    (dict(depth=-1), "depth must be"),
    (dict(n_points=1), "n_points must be at least 2"),
    (dict(n_points=10**6), "n_points must be between 1 and"),
    (dict(activation="swishy"), "activation must be one of"),
    (dict(seed=-3), "seed must be a non-negative integer"),
    (dict(dtype="float16"), "dtype must be one of"),
    (dict(n_points=10, n_eigenfunctions=20), "cannot exceed n_points"),
])
def test_invalid_settings_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        explore(**bad)


def test_invalid_setting_types_and_names():
    with pytest.raises(TypeError, match="width must be an integer"):
        explore(width=64.0)
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['widht'\]"):
        explore(widht=64)
    with pytest.raises(TypeError, match="settings must be an ExplorerSettings"):
        explore([("width", 64)])


def test_plot_draws_three_labelled_panels():
    import matplotlib.pyplot as plt

    d = explore(n_points=40, width=32)
    fig = d.plot()
    axes = fig.axes
    titles = [ax.get_title() for ax in axes]
    assert "NTK matrix" in titles and "Spectrum (log scale)" in titles and "Top 4 eigenvectors" in titles
    spec = axes[titles.index("Spectrum (log scale)")]
    assert spec.get_yscale() == "log" and spec.get_xlabel() and spec.get_ylabel()
    assert any("floor" in t.get_text() for t in spec.get_legend().get_texts())
    plt.close(fig)


def test_neuralspec_imports_without_ipywidgets():
    code = ("import sys; sys.modules['ipywidgets'] = None; import neuralspec, neuralspec.widgets as w; "
            "w.explore(n_points=20, width=8)\n"
            "try:\n    w.KernelExplorer()\nexcept ImportError as e:\n    print('ok', 'pip install' in str(e))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"


# --- the widget: set control values, check what is displayed --------------------------------

ipywidgets = pytest.importorskip("ipywidgets")
from neuralspec.widgets import KernelExplorer  # noqa: E402


@pytest.fixture
def explorer():
    return KernelExplorer(width=64, n_points=60)


def test_widget_starts_with_a_figure(explorer):
    assert set(explorer.controls) == {"model", "kernel", "scale", "width", "depth", "activation",
                                      "n_points", "seed", "dtype"}
    assert explorer.n_updates == 1 and explorer.error is None
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert explorer.data.settings == ExplorerSettings(width=64, n_points=60)
    assert "numerical rank" in explorer.status.value
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "image/png" in bundle


def test_sliders_are_debounced(explorer):
    for name in ("scale", "width", "depth", "n_points"):
        assert explorer.controls[name].continuous_update is False


def test_setting_controls_updates_the_displayed_data(explorer):
    old_png, old = explorer.image.value, explorer.data
    explorer.controls["scale"].value = 40
    assert explorer.n_updates == 2
    assert explorer.data.settings.scale == pytest.approx(40)
    assert explorer.image.value != old_png
    assert not np.allclose(explorer.data.kernel, old.kernel)
    np.testing.assert_array_equal(explorer.data.kernel, explore(explorer.data.settings).kernel)

    explorer.controls["kernel"].value = "CK"
    assert explorer.data.settings.kernel == "CK" and "conjugate kernel" in explorer.status.value

    explorer.controls["n_points"].value = 80
    assert explorer.data.kernel.shape == (80, 80) and explorer.data.x.shape == (80,)

    explorer.controls["width"].value = 128
    assert explorer.data.settings.width == 128

    d2 = explorer.data
    explorer.controls["depth"].value = 4
    assert explorer.data.settings.depth == 4
    assert explorer.data.effective_rank < d2.effective_rank, "a deeper CK is flatter (rank collapse)"

    explorer.controls["activation"].value = "tanh"
    assert explorer.data.settings.activation == "tanh"
    explorer.controls["seed"].value = 7
    assert explorer.data.settings.seed == 7
    explorer.controls["dtype"].value = "float64"
    assert explorer.data.kernel.dtype == np.float64
    assert explorer.data.floor < d2.floor
    assert explorer.n_updates == 9


def test_model_choice_greys_out_unused_controls(explorer):
    explorer.controls["model"].value = "MLP"
    assert explorer.data.settings.model == "MLP"
    assert explorer.controls["scale"].disabled and not explorer.controls["depth"].disabled
    explorer.controls["model"].value = "RFF"
    assert explorer.controls["depth"].disabled and explorer.controls["activation"].disabled
    assert not explorer.controls["scale"].disabled


def test_set_changes_several_controls_with_one_update(explorer):
    n = explorer.n_updates
    data = explorer.set(model="MLP", kernel="NTK", depth=3)
    assert explorer.n_updates == n + 1
    assert (data.settings.model, data.settings.kernel, data.settings.depth) == ("MLP", "NTK", 3)
    with pytest.raises(TypeError, match="unknown control"):
        explorer.set(colour="red")


def test_a_failed_update_keeps_the_last_figure_and_says_why(explorer, monkeypatch):
    import neuralspec.widgets as w

    good = explorer.data

    def boom(*a, **k):
        raise ValueError("n_points must be at least 2")

    monkeypatch.setattr(w, "explore", boom)
    explorer.controls["scale"].value = 20
    assert explorer.error == "n_points must be at least 2"
    assert "Cannot update" in explorer.status.value
    assert explorer.data is good


