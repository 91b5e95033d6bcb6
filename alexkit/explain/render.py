"""Overlay PNGs: the image, its heat map in a matplotlib colormap, a colour bar and a title."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from alexkit.errors import UsageError
from alexkit.explain.cam import METHOD_TITLES, Explainer, gradcam


def check_colormap(name: str) -> None:
    """Raise UsageError unless ``name`` is a matplotlib colormap."""
    import matplotlib

    if name not in matplotlib.colormaps:
        some = ", ".join(["jet", "turbo", "inferno", "viridis", "magma", "hot"])
        raise UsageError(f"--colormap {name!r} is not a matplotlib colormap (e.g. {some}).")


def render_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    title: str = "",
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    gray: bool | None = None,
    label: str = "relative importance",
    signed: bool = False,
    dpi: int = 100,
) -> bytes:
    """One overlay PNG: the image, the heat map over it, a colour bar and a title.

    Args:
        image: (H, W, 3) pixels in [0, 255] (what the model saw).
        heat: (H, W) map at the same size.
        title: text above the picture (class names, probability).
        alpha: opacity of the heat map (0: image only, 1: map only).
        colormap: a matplotlib colormap name.
        gray: draw the image in gray (default: when its three channels are equal).
        label: the colour bar's label.
        signed: keep negative values (occlusion) instead of scaling to [0, 1].
        dpi: resolution of the PNG (4.3 × 4.1 inches: 430 × 410 pixels at 100 dpi).

    Returns:
        The PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1]; received {alpha}.")
    img = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    heat = np.asarray(heat, np.float32)
    if gray is None:
        gray = bool(np.all(img[..., 0] == img[..., 1]) and np.all(img[..., 1] == img[..., 2]))
    if signed:
        top = float(np.abs(heat).max()) or 1.0
        shown, vmin, vmax = heat, -top, top
    else:
        top = float(heat.max())
        shown, vmin, vmax = (heat / top if top > 0 else heat), 0.0, 1.0
    import matplotlib

    if gray:  # gray under the map: a grayscale input is not tinted by the colour channels
        img = np.repeat(img.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    # Blend once in numpy and draw one picture: two alpha-composited layers cost ~3×.
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
    cmap = matplotlib.colormaps[colormap]
    colours = cmap(norm(shown))[..., :3]
    blended = (1.0 - alpha) * (img / 255.0) + alpha * colours
    fig = Figure(figsize=(4.3, 4.1), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.76, 0.8))
    ax.imshow(np.clip(blended, 0.0, 1.0), interpolation="nearest")
    ax.set_axis_off()
    cax = fig.add_axes((0.8, 0.07, 0.035, 0.7))
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.text(0.4, 0.985, title, ha="center", va="top", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _title(
    key: str,
    true: str | None,
    predicted: str,
    probability: float,
    target: str,
    method: str,
    layer: str,
) -> str:
    name = key if len(key) <= 60 else "…" + key[-59:]
    where = "" if method == "occlusion" else f" @ {layer}"
    truth = f"true: {true} · " if true is not None else ""
    return (
        f"{name}\n{truth}predicted: {predicted} ({probability:.1%})\n"
        f"{METHOD_TITLES[method]} for {target}{where}"
    )


def gradcam_overlays(
    model: Any,
    images: Any,
    targets: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    true_labels: Sequence[int] | None = None,
    titles: Sequence[str] | None = None,
    layer: str = "conv5",
    method: str = "gradcam",
    alpha: float = 0.4,
    colormap: str = "jet",
    batch_size: int = 32,
    gray: bool | None = None,
    dpi: int = 100,
) -> list[bytes]:
    """Grad-CAM overlay PNGs for images already at the model's input size.

    Meant for reports (``evaluate --explain``): pass the evaluation crops of the images
    to show, get one PNG (bytes) each.

    Args:
        model: a Keras classifier taking raw [0, 255] RGB.
        images: (N, H, W, 3) pixels, e.g. batches of ``make_dataset(training=False)``.
        targets: class per image (-1 or None: the predicted class).
        class_names: names for the titles (default ``"0".."C-1"``).
        true_labels: true class per image for the titles (-1: unknown).
        titles: a first title line per image (e.g. its path).
        layer, method, alpha, colormap: as for ``alexkit explain``.
        batch_size: images per forward/backward pass.
        gray: draw images in gray (default: when their channels are equal).
        dpi: resolution of the PNGs.

    Returns:
        One PNG (bytes) per image, in order.
    """
    check_colormap(colormap)
    explainer = Explainer(model, layer)
    x = np.asarray(images, np.float32)
    names = list(class_names) if class_names is not None else None
    names = names or [str(i) for i in range(explainer.num_classes)]
    t_all = None if targets is None else np.asarray(targets)
    pngs: list[bytes] = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        t = None if t_all is None else t_all[start : start + batch_size]
        maps, probs, chosen = gradcam(model, batch, t, method=method, explainer=explainer)
        for k in range(len(batch)):
            i = start + k
            pred = int(probs[k].argmax())
            true = None
            if true_labels is not None and int(true_labels[i]) >= 0:
                true = names[int(true_labels[i])]
            title = _title(
                titles[i] if titles is not None else "",
                true,
                names[pred],
                float(probs[k, pred]),
                names[int(chosen[k])],
                method,
                layer,
            ).lstrip("\n")
            pngs.append(
                render_overlay(
                    batch[k], maps[k], title, alpha=alpha, colormap=colormap, gray=gray, dpi=dpi
                )
            )
    return pngs
