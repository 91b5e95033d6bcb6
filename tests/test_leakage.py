"""Leakage guard: byte-identical copies and shared groups are found, nothing else is."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil

import pytest
from conftest import write_class_images
from PIL import Image

from alexkit.data import DatasetSpec
from alexkit.errors import CheckpointError
from alexkit.leakage import (
    HASHES_FILE,
    check_leakage,
    hash_items,
    leakage_message,
    load_hashes,
    record_hashes,
    record_run_hashes,
    save_hashes,
)


def _spec(tmp_path):
    paths = write_class_images(tmp_path / "data", ["a", "b"], 4, size=(24, 20))
    items = [str(p) for p in paths]
    splits = ["train", "train", "train", "val", "train", "train", "train", "val"]
    groups = ["p1", "p1", "p2", "p3", "p4", "p4", "p5", "p6"]
    return DatasetSpec(items, [0] * 4 + [1] * 4, ["a", "b"], splits, groups, str(tmp_path))


def test_hashes_are_sha256_of_bytes_and_members(tmp_path):
    spec = _spec(tmp_path)
    got = hash_items([spec.items[0], f"{spec.items[0]}#frame=3", str(tmp_path / "gone.png")])
    digest = hashlib.sha256(open(spec.items[0], "rb").read()).hexdigest()
    assert got[0] == digest
    assert got[1] == hashlib.sha256(f"{digest}#frame=3".encode()).hexdigest()
    assert got[2] is None


def test_record_save_load_and_check(tmp_path):
    spec = _spec(tmp_path)
    doc = record_hashes(spec)
    assert doc["splits"]["train"]["items"] == 6 and doc["splits"]["val"]["items"] == 2
    # Groups are stored as HMAC-SHA256 keyed by the document's random nonce, never in clear.
    key = bytes.fromhex(doc["group_key"])
    assert len(key) == 16
    keyed = sorted(
        hmac.new(key, g.encode(), hashlib.sha256).hexdigest() for g in "p1 p2 p4 p5".split()
    )
    assert doc["splits"]["train"]["groups"] == keyed
    run = tmp_path / "run"
    run.mkdir()
    assert save_hashes(run, doc).name == HASHES_FILE
    recorded = load_hashes(run)
    assert recorded == json.loads(json.dumps(doc))
    for group in ("p1", "p2", "p3"):
        assert f'"{group}"' not in (run / HASHES_FILE).read_text()

    # Evaluation set: a renamed copy of a training image, a copy of a val image, a
    # re-encoded (JPEG) training image, a fresh image of an unseen patient, and a
    # fresh image of training patient p2.
    ev = tmp_path / "eval"
    ev.mkdir()
    shutil.copy(spec.items[0], ev / "renamed.png")
    shutil.copy(spec.items[3], ev / "val_copy.png")
    Image.open(spec.items[1]).save(ev / "reencoded.jpg", quality=95)
    fresh = write_class_images(tmp_path / "fresh", ["a"], 2, size=(24, 20), seed=99)
    items = [str(ev / "renamed.png"), str(ev / "val_copy.png"), str(ev / "reencoded.jpg")]
    items += [str(p) for p in fresh]
    groups = ["q1", "q2", "q3", "new", "p2"]
    leak = check_leakage(items, groups, recorded)
    assert leak["checked"] == 5 and leak["unreadable"] == 0
    assert leak["duplicates"] == {"train": 1, "val": 1} and leak["duplicate_items"] == 2
    assert leak["shared_groups"] == {"train": 1, "val": 0} and leak["shared_group_items"] == 1
    assert leak["examples"] == items[:2] and leak["leaked"]
    message = leakage_message(leak)
    assert "2 of 5 evaluation items are byte-identical" in message and "1 in val" in message

    clean = check_leakage([str(p) for p in fresh], None, recorded)
    assert not clean["leaked"] and clean["duplicate_items"] == 0 and leakage_message(clean) == ""


def test_group_hashes_differ_per_run_and_old_clear_documents_still_work(tmp_path):
    spec = _spec(tmp_path)
    first, second = record_hashes(spec), record_hashes(spec)
    assert first["group_key"] != second["group_key"]
    assert not set(first["splits"]["train"]["groups"]) & set(second["splits"]["train"]["groups"])
    # Item hashes are content hashes: the same in both runs.
    assert first["splits"]["train"]["hashes"] == second["splits"]["train"]["hashes"]
    fresh = [str(p) for p in write_class_images(tmp_path / "f", ["a"], 2, seed=7)]
    for doc in (first, second):
        leak = check_leakage(fresh, ["p5", "zz"], doc)
        assert leak["shared_groups"] == {"train": 1, "val": 0} and leak["shared_group_items"] == 1
    # A format-1 file (groups in clear, no key) is still read and checked.
    old = {
        "format": "alexkit-data-hashes/1",
        "splits": {"train": {"hashes": [], "groups": ["p5"]}},
    }
    (tmp_path / HASHES_FILE).write_text(json.dumps(old))
    leak = check_leakage(fresh, ["p5", "zz"], load_hashes(tmp_path))
    assert leak["shared_group_items"] == 1
    # A format-2 file without its key is refused, not silently unmatched.
    broken = dict(first)
    del broken["group_key"]
    (tmp_path / HASHES_FILE).write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="group_key"):
        load_hashes(tmp_path)


def test_load_hashes_refuses_other_files(tmp_path):
    assert load_hashes(tmp_path) is None
    (tmp_path / HASHES_FILE).write_text('{"format": "something else"}')
    with pytest.raises(CheckpointError, match="data-hashes"):
        load_hashes(tmp_path)


def test_tfrecord_specs_are_not_hashed(tmp_path):
    spec = DatasetSpec(["train-00000-of-00001"], [-1], ["a"], root="x", layout="tfrecord")
    doc = record_hashes(spec)
    assert doc["splits"] == {} and "TFRecord" in doc["skipped"]


def test_record_run_hashes_labels_by_spec_not_split(tmp_path):
    spec = _spec(tmp_path)
    train, val = spec.subset("train"), spec.subset("val")
    unsplit_val = DatasetSpec(val.items, val.labels, val.class_names, groups=val.groups)  # --val
    doc = record_run_hashes(train, unsplit_val)
    want = record_hashes(spec, group_key=doc["group_key"])
    assert doc["splits"] == want["splits"]
    assert record_run_hashes(train)["splits"].keys() == {"train"}
