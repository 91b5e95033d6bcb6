"""Where the network looked: Grad-CAM, Grad-CAM++ and occlusion maps (``alexkit explain``).

* **Grad-CAM** (Selvaraju et al., ICCV 2017): the activations ``A_k`` of a convolutional
  layer weighted by the spatial mean of the gradient of the class *logit* ``y_c`` (not the
  softmax, whose gradient mixes in every other class): ``ReLU(Σ_k mean_ij(∂y_c/∂A_kij) A_k)``.
* **Grad-CAM++** (Chattopadhay et al., WACV 2018): per-position weights
  ``α = g² / (2g² + Σ_ij A · g³)`` (g = ∂y_c/∂A) on the positive gradients, which spreads
  the map over several instances of a class instead of the strongest one. It keeps only
  positive gradients, so its weights are never negative and its maps lean towards where
  the layer fires at all: on a (briefly) trained AlexNet it failed both sanity checks
  below (rank correlation 0.99) where Grad-CAM passed (−0.09, −0.19). Run them on yours.
* **Occlusion** (Zeiler & Fergus, ECCV 2014): slide a patch of a baseline colour over the
  image; a pixel's value is the mean drop of the target's probability (or logit) over the
  patches that cover it. Model-agnostic and slow (one forward pass per patch position).

Both gradient methods cost one forward and one backward pass per batch. The maps are
as coarse as the layer (13×13 at ``conv5``) and are bilinearly upsampled to the model's
input (the centre crop the model saw): a pointer to what drove the decision, useful to
catch shortcuts (text markers, borders, backgrounds), not a segmentation.

:func:`sanity_checks` runs the two checks of Adebayo et al., "Sanity Checks for Saliency
Maps" (NeurIPS 2018), that a faithful method passes: maps change when the classifier head
is re-initialised, and differ between two classes the model separates. Guided
backpropagation fails them and is not offered.

Modules: ``cam`` (:class:`Explainer`, Grad-CAM and Grad-CAM++), ``occlude`` (occlusion),
``stats`` (peak, centre share, blank maps, rank correlation), ``sanity`` (:func:`sanity_checks`),
``render`` (overlay PNGs), ``files`` (the output folder) and ``run`` (:func:`explain_data`).
"""

from alexkit.errors import CheckpointError, DataError, UsageError
from alexkit.explain.cam import METHOD_TITLES, METHODS, Explainer, gradcam, upsample
from alexkit.explain.cam import _softmax as _softmax
from alexkit.explain.files import _NpzWriter as _NpzWriter
from alexkit.explain.files import overlay_name, prepare_out, relative_key
from alexkit.explain.occlude import baseline_colour, occlusion, occlusion_positions
from alexkit.explain.render import _title as _title
from alexkit.explain.render import check_colormap, gradcam_overlays, render_overlay
from alexkit.explain.run import (
    CSV_COLUMNS,
    ExplainResult,
    explain_batch,
    explain_data,
    resolve_target,
)
from alexkit.explain.sanity import SanityReport, sanity_checks
from alexkit.explain.sanity import _head_layers as _head_layers
from alexkit.explain.stats import CENTER_FRACTION, center_share, is_blank, peak, rank_correlation

__all__ = [
    "CENTER_FRACTION",
    "CSV_COLUMNS",
    "CheckpointError",
    "DataError",
    "METHODS",
    "METHOD_TITLES",
    "ExplainResult",
    "Explainer",
    "SanityReport",
    "UsageError",
    "baseline_colour",
    "center_share",
    "check_colormap",
    "explain_batch",
    "explain_data",
    "gradcam",
    "gradcam_overlays",
    "is_blank",
    "occlusion",
    "occlusion_positions",
    "overlay_name",
    "peak",
    "prepare_out",
    "rank_correlation",
    "relative_key",
    "render_overlay",
    "resolve_target",
    "sanity_checks",
    "upsample",
]
