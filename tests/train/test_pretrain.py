"""``pretrain`` on a tiny learnable ImageNet-like set, as folders and as TFRecord shards.

5 wnids x 16 JPEGs (class-dependent colour and bar position). Two epochs of the paper's
optimiser (PaperSGD) from He init lower the validation loss and lift top-1 well above
chance (0.2). The paper's N(0, 0.01) init needs far longer than a test can afford, so the
test uses ``init="he"``.

These tests guard pretrain's pipeline (data, loop, checkpoints, resume, registration), so
they train the ``tiny`` variant (the 2012 layout at 1/8 width, 99x99) through the same code:
its 0.2M parameters learn the set in 2 x 48 steps of 8 images at LR 1e-3 (val top-1 0.8-1.0
over seeds 0-2) in seconds. One cheap run keeps the default: a single step of the full
227x227 ``original`` network (and the precision ``auto`` picks for it).
"""

from __future__ import annotations

import json

import pytest

from alexkit.errors import CheckpointError

WNIDS = [f"n0{i:07d}" for i in range(5)]
# 48 steps of 8 images per epoch (about six passes over the 65 training images).
SETTINGS = dict(
    variant="tiny", epochs=2, batch_size=8, lr=1e-3, init="he", jit=False, seed=0,
    steps_per_epoch=48,
)  # fmt: skip


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """``train/<wnid>/*.JPEG``: 5 classes x 16 images (20% carved out for validation)."""
    from conftest import write_class_images

    root = tmp_path_factory.mktemp("imagenet")
    write_class_images(root / "train", WNIDS, 16, size=(96, 80), fmt="JPEG")
    return root


@pytest.mark.slow
def test_pretrain_folders_learns_registers_and_falls_back_from_a_bad_checkpoint(
    tmp_path, imagenet_like
):
    from alexkit.train import pretrain
    from alexkit.weights import resolve_weights

    out = tmp_path / "run"
    result = pretrain(imagenet_like, out=out, name="tiny-imagenet", checkpoint_every=40, **SETTINGS)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["val_loss"] < history[0]["val_loss"]
    assert result.best_value >= 0.6  # top-1; chance is 0.2
    assert history[-1]["val_top5"] == 1.0  # 5 classes: top-5 is trivially every class
    assert result.monitor == "val_accuracy"
    for name in ("config.json", "history.csv", "model.keras", "last.keras", "metrics.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == WNIDS
    assert config["resolved"]["schedule"] == "plateau" and config["resolved"]["lr"] == 1e-3
    assert config["preprocessing"]["mean"] == pytest.approx([123.68, 116.779, 103.939])
    assert config["variant"] == "tiny" and config["preprocessing"]["image_size"] == 99

    # The final weights are what `finetune --weights imagenet` finds.
    assert result.weights_name == "tiny-imagenet"
    assert resolve_weights("imagenet", "tiny").parent.name == "tiny-imagenet"

    # Checkpoints at steps 40, 48, 80, 96 (every 40 steps and every epoch); the last two
    # are kept. Truncate the newest (end of epoch 2): resuming falls back to step 80 (epoch
    # 2, step 32), redoes the last 16 steps and ends with epochs 1 and 2, each once.
    checkpoints = sorted((out / "checkpoints").glob("ckpt-*"))
    assert [p.name for p in checkpoints] == ["ckpt-000000080", "ckpt-000000096"]
    newest = checkpoints[-1] / "optimizer.npz"
    newest.write_bytes(newest.read_bytes()[:1000])
    events = []
    resumed = pretrain(imagenet_like, out=out, resume=True, register=False, progress=events.append)
    resume_event = next(e for e in events if e["event"] == "resume")
    assert resume_event["global_step"] == 80 and resume_event["step_in_epoch"] == 32
    assert sum(e["event"] == "batch" for e in events) == 16
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert [r["images"] for r in resumed.history] == [384, 384]
    lines = (out / "history.csv").read_text().splitlines()
    assert len(lines) == 3  # header + 2 epochs, no duplicates
    # Same data and settings, another schedule: refused.
    with pytest.raises(CheckpointError, match="recipe/settings"):
        pretrain(imagenet_like, out=out, resume=True, schedule="step")


@pytest.mark.slow
def test_pretrain_reads_tfrecord_shards(tmp_path, imagenet_like):
    from alexkit.data import load_spec, pack_tfrecords
    from alexkit.train import pretrain

    shards = tmp_path / "shards"
    pack_tfrecords(load_spec(imagenet_like / "train", seed=0), shards, shards=2, resize=96)
    assert sorted(p.name for p in shards.glob("validation-*"))  # the val split was packed
    result = pretrain(shards, out=tmp_path / "run", register=False, **SETTINGS)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["format"] == "tfrecord" and config["class_names"] == WNIDS
    assert config["data"]["num_train"] == 65
    history = result.history
    assert history[1]["val_loss"] < history[0]["val_loss"]
    assert result.best_value >= 0.6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "expected", "variant"),
    [
        ("avx512f avx512_bf16", "mixed_bfloat16", "tiny"),
        ("avx2 fma", "float32", "tiny"),
        # The default network, full size: one step of the 227x227 `original` AlexNet in
        # bf16 (~8 CPU-s; the demo pretrains it so on CPUs with bf16): `pytest -m heavy`.
        pytest.param("avx512f avx512_bf16", "mixed_bfloat16", None, marks=pytest.mark.heavy),
    ],
)
def test_pretrain_precision_auto_is_chosen_once_and_saved(
    tmp_path, imagenet_like, monkeypatch, flags, expected, variant
):
    import zipfile

    from alexkit import precision
    from alexkit.train import pretrain
    from alexkit.train.common import keep_checkpoints
    from alexkit.variants import variant_of_config

    cpu = precision.CpuInfo("Test CPU", frozenset(flags.split()))
    monkeypatch.setattr(precision, "read_cpu_info", lambda *a, **k: cpu)
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda *a, **k: [])
    events = []
    settings = dict(SETTINGS, epochs=1, steps_per_epoch=1, precision="auto", register=False)
    settings["variant"] = variant
    # No checkpoints: the full-size run would otherwise write ~0.7 GB of them to temp.
    with keep_checkpoints(0):
        pretrain(imagenet_like, out=tmp_path / "run", progress=events.append, **settings)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["precision"] == expected  # a resume elsewhere keeps this one
    chosen = [e for e in events if e["event"] == "precision"]
    assert chosen and chosen[0]["policy"] == expected and "Test CPU" in chosen[0]["reason"]
    # Without --variant pretrain trains the 2012 network at 227x227.
    built = variant or "original"
    assert config["variant"] == built
    assert config["image_size"] == {"original": 227, "tiny": 99}[built]
    with zipfile.ZipFile(tmp_path / "run" / "model.keras") as saved:
        model_config = json.loads(saved.read("config.json"))
    assert variant_of_config(model_config) == built
    assert model_config["config"]["layers"][0]["config"]["batch_shape"][1:] == [
        config["image_size"], config["image_size"], 3
    ]  # fmt: skip


def test_pretrain_refuses_an_unknown_precision(tmp_path):
    from alexkit.errors import UsageError
    from alexkit.train import pretrain

    with pytest.raises(UsageError, match="unknown precision 'fp8'"):
        pretrain(tmp_path, out=tmp_path / "run", precision="fp8")
