"""AlexNet's custom layers, in ``keras.ops`` only so they run on every Keras backend.

- :class:`LocalResponseNormalization` — §3.3 of the 2012 paper.
- :class:`GroupedConv2D` — the two-GPU "grouped" convolutions (conv2, conv4, conv5) kept as
  one layer with one kernel of shape (k, k, C_in/groups, C_out), computed the fastest way
  for the backend.
- :class:`Preprocess` — raw RGB pixels in [0, 255] → the inputs the weights expect, so a
  saved model takes raw pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

PACKAGE = "alexkit"


@keras.saving.register_keras_serializable(package=PACKAGE)
class LocalResponseNormalization(keras.layers.Layer):
    """Local Response Normalization across channels (Krizhevsky et al. 2012, §3.3).

    ``b_i = a_i / (k + alpha * sum_{j=i-r}^{i+r} a_j**2) ** beta`` with the sum clipped to
    the channels that exist, over the last (channel) axis of an NHWC tensor.

    This is the paper's formula, identical to ``tf.nn.local_response_normalization(x,
    depth_radius=r, bias=k, alpha=alpha, beta=beta)``. The defaults are the paper's:
    n = 5 (``depth_radius=2``), k = 2, alpha = 1e-4, beta = 0.75.

    Caffe and PyTorch write the same layer with ``alpha`` divided by the window size n.
    Weights trained in Caffe (``bvlc_alexnet``) need k = 1 and alpha = 1e-4 / 5 here; use
    ``LocalResponseNormalization.caffe()`` (or ``from_caffe(local_size, alpha, k, beta)``).

    How it is computed (the function is the formula above; only the cost changes):

    - The window sum is a product with a banded matrix, one fast matmul on every backend
      (shifted adds, cumulative sums, pooling and 1-channel convolutions over the channel
      axis all measured slower on TensorFlow's CPU kernels). With 128 or more channels it
      runs per block of 32 channels plus a 2r-channel halo: 36 multiply-adds per element
      instead of C (256 for ``lrn2``); for conv1's 96 channels the halo's slicing costs
      as much as the multiply-adds it saves.
    - The gradient is written by hand, ``dx = g * s**-beta - 2 alpha beta * x *
      window_sum(g * y / s)``, reusing the forward's ``s``, ``s**-beta`` and ``y``: about
      half the elementwise passes of automatic differentiation through the forward.
    - Not done, measured on a 2-core EPYC: running it one image at a time
      (``keras.ops.map``, the backward recomputing ``s``) so that the ~20 elementwise
      passes over lrn1's 74 MB stay in cache was 1.17x faster alone in float32 but 2 %
      slower inside a training step, and 1.1-1.4x slower in bfloat16; ``pow`` for
      ``s**-0.75`` was 2x slower; adding ``k`` inside the matmul (oneDNN's fused bias)
      made no difference.
    - Under ``mixed_bfloat16`` it computes in bfloat16 (same exponent range as float32,
      no casts, half the memory traffic). Its five bfloat16 roundings put the result
      within 2 % of float32 math on the same input (typically 0.2 %; measured at most
      1.0 %). Under ``mixed_float16`` it computes in float32 (squares
      overflow float16) and returns float16.

    Args:
        depth_radius: half-width r of the window; the window spans n = 2r + 1 channels.
        bias: k.
        alpha: scale of the sum of squares (paper convention, *not* divided by n).
        beta: exponent.

    Example:
        >>> lrn = LocalResponseNormalization()          # the paper's constants
        >>> caffe_lrn = LocalResponseNormalization.caffe()  # for bvlc_alexnet weights
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(
                f"depth_radius must be a non-negative integer. Received: {depth_radius}"
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._block = None

    @classmethod
    def from_caffe(
        cls, local_size: int = 5, alpha: float = 1e-4, k: float = 1.0, beta: float = 0.75, **kwargs
    ) -> LocalResponseNormalization:
        """Build from Caffe/PyTorch parameters (alpha divided by ``local_size``)."""
        if local_size % 2 != 1:
            raise ValueError(f"local_size must be odd. Received: local_size={local_size}")
        return cls(
            depth_radius=(local_size - 1) // 2,
            bias=k,
            alpha=alpha / local_size,
            beta=beta,
            **kwargs,
        )

    @classmethod
    def caffe(cls, **kwargs) -> LocalResponseNormalization:
        """The constants of Caffe's ``bvlc_alexnet`` (k=1, alpha=1e-4/5, beta=0.75, n=5)."""
        return cls.from_caffe(5, 1e-4, 1.0, 0.75, **kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("LocalResponseNormalization needs a known channel count.")
        self._block = _lrn_block_size(channels, self.depth_radius)
        # Numpy constants, not backend tensors: safe to capture in any traced function.
        # alpha (forward) and -2*alpha*beta (backward) are folded into the band.
        halo = self.depth_radius if self._block < channels else 0
        rows, radius = self._block + 2 * halo, self.depth_radius
        self._band_forward = _band(rows, self._block, halo, radius, self.alpha)
        self._band_backward = _band(rows, self._block, halo, radius, -2.0 * self.alpha * self.beta)
        self.built = True

    def _window_sum(self, values, band: np.ndarray):
        """``sum_{|j-i|<=r} band * values_j`` over the last axis (band carries the scale)."""
        band = ops.cast(band, values.dtype)
        channels = values.shape[-1]
        block, radius = self._block, self.depth_radius
        if block == channels:
            return ops.matmul(values, band)
        # Blocks of `block` channels, each widened by the r channels on either side
        # (zeros past the ends), so one small banded matmul per block does the whole sum.
        shape = ops.shape(values)
        blocks = ops.reshape(values, (-1, channels // block, block))
        before = ops.pad(blocks[:, :-1, block - radius :], [[0, 0], [1, 0], [0, 0]])
        after = ops.pad(blocks[:, 1:, :radius], [[0, 0], [0, 1], [0, 0]])
        widened = ops.concatenate([before, blocks, after], axis=-1)
        return ops.reshape(ops.matmul(widened, band), shape)

    def _inverse_power(self, scale):
        """``scale ** -beta``; the common exponents without pow(), which is slow on CPUs."""
        if self.beta == 0.75:
            # s^-0.75 = rsqrt(s * sqrt(s)): three cheap ops, and in bfloat16 fewer rounding
            # errors reach the result than with r * sqrt(r), r = rsqrt(s).
            return ops.rsqrt(scale * ops.sqrt(scale))
        if self.beta == 0.5:
            return ops.rsqrt(scale)
        if self.beta == 1.0:
            return ops.reciprocal(scale)
        return ops.power(scale, -self.beta)

    def call(self, inputs):
        # bfloat16 has float32's range: compute in it. float16 squares overflow: float32.
        out_dtype = keras.backend.standardize_dtype(inputs.dtype)
        compute = "bfloat16" if out_dtype == "bfloat16" else "float32"

        @ops.custom_gradient
        def lrn(x):
            x = ops.cast(x, compute)
            scale = self._window_sum(ops.square(x), self._band_forward) + self.bias
            inv = self._inverse_power(scale)
            y = x * inv

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                g = ops.cast(upstream, compute)
                # Named, so a profile (benchmarks/profile_step.py) tells lrn1's backward
                # from lrn2's. d y_i / d x_j summed over i: the window is symmetric, so
                # the same band.
                with keras.name_scope(f"{self.name}_grad"):
                    spread = self._window_sum(g * y / scale, self._band_backward)
                    return ops.cast(g * inv + x * spread, out_dtype)

            return ops.cast(y, out_dtype), grad

        return lrn(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth_radius": self.depth_radius,
                "bias": self.bias,
                "alpha": self.alpha,
                "beta": self.beta,
            }
        )
        return config


def _lrn_block_size(channels: int, radius: int) -> int:
    """Channels per banded block: 32 where that saves work (C >= 128), else all of them."""
    for block in (32, 16, 64):
        if channels >= 128 and channels % block == 0 and block >= 2 * radius + 1:
            return block
    return channels


def _band(rows: int, cols: int, offset: int, radius: int, value: float) -> np.ndarray:
    """(rows, cols) float32 matrix: ``value`` where ``|row - offset - col| <= radius``, else 0."""
    distance = np.arange(rows)[:, None] - offset - np.arange(cols)[None, :]
    return ((np.abs(distance) <= radius) * value).astype("float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupedConv2D(keras.layers.Layer):
    """A 2-D convolution whose channels are split into independent groups.

    One kernel of shape ``(k, k, C_in / groups, C_out)`` — the layout of Keras'
    ``Conv2D(groups=...)`` and of ``bvlc_alexnet.npy`` — so weights import, ``freeze`` and
    feature extraction treat it as one layer. Output channels ``[g*C_out/groups,
    (g+1)*C_out/groups)`` see only input channels ``[g*C_in/groups, (g+1)*C_in/groups)``.

    ``implementation`` chooses the computation, not the function:

    - ``"split"``: slice the input and kernel per group, run ``groups`` ordinary
      convolutions, concatenate. On TensorFlow's CPU kernels this is ~3× faster than the
      native grouped op, whose backward pass is slow.
    - ``"native"``: one grouped convolution (``feature_group_count``), best on GPUs.
    - ``"auto"`` (default): ``split`` on the TensorFlow backend, ``native`` elsewhere.

    Args:
        filters: output channels (divisible by ``groups``).
        kernel_size: int or (kh, kw).
        groups: number of groups (2 in AlexNet).
        strides: int or (sh, sw).
        padding: ``"valid"`` or ``"same"``.
        activation: activation applied after the bias (e.g. ``"relu"``).
        use_bias: add a bias per output channel.
        kernel_initializer / bias_initializer: Keras initializers.
        implementation: ``"auto"``, ``"split"`` or ``"native"``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        groups: int = 2,
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        implementation: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters % groups:
            raise ValueError(
                f"filters must be divisible by groups. Received: filters={filters}, groups={groups}"
            )
        if implementation not in ("auto", "split", "native"):
            raise ValueError(
                "implementation must be 'auto', 'split' or 'native'. "
                f"Received: implementation={implementation!r}"
            )
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.groups = int(groups)
        self.strides = _pair(strides)
        self.padding = padding
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.implementation = implementation

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"input channels must be known and divisible by groups={self.groups}. "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        self.built = True

    def _resolved_implementation(self) -> str:
        if self.implementation != "auto":
            return self.implementation
        return "split" if keras.backend.backend() == "tensorflow" else "native"

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = None if self.bias is None else ops.cast(self.bias, self.compute_dtype)
        if self._resolved_implementation() == "native" or self.groups == 1:
            return self._bias_and_activation(
                ops.conv(inputs, kernel, strides=self.strides, padding=self.padding), bias
            )
        # split, not slicing: the gradient of a split is one concatenation, while each
        # slice's gradient writes a zero-filled full-size tensor that then gets summed
        # (8 % of an `original` training step in bfloat16 on a 2-core EPYC).
        x_parts = ops.split(inputs, self.groups, axis=-1)
        k_parts = ops.split(kernel, self.groups, axis=-1)
        b_parts = [None] * self.groups if bias is None else ops.split(bias, self.groups)
        # Bias and an elementwise activation per group, before the concatenation: then
        # each group is conv + bias + ReLU, which TensorFlow fuses into one oneDNN call.
        per_group = self.activation in _ELEMENTWISE_ACTIVATIONS
        parts = [
            self._bias_and_activation(
                ops.conv(x_g, k_g, strides=self.strides, padding=self.padding),
                b_g,
                activate=per_group,
            )
            for x_g, k_g, b_g in zip(x_parts, k_parts, b_parts, strict=True)
        ]
        outputs = ops.concatenate(parts, axis=-1)
        if not per_group and self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _bias_and_activation(self, outputs, bias, activate: bool = True):
        if bias is not None:
            # (1, 1, 1, C) like Keras' Conv2D: the pattern TensorFlow's remapper fuses.
            outputs = ops.add(outputs, ops.reshape(bias, (1, 1, 1, -1)))
        if activate and self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        out = []
        for size, k, s in zip((h, w), self.kernel_size, self.strides, strict=True):
            if size is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-size // s))
            else:
                out.append((size - k) // s + 1)
        return (n, out[0], out[1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "groups": self.groups,
                "strides": self.strides,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "implementation": self.implementation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Preprocess(keras.layers.Layer):
    """``(x - mean) / std`` per channel: raw RGB pixels in [0, 255] → network inputs.

    ``mean`` and ``std`` are in pixel units (0..255) and stored in the config, not as
    weights, so they never count as parameters and never train.

    Args:
        mean: three per-channel means (R, G, B) in 0..255 units.
        std: three per-channel standard deviations in 0..255 units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values. Received: mean={mean}, std={std}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive. Received: std={std}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, inputs):
        # In float32 whatever the policy, one cast at the end: more exact under mixed
        # precision, and bfloat16 arithmetic broadcasting over 3 channels is slow on CPUs
        # (3x the float32 time on a 2-core EPYC).
        x = ops.cast(inputs, "float32")
        mean = ops.convert_to_tensor(self.mean, dtype="float32")
        inv_std = ops.convert_to_tensor([1.0 / s for s in self.std], dtype="float32")
        return ops.cast((x - mean) * inv_std, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


# Activations applied to each element alone: the same per group as after concatenating.
_ELEMENTWISE_ACTIVATIONS = (keras.activations.relu, keras.activations.linear)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair. Received: {value}")
    return value
