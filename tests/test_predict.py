"""`alexkit.predict`: image collection, probabilities equal to the model, top-k."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_class_images

from alexkit.errors import DataError
from alexkit.predict import Predictions, collect_images, predict_images


def test_collect_images_expands_folders_sorted(tmp_path):
    write_class_images(tmp_path / "imgs", ["b", "a"], 2, size=(16, 16))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "a" / ".hidden.png").write_bytes(b"")
    single = tmp_path / "imgs" / "b" / "b_001.png"
    got = collect_images([single, tmp_path / "imgs"])
    names = [p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in got]
    assert names == ["b/b_001.png", "a/a_000.png", "a/a_001.png", "b/b_000.png", "b/b_001.png"]
    with pytest.raises(DataError, match="does not exist"):
        collect_images([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        collect_images([tmp_path / "empty"])


def test_top_k_orders_and_caps():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    pred = Predictions(["x", "y"], probs, ["a", "b", "c"], [])
    assert pred.top(2) == [[("b", 0.7), ("c", 0.2)], [("a", 0.5), ("c", 0.3)]]
    assert len(pred.top(10)[0]) == 3
    rec = pred.to_records(1)[1]
    assert rec == {
        "path": "y",
        "predicted": "a",
        "probability": 0.5,
        "top_k": [{"class": "a", "probability": 0.5}],
    }


def test_predict_images_equals_model_and_skips_unreadable(tmp_path):
    from test_evaluate_cli import pipeline_images, tiny_model

    names = ["a", "b", "c"]
    write_class_images(tmp_path / "imgs", names, 2, size=(40, 36))
    model = tiny_model(3)
    x, _, items = pipeline_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "c" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = predict_images(model, names, [tmp_path / "imgs"], batch_size=4)
    assert result.items == items
    np.testing.assert_allclose(result.probs, model.predict(x, verbose=0), atol=2e-6)
    assert [p.rsplit("/", 1)[1] for p, _ in result.skipped] == ["zz_broken.jpg"]


def test_a_classifier_of_any_input_size_predicts_at_its_variants_size(tmp_path):
    """A tiny body of any input size under a pooled head: read at 99 (its variant's
    size), not 227: the probabilities equal the model on the pipeline's 99-pixel crops."""
    import keras

    from alexkit.data import load_spec, make_dataset
    from alexkit.model import build_alexnet

    names = ["a", "b", "c"]
    write_class_images(tmp_path / "imgs", names, 1, size=(120, 110))
    body = build_alexnet("tiny", include_top=False, input_shape=(None, None, 3), seed=0)
    x = keras.layers.GlobalAveragePooling2D()(body.output)
    model = keras.Model(body.inputs, keras.layers.Dense(3, activation="softmax")(x))
    spec = load_spec(str(tmp_path / "imgs"), val_fraction=0)
    crops = np.concatenate(
        [x.numpy() for x, _ in make_dataset(spec, training=False, image_size=99, batch_size=8)]
    )
    result = predict_images(model, names, [tmp_path / "imgs"])
    np.testing.assert_allclose(result.probs, model.predict(crops, verbose=0), atol=2e-6)
