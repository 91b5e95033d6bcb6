"""Image datasets: sources (folders, CSV, ImageNet, TFRecord) → a spec → tf.data.

A :class:`DatasetSpec` is plain data (paths, integer labels, class names, split, group);
:func:`load_spec` builds it from what users have on disk, :func:`make_dataset` streams it
through decoding and augmentation, :func:`scan` checks it (``alexkit data check``) and
:func:`pack_tfrecords` writes ImageNet-style shards (``alexkit data pack``).

Modules: ``spec`` (DatasetSpec, SkipLog, class maps), ``layouts`` (load_spec, folder
walking, split_spec), ``sources`` (file/TFRecord sources, sniffing, in-graph decoders),
``pipeline`` (make_dataset), ``check`` (scan), ``pack`` (pack_tfrecords), ``decode``
(Pillow/media decoding, header sniffing) and ``augment`` (crops, flips, PCA lighting).
Importing this package does not import TensorFlow.
"""

from alexkit.data import augment, decode
from alexkit.data.augment import AugmentConfig
from alexkit.data.check import ScanReport, scan
from alexkit.data.layouts import (
    UNREADABLE_MEDIA,
    collect_items,
    expand_media,
    is_series_folder,
    load_spec,
    split_spec,
)
from alexkit.data.pack import PackResult, pack_tfrecords
from alexkit.data.pipeline import make_dataset
from alexkit.data.sources import exif_orient, record_features, sniff_all
from alexkit.data.spec import (
    CLASS_MAP_FILE,
    MIN_VAL_PER_CLASS,
    SPLIT_ALIASES,
    SPLITS,
    DatasetSpec,
    SkipLog,
    check_classes,
    class_key,
    load_class_map,
    relabel,
    save_class_map,
)

__all__ = [
    "CLASS_MAP_FILE",
    "MIN_VAL_PER_CLASS",
    "SPLITS",
    "SPLIT_ALIASES",
    "UNREADABLE_MEDIA",
    "AugmentConfig",
    "DatasetSpec",
    "PackResult",
    "ScanReport",
    "SkipLog",
    "augment",
    "check_classes",
    "class_key",
    "collect_items",
    "decode",
    "exif_orient",
    "expand_media",
    "is_series_folder",
    "load_class_map",
    "load_spec",
    "make_dataset",
    "pack_tfrecords",
    "record_features",
    "relabel",
    "save_class_map",
    "scan",
    "sniff_all",
    "split_spec",
]
