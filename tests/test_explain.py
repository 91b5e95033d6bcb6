"""Grad-CAM, Grad-CAM++ and occlusion maps (issue 15).

Oracles: Grad-CAM and Grad-CAM++ by PyTorch autograd on the same weights (small net)
and by a hand-written GradientTape through the layers above conv5 (real AlexNet, both
variants); occlusion by a plain Python loop over patch positions; the maps of a
trained net must point at the coloured square that decides its class; Adebayo et al.'s
sanity checks on that net; the CLI on image folders, loose images and NIfTI slices.
"""

from __future__ import annotations

import csv
import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from typer.testing import CliRunner

from alexkit import explain as E
from alexkit.cli import app

SIZE = 32
SQUARE = 8
COLOURS = {"green": (40, 220, 40), "red": (230, 30, 30)}


def flat_net(num_classes: int = 3, seed: int = 0, activation: str | None = "softmax"):
    """A small chain with a position-dependent head (flatten → fc6 → predictions)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc6")(x)
    x = keras.layers.Dense(num_classes, activation=activation, name="predictions")(x)
    return keras.Model(inputs, x)


def square_images(n: int, seed: int, size: int = SIZE, margin: int = 0):
    """Gray noise with one coloured square at a random place (``margin`` px from the
    borders); label = its colour."""
    rng = np.random.default_rng(seed)
    x = rng.integers(105, 125, size=(n, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    corners = rng.integers(margin, size - SQUARE - margin + 1, size=(n, 2))
    for i in range(n):
        r, c = corners[i]
        x[i, r : r + SQUARE, c : c + SQUARE] = list(COLOURS.values())[y[i]]
    return x, y, corners


@pytest.fixture(scope="module")
def trained():
    """A small GAP net trained to tell a green from a red square (~100 % accuracy)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv5")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc6")(x)
    x = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x)
    model.compile(keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    xs, ys, _ = square_images(512, seed=0)
    # Also the evaluation pipeline's view of 40×40 files (centre crop of 35, resized):
    # without it the net keys on pixel-exact edges and fails on resized images.
    big, big_y, _ = square_images(512, seed=2, size=40, margin=7)
    big = tf.image.resize(big[:, 2:37, 2:37], (SIZE, SIZE), antialias=True).numpy()
    xs, ys = np.concatenate([xs, big]), np.concatenate([ys, big_y])
    model.fit(xs, ys, epochs=6, batch_size=32, verbose=0)
    xt, yt, corners = square_images(32, seed=99)
    accuracy = float((model.predict(xt, verbose=0).argmax(1) == yt).mean())
    assert accuracy >= 0.95, accuracy
    return model, xt, yt, corners


# --------------------------------------------------------------------------- oracles


def torch_gradcam(model, images, targets, plus: bool):
    """Grad-CAM(++) of ``flat_net`` rebuilt in PyTorch from the Keras weights."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def w(name):
        return [torch.tensor(np.asarray(v)) for v in model.get_layer(name).get_weights()]

    (k1, b1), (k5, b5) = w("conv1"), w("conv5")
    (w6, b6), (w8, b8) = w("fc6"), w("predictions")
    x = torch.tensor(np.asarray(images, np.float32)).permute(0, 3, 1, 2) / 255.0
    x = F.relu(F.conv2d(x, k1.permute(3, 2, 0, 1), b1, padding=1))
    x = F.max_pool2d(x, 2)
    acts = F.relu(F.conv2d(x, k5.permute(3, 2, 0, 1), b5, padding=1))  # (B, K, h, w)
    acts = acts.detach().requires_grad_(True)  # differentiate the logit w.r.t. conv5
    flat = acts.permute(0, 2, 3, 1).reshape(len(images), -1)  # Keras flattens (h, w, K)
    logits = F.relu(flat @ w6 + b6) @ w8 + b8
    score = logits[torch.arange(len(images)), torch.tensor(targets)].sum()
    (grads,) = torch.autograd.grad(score, acts)
    a, g = acts.detach().double().numpy(), grads.double().numpy()
    if plus:
        alpha = np.zeros_like(g)
        for b, k, i, j in np.ndindex(*g.shape):
            denom = 2 * g[b, k, i, j] ** 2 + a[b, k].sum() * g[b, k, i, j] ** 3
            alpha[b, k, i, j] = g[b, k, i, j] ** 2 / denom if denom != 0 else 0.0
        weights = (alpha * np.maximum(g, 0)).sum(axis=(2, 3))
    else:
        weights = g.mean(axis=(2, 3))
    return np.maximum(np.einsum("bkhw,bk->bhw", a, weights), 0), logits.detach().numpy()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_gradcam_equals_pytorch_on_the_same_weights(method):
    model = flat_net(seed=3)
    x, _, _ = square_images(6, seed=5)
    targets = np.array([0, 1, 2, 0, 1, 2])
    maps, probs, chosen = E.gradcam(model, x, targets, method=method, resize=False)
    oracle, logits = torch_gradcam(model, x, targets, plus=method == "gradcam++")
    np.testing.assert_array_equal(chosen, targets)
    np.testing.assert_allclose(probs, np.asarray(model(x)), atol=1e-5)
    np.testing.assert_allclose(E._softmax(logits), probs, atol=1e-5)
    assert maps.shape == oracle.shape == (6, SIZE // 2, SIZE // 2)
    for a, b in zip(maps, oracle, strict=True):
        assert np.ptp(b) > 0  # a real map, not two zero maps agreeing
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.99
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())


def test_linear_and_softmax_heads_give_the_same_maps_and_upsampling_is_bilinear():
    soft = flat_net(seed=4)
    linear = flat_net(seed=4, activation=None)
    linear.set_weights(soft.get_weights())
    x, _, _ = square_images(4, seed=6)
    a, pa, ta = E.gradcam(soft, x, None, resize=False)
    b, pb, tb = E.gradcam(linear, x, None, resize=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ta, np.asarray(soft(x)).argmax(1))  # None: predicted class
    full, _, _ = E.gradcam(soft, x, None)
    assert full.shape == (4, SIZE, SIZE)
    expect = tf.image.resize(a[..., None], (SIZE, SIZE), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(full, expect, rtol=1e-5, atol=1e-7)


def hand_gradcam(model, images, layer, targets):
    """Grad-CAM through the layers above ``layer`` one by one, softmax skipped by hand."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    acts = tf.constant(sub(images, training=False))
    names = [lyr.name for lyr in model.layers]
    above = model.layers[names.index(layer) + 1 :]
    with tf.GradientTape() as tape:
        tape.watch(acts)
        h = acts
        for lyr in above[:-1]:
            h = lyr(h, training=False)
        head = above[-1]
        logits = tf.matmul(h, head.kernel) + head.bias
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    grads = tape.gradient(score, acts).numpy().astype(np.float64)
    weights = grads.mean(axis=(1, 2))
    return np.maximum(np.einsum("bhwk,bk->bhw", acts.numpy(), weights), 0)


@pytest.mark.parametrize("variant", ["original", "torchvision"])
def test_gradcam_on_real_alexnet_equals_a_hand_gradient_tape(variant):
    from alexkit.model import build_alexnet, replace_head

    base = build_alexnet(variant, kernel_init="he", seed=0)
    model = replace_head(base, 3, dropout=0.5, hidden_units=8, seed=1)
    size = model.input_shape[1]
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype(np.float32)
    maps, probs, chosen = E.gradcam(model, x, None, resize=False)
    assert maps.shape == (2, 13, 13)
    oracle = hand_gradcam(model, x, "conv5", chosen)
    for a, b in zip(maps, oracle, strict=True):
        assert np.ptp(b) > 0
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.99
    # Any spatial layer by name; a dense one is refused with the spatial ones listed.
    conv3, _, _ = E.gradcam(model, x, chosen, layer="conv3", resize=False)
    assert conv3.shape == (2, 13, 13) and np.ptp(conv3) > 0
    with pytest.raises(E.UsageError, match="conv5"):
        E.Explainer(model, "fc7")


def occlusion_loop(model, image, target, patch, stride, colour, score):
    """The definition, one patch at a time."""
    h, w = image.shape[:2]

    if score == "logit":  # the same weights without the softmax
        linear = flat_net(num_classes=int(model.output_shape[-1]), activation=None)
        linear.set_weights(model.get_weights())
        model = linear

    def value(img):
        return float(np.asarray(model(img[None]))[0, target])

    base = value(image)
    total, count = np.zeros((h, w)), np.zeros((h, w))
    rows = sorted(set(range(0, h - patch + 1, stride)) | {h - patch})
    cols = sorted(set(range(0, w - patch + 1, stride)) | {w - patch})
    for r in rows:
        for c in cols:
            occluded = image.copy()
            occluded[r : r + patch, c : c + patch] = colour
            total[r : r + patch, c : c + patch] += base - value(occluded)
            count[r : r + patch, c : c + patch] += 1
    return total / count


@pytest.mark.parametrize(
    ("baseline", "colour", "score", "patch", "stride"),
    [
        ("mean", 127.5, "probability", 8, 5),
        ("black", 0.0, "logit", 12, 7),
        (200, 200.0, "probability", 32, 4),
    ],
)
def test_occlusion_equals_a_python_loop_over_patches(baseline, colour, score, patch, stride):
    model = flat_net(seed=7)
    x, _, _ = square_images(3, seed=8)
    targets = np.array([2, -1, 0])
    maps, probs, chosen = E.occlusion(
        model, x, targets, patch=patch, stride=stride, baseline=baseline, score=score, batch_size=7
    )
    assert chosen[0] == 2 and chosen[1] == probs[1].argmax() and chosen[2] == 0
    for i in range(3):
        expect = occlusion_loop(model, x[i], chosen[i], patch, stride, colour, score)
        np.testing.assert_allclose(maps[i], expect, rtol=1e-4, atol=1e-6)
    assert np.abs(maps).max() > 0


def test_occlusion_baseline_mean_is_the_preprocess_mean():
    from alexkit.model import build_alexnet
    from alexkit.variants import VARIANTS

    # The tiny variant's Preprocess layer is the original's (same mean), at 0.2M parameters.
    model = build_alexnet("tiny", num_classes=2, seed=0)
    np.testing.assert_allclose(E.baseline_colour(model, "mean"), VARIANTS["tiny"]["mean"])
    with pytest.raises(E.UsageError, match="baseline"):
        E.baseline_colour(model, "purple")


# --------------------------------------------------------------------------- behaviour


def _in_square(peak, corner, margin):
    r, c = peak
    return (
        corner[0] - margin <= r < corner[0] + SQUARE + margin
        and corner[1] - margin <= c < corner[1] + SQUARE + margin
    )


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "occlusion"])
def test_maps_of_a_trained_net_point_at_the_deciding_square(trained, method):
    model, x, _, corners = trained
    ex = E.Explainer(model)
    maps, _, _ = E.explain_batch(
        ex, x, None, method=method, occlusion_options={"patch": 8, "stride": 4}
    )
    hits = [
        _in_square(E.peak(m), corner, margin=3) for m, corner in zip(maps, corners, strict=True)
    ]
    assert np.mean(hits) >= 0.8, hits
    # A random place would be hit ~(14/32)² ≈ 19 % of the time.


def test_sanity_checks_pass_on_a_trained_net_and_restore_its_weights(trained):
    model, x, _, _ = trained
    before = [np.array(w) for w in model.get_weights()]
    report = E.sanity_checks(model, x[:16], method="gradcam", seed=0)
    d = report.to_dict()
    assert report.passed, d
    assert d["head_randomisation"]["mean_rank_correlation"] < 0.5
    assert d["class_contrast"]["mean_rank_correlation"] < 0.0  # opposite evidence
    assert report.head_randomisation.shape == (5, 16)
    assert np.all(report.margins > 0.5)  # the model separates the two classes
    json.dumps(d)
    # Grad-CAM++ keeps only positive gradients: every random head still weighs the
    # object's channels up, so its maps move less (0.3-0.66 over seeds 0-2 here,
    # Grad-CAM -0.01-0.24) — well below 1 still, and class-sensitive.
    plus = E.sanity_checks(model, x[:16], method="gradcam++", seed=0).to_dict()
    assert plus["head_randomisation"]["mean_rank_correlation"] < 0.8, plus
    assert plus["class_contrast"]["passed"], plus
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    # The correlation really is Spearman's.
    from scipy.stats import spearmanr

    a, b = np.random.default_rng(0).normal(size=(2, 50))
    assert E.rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(E.rank_correlation(a, np.zeros(50)))


def test_peak_and_center_share_by_hand():
    heat = np.zeros((20, 20))
    heat[3, 17] = 2.0
    assert E.peak(heat) == (3, 17)
    assert E.center_share(heat) == 0.0
    assert E.center_share(np.ones((20, 20))) == pytest.approx(196 / 400)  # 14×14 box
    inside = np.zeros((20, 20))
    inside[10, 10] = 1.0
    assert E.center_share(inside) == 1.0
    # A blank map (no positive heat) has no share and no peak: None, not NaN or (0, 0).
    for blank in (np.zeros((4, 4)), -np.ones((4, 4))):
        assert E.is_blank(blank) and E.center_share(blank) is None
    assert E.peak(np.zeros((4, 4))) is None
    assert not E.is_blank(heat) and not E.is_blank(inside)
    signed = -np.ones((4, 4))
    signed[1, 2] = -0.5  # an occlusion map where every patch raised the score
    assert E.is_blank(signed) and E.peak(signed) == (1, 2)  # still has a least-bad place


def dead_conv5_run(root):
    """``flat_net`` with conv5's bias at -1000: its ReLU is off everywhere for any image,
    so every Grad-CAM at conv5 is all zero (a dead layer)."""
    model = flat_net(num_classes=2)
    conv5 = model.get_layer("conv5")
    kernel, bias = conv5.get_weights()
    conv5.set_weights([kernel, np.full_like(bias, -1000.0)])
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    return run, model


def test_blank_maps_leave_center_share_and_peak_empty_and_are_counted(tmp_path):
    from conftest import write_class_images

    run, model = dead_conv5_run(tmp_path)
    write_class_images(tmp_path / "data", ["a", "b"], 2, size=(40, 36))
    out = tmp_path / "out"
    args = ["explain", str(run), "--data", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--save-maps"])
    assert result.exit_code == 0, result.stderr
    assert "4 of 4 map(s) are blank" in " ".join(result.stderr.split())
    assert "central half" not in result.stdout  # blank maps are not called shortcuts
    maps = np.load(out / "maps.npz")
    rows = _rows(out / "explain.csv")
    assert len(rows) == 4
    for r in rows:
        assert not maps[r["path"]].any()  # the oracle: the maps really are all zero
        assert r["center_share"] == r["peak_row"] == r["peak_col"] == ""
        assert r["predicted"] in ("a", "b") and r["overlay"].endswith(".png")
    # Library: None in the rows, counted, and the summary is strict JSON (no NaN).
    from alexkit.data import load_spec

    spec = load_spec(str(tmp_path / "data"), val_fraction=0)
    lib = E.explain_data(model, spec, tmp_path / "lib", class_names=["a", "b"], overlays=False)
    assert lib.blank_maps == lib.images == 4
    assert all(r["center_share"] is None and r["peak_row"] is None for r in lib.rows)
    summary = json.loads(json.dumps(lib.to_dict(), allow_nan=False))
    assert summary["blank_maps"] == 4


def test_gradcam_overlays_are_pngs_with_titles(trained):
    model, x, y, _ = trained
    pngs = E.gradcam_overlays(
        model, x[:3], class_names=list(COLOURS), true_labels=y[:3], titles=["a", "b", "c"]
    )
    assert len(pngs) == 3
    for png in pngs:
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and 300 <= img.size[0] <= 500 and 300 <= img.size[1] <= 500
    with pytest.raises(E.UsageError, match="colormap"):
        E.gradcam_overlays(model, x[:1], colormap="nope")


def test_gray_images_are_drawn_gray_under_the_map():
    gray = np.repeat(np.linspace(0, 255, 32 * 32).reshape(32, 32, 1), 3, axis=2)
    heat = np.zeros((32, 32))
    png = E.render_overlay(gray, heat, alpha=0.0)  # no heat visible: only the image
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    axes = img[: int(0.9 * h), : int(0.7 * w)]  # the picture area, not the colour bar
    assert np.abs(axes[..., 0] - axes[..., 1]).max() <= 1
    colour = np.zeros((32, 32, 3))
    colour[..., 0] = 200
    img = np.asarray(
        Image.open(io.BytesIO(E.render_overlay(colour, heat, alpha=0.0))).convert("RGB")
    )
    assert (img[..., 0].astype(int) - img[..., 1]).max() > 100


# --------------------------------------------------------------------------- CLI


def at_input_227(core):
    """``core``'s layers behind a 227×227 input resized to 32 (alexkit's evaluation
    pipeline crops 227/256 of the shorter side: a 32-pixel input would see 1/8 of it)."""
    inputs = keras.Input((227, 227, 3), name="image")
    x = keras.layers.Resizing(SIZE, SIZE, antialias=True, name="shrink")(inputs)
    for lyr in core.layers[1:]:
        x = lyr(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def run_dir(trained, tmp_path_factory):
    """The trained net as a run directory, and a class-folder set of 256×256 PNGs."""
    model = at_input_227(trained[0])
    root = tmp_path_factory.mktemp("explain")
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"class_names": list(COLOURS)}))
    data = root / "squares"
    x, y, _ = square_images(6, seed=3, margin=4)  # inside the centre crop
    for i in range(6):
        name = list(COLOURS)[y[i]]
        (data / name).mkdir(parents=True, exist_ok=True)
        big = np.kron(x[i], np.ones((8, 8, 1))).astype(np.uint8)  # 256×256, blocky
        Image.fromarray(big).save(data / name / f"img{i}.png")
    return run, data, y


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_cli_explains_a_folder_and_refuses_to_overwrite(run_dir, tmp_path):
    run, data, y = run_dir
    out = tmp_path / "out"
    args = ["explain", str(run), "--data", str(data), "--out", str(out), "--save-maps"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 6 and summary["method"] == "gradcam"
    rows = _rows(out / "explain.csv")
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert {r["path"].split("/")[0] for r in rows} == set(COLOURS)
    assert all(r["true"] == r["path"].split("/")[0] for r in rows)
    assert all(r["target"] == r["predicted"] for r in rows)  # --class predicted
    assert sum(r["predicted"] == r["true"] for r in rows) >= 5
    maps = np.load(out / "maps.npz")
    assert sorted(maps.files) == sorted(r["path"] for r in rows)
    for r in rows:
        heat = maps[r["path"]]
        assert heat.shape == (227, 227) and heat.dtype == np.float32
        assert (int(r["peak_row"]), int(r["peak_col"])) == E.peak(heat)
        assert float(r["center_share"]) == pytest.approx(E.center_share(heat), abs=1e-6)
        assert Image.open(out / r["overlay"]).format == "PNG"

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 4 and "--force" in again.stderr
    forced = CliRunner().invoke(
        app, [*args, "--force", "--class", "red", "--method", "gradcam++", "--sanity-check"]
    )
    assert forced.exit_code == 0, forced.stderr
    assert {r["target"] for r in _rows(out / "explain.csv")} == {"red"}
    assert "sanity checks" in forced.stdout and "head re-initialised" in forced.stdout
    sanity = json.loads((out / "sanity.json").read_text())
    assert sanity["method"] == "gradcam++"
    assert len(sanity["head_randomisation"]["per_image"]) == 5 * 6  # 5 draws × 6 images


def test_cli_occlusion_true_class_and_loose_images(run_dir, tmp_path):
    run, data, _ = run_dir
    out = tmp_path / "occ"
    args = ["explain", str(run), "--data", str(data), "--out", str(out), "--method", "occlusion"]
    args += ["--class", "true", "--patch", "8", "--stride", "8", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    rows = _rows(out / "explain.csv")
    assert all(r["target"] == r["true"] for r in rows)

    images = sorted(str(p) for p in data.rglob("*.png"))[:2]
    loose = tmp_path / "loose"
    result = CliRunner().invoke(app, ["explain", str(run), *images, "--out", str(loose), "--json"])
    assert result.exit_code == 0, result.stderr
    rows = _rows(loose / "explain.csv")
    assert len(rows) == 2 and all(r["true"] == "" for r in rows)
    bad = CliRunner().invoke(
        app, ["explain", str(run), *images, "--out", str(tmp_path / "t"), "--class", "true"]
    )
    assert bad.exit_code == 3
    bad = CliRunner().invoke(
        app, ["explain", str(run), *images, "--out", str(tmp_path / "l"), "--layer", "fc6"]
    )
    assert bad.exit_code == 2 and "conv5" in bad.stderr
    bad = CliRunner().invoke(
        app, ["explain", str(run), *images, "--out", str(tmp_path / "c"), "--colormap", "x"]
    )
    assert bad.exit_code == 2


def test_cli_explains_nifti_slices_with_the_slice_in_the_name(run_dir, tmp_path):
    nib = pytest.importorskip("nibabel")
    run, _, _ = run_dir
    data = tmp_path / "volumes" / "red"
    data.mkdir(parents=True)
    vol = np.full((40, 40, 3), 100, np.int16)
    vol[10:20, 10:20, :] = 900
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(data / "scan.nii.gz"))
    out = tmp_path / "out"
    args = ["explain", str(run), "--data", str(tmp_path / "volumes"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--save-maps", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = _rows(out / "explain.csv")
    assert len(rows) == 3
    assert all(r["path"].startswith("red/scan.nii.gz#slice=") for r in rows)
    assert sorted(r["overlay"] for r in rows) == [
        f"overlays/red/scan_slice{k:04d}_axis2.png" for k in range(3)
    ]
    assert sorted(np.load(out / "maps.npz").files) == sorted(r["path"] for r in rows)


def test_cli_explains_video_frames_with_the_frame_in_the_name(run_dir, tmp_path):
    pytest.importorskip("av")
    from test_media import write_clip

    run, _, _ = run_dir
    x, y, _ = square_images(12, seed=11, margin=4)
    frames = [np.kron(img, np.ones((8, 8, 1))).astype(np.uint8) for img in x]
    clip = write_clip(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", str(run), clip, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    rows = _rows(out / "explain.csv")
    assert len(rows) == 8  # MediaOptions' default frames per clip
    frames_seen = [int(r["path"].split("#frame=")[1].split(",")[0]) for r in rows]
    assert all(r["path"].startswith("clip.mp4#frame=") for r in rows)
    assert [r["overlay"] for r in rows] == [f"overlays/clip_frame{f:04d}.png" for f in frames_seen]
    # Lossy MPEG-4 keeps the square's colour: the net still reads most frames right.
    truth = [list(COLOURS)[y[f]] for f in frames_seen]
    assert sum(r["predicted"] == t for r, t in zip(rows, truth, strict=True)) >= 6


def test_cli_explains_a_csv_manifest_and_multiframe_dicom(run_dir, tmp_path):
    pytest.importorskip("pydicom")
    from test_media import write_dicom

    run, data, _ = run_dir
    files = sorted(data.rglob("*.png"))
    manifest = tmp_path / "list.csv"
    lines = ["path,label"] + [f"{p},{p.parent.name}" for p in files[:3]]
    stored = np.full((2, 64, 64), 300, np.uint16)  # two frames, a bright square in each
    stored[0, 8:24, 8:24] = stored[1, 40:56, 40:56] = 3000
    scan = write_dicom(tmp_path / "scan.dcm", stored)
    lines.append(f"{scan},red")
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    args = ["explain", str(run), "--data", str(manifest), "--out", str(out), "--save-maps"]
    result = CliRunner().invoke(app, [*args, "--class", "true", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = _rows(out / "explain.csv")
    assert len(rows) == 3 + 2
    dicom = [r for r in rows if r["path"].startswith("scan.dcm#frame=")]
    assert [r["overlay"] for r in dicom] == [
        "overlays/scan_frame0000.png",
        "overlays/scan_frame0001.png",
    ]
    assert all(r["target"] == r["true"] for r in rows)
    maps = np.load(out / "maps.npz")
    assert sorted(maps.files) == sorted(r["path"] for r in rows)
    # The two frames' squares sit in opposite corners, and so do their maps' peaks.
    a, b = (E.peak(maps[r["path"]]) for r in dicom)
    assert a[0] < 113 < b[0] and a[1] < 113 < b[1]


def test_a_classifier_of_any_input_size_is_explained_at_its_variants_size(tmp_path):
    """Grad-CAM of a tiny body of any input size: read at 99 and mapped at 99×99, equal
    to gradcam() on the pipeline's 99-pixel crops (a fixed 227 would change both)."""
    from conftest import write_class_images

    from alexkit.data import load_spec, make_dataset
    from alexkit.model import build_alexnet

    write_class_images(tmp_path / "imgs", ["a", "b"], 1, size=(120, 110))
    body = build_alexnet("tiny", include_top=False, input_shape=(None, None, 3), seed=0)
    x = keras.layers.GlobalAveragePooling2D()(body.output)
    model = keras.Model(body.inputs, keras.layers.Dense(2, activation="softmax")(x))
    spec = load_spec(str(tmp_path / "imgs"), val_fraction=0)
    result = E.explain_data(model, spec, tmp_path / "out", overlays=False, save_maps=True)
    maps = np.load(tmp_path / "out" / "maps.npz")
    crops = np.concatenate(
        [x.numpy() for x, _ in make_dataset(spec, training=False, image_size=99, batch_size=8)]
    )
    want, _, _ = E.gradcam(model, crops)
    for k, row in enumerate(result.rows):
        assert maps[row["path"]].shape == (99, 99)
        np.testing.assert_allclose(maps[row["path"]], want[k], rtol=1e-4, atol=1e-5)
