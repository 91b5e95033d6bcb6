"""The local weights store, and importers for published AlexNet weights.

The store lives under ``$ALEXKIT_HOME/weights`` (default ``~/.cache/alexkit/weights``).
Each entry is a folder holding a complete Keras model and a small metadata file::

    weights/torchvision-imagenet/model.keras   # takes raw RGB pixels in [0, 255]
    weights/torchvision-imagenet/meta.json     # variant, source, sha256, preprocessing, ...

Entries are written to a hidden temporary folder and renamed into place, so a failed
import or download never leaves a half-written entry behind.

Two published formats are imported; neither can run code while loading:

* ``torchvision``: the ``state_dict`` of torchvision's AlexNet (``alexnet-owt-7be5be79.pth``),
  read with ``torch.load(weights_only=True)``; it becomes variant ``torchvision``.
* ``bvlc-npy``: the widely shared ``bvlc_alexnet.npy`` converted from Caffe's
  ``bvlc_alexnet``, read by a restricted unpickler that admits only numpy arrays; it
  becomes variant ``original`` with Caffe's LRN constants.

Modules: :mod:`~alexkit.weights.store` (list, get, register, remove, resolve, load),
:mod:`~alexkit.weights.torchvision` and :mod:`~alexkit.weights.caffe` (read and convert
one format each), :mod:`~alexkit.weights.importer` (file -> store entry) and
:mod:`~alexkit.weights.download` (fetch torchvision's file, check its sha256, import it).

Example::

    from alexkit.weights import import_weights, load_weights_model
    entry = import_weights("alexnet-owt-7be5be79.pth", "torchvision")
    model = load_weights_model("imagenet", variant="torchvision")
"""

from __future__ import annotations

from alexkit.weights._common import file_sha256
from alexkit.weights.caffe import convert_bvlc, load_bvlc_npy, load_pickled_arrays
from alexkit.weights.download import (
    TORCHVISION_FILENAME,
    TORCHVISION_SHA256_PREFIX,
    TORCHVISION_URL,
    URL_ENV,
    download_weights,
)
from alexkit.weights.importer import (
    DEFAULT_NAMES,
    FORMAT_VARIANTS,
    FORMATS,
    build_imported_model,
    import_weights,
)
from alexkit.weights.store import (
    HOW_TO_GET_WEIGHTS,
    META_FILE,
    MODEL_FILE,
    PREFERRED_IMAGENET,
    WeightsEntry,
    get_weights,
    list_weights,
    load_weights_model,
    preprocessing_of,
    register_weights,
    remove_weights,
    resolve_weights,
    weights_dir,
)
from alexkit.weights.torchvision import convert_torchvision, load_torchvision_state_dict

__all__ = [
    "DEFAULT_NAMES",
    "FORMATS",
    "FORMAT_VARIANTS",
    "HOW_TO_GET_WEIGHTS",
    "META_FILE",
    "MODEL_FILE",
    "PREFERRED_IMAGENET",
    "TORCHVISION_FILENAME",
    "TORCHVISION_SHA256_PREFIX",
    "TORCHVISION_URL",
    "URL_ENV",
    "WeightsEntry",
    "build_imported_model",
    "convert_bvlc",
    "convert_torchvision",
    "download_weights",
    "file_sha256",
    "get_weights",
    "import_weights",
    "list_weights",
    "load_bvlc_npy",
    "load_pickled_arrays",
    "load_torchvision_state_dict",
    "load_weights_model",
    "preprocessing_of",
    "register_weights",
    "remove_weights",
    "resolve_weights",
    "weights_dir",
]
