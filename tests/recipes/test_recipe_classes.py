"""A recipe's classes against the user's folder names (field report #17, item 3).

Kaggle copies of Kermany's chest X-rays use lowercase folders; a CT set may call its
classes bleed/no_bleed. Oracles: the folder each file was written to, and the order the
recipe file states.
"""

from __future__ import annotations

import pytest
from conftest import write_class_images

from alexkit.data import DatasetSpec, class_key, load_spec, relabel
from alexkit.errors import DataError, RecipeError, UsageError
from alexkit.recipes import apply_class_match, load_recipe, match_classes, recipe_from_dict


@pytest.mark.parametrize(
    ("a", "b"),
    [("NORMAL", "normal"), ("no_tumor", "notumor"), ("No Tumor", "no-tumor"), ("CNV", "cnv")],
)
def test_class_key_ignores_case_and_separators(a, b):
    assert class_key(a) == class_key(b)


@pytest.mark.parametrize(("a", "b"), [("bleed", "hemorrhage"), ("tumor", "tumour"), ("a1", "a")])
def test_class_key_is_not_looser(a, b):
    assert class_key(a) != class_key(b)


def test_lowercase_kermany_folders_take_the_recipes_order_in_their_own_spelling():
    match = match_classes(load_recipe("xray"), ["pneumonia", "normal"])
    assert match.class_names == ("normal", "pneumonia") and match.positive_class == "pneumonia"
    assert match.matched and match.renamed == {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
    assert "recipe 'xray'" in match.note
    # Equal names: nothing renamed, nothing to say.
    same = match_classes(load_recipe("xray"), ["NORMAL", "PNEUMONIA"])
    assert same.class_names == ("NORMAL", "PNEUMONIA") and same.note == "" and not same.renamed


def test_recipe_order_is_kept_when_it_is_not_alphabetical():
    # ct.toml: classes = ["normal", "hemorrhage"] so hemorrhage is the positive class.
    match = match_classes(load_recipe("ct"), ["Hemorrhage", "Normal"])
    assert match.class_names == ("Normal", "Hemorrhage") and match.positive_index == 1


def test_binary_recipe_on_other_names_asks_for_the_positive_class_in_one_line():
    with pytest.raises(UsageError) as info:
        match_classes(load_recipe("ct"), ["no_bleed", "bleed"])
    message = str(info.value)
    assert "recipe 'ct'" in message and "model" not in message
    assert "--positive-class" in message and "'bleed', 'no_bleed'" in message
    assert "\n" not in message
    for positive in ("bleed", "BLEED", "Bleed"):
        match = match_classes(load_recipe("ct"), ["no_bleed", "bleed"], positive)
        assert match.class_names == ("no_bleed", "bleed") and match.positive_class == "bleed"
        assert not match.matched and "its settings apply" in match.note
    flipped = match_classes(load_recipe("ct"), ["no_bleed", "bleed"], "no-bleed")
    assert flipped.class_names == ("bleed", "no_bleed")


def test_positive_class_errors():
    with pytest.raises(UsageError, match="not a class of the data"):
        match_classes(load_recipe("ct"), ["no_bleed", "bleed"], "tumour")
    with pytest.raises(UsageError, match="applies to two classes; the data has 3"):
        match_classes(load_recipe("mri"), ["a", "b", "c"], "a")


def test_positive_class_overrides_a_matched_recipe_and_works_without_recipe_classes():
    match = match_classes(load_recipe("xray"), ["normal", "pneumonia"], "normal")
    assert match.class_names == ("pneumonia", "normal")
    plain = recipe_from_dict({"name": "plain"})  # no classes: the data's sorted order
    assert match_classes(plain, ["dog", "cat"]).class_names == ("cat", "dog")
    assert match_classes(plain, ["cat", "dog"], "cat").class_names == ("dog", "cat")


def test_multiclass_recipe_matches_release_spellings_and_subsets():
    mri = load_recipe("mri")  # glioma, meningioma, notumor, pituitary
    match = match_classes(mri, ["Glioma", "Meningioma", "No_Tumor", "Pituitary"])
    assert match.class_names == ("Glioma", "Meningioma", "No_Tumor", "Pituitary")
    assert match.positive_index is None and match.matched
    # A subset keeps the recipe's four outputs (absent ones under the recipe's name).
    part = match_classes(mri, ["pituitary", "GLIOMA"])
    assert part.class_names == ("GLIOMA", "meningioma", "notumor", "pituitary")
    # A class the recipe lacks: the data's own classes, no positive needed (not binary).
    other = match_classes(mri, ["glioma", "healthy", "pituitary"])
    assert other.class_names == ("glioma", "healthy", "pituitary") and not other.matched


def test_classes_that_differ_only_in_case_are_ambiguous():
    with pytest.raises(DataError, match="differ only in case"):
        match_classes(load_recipe("xray"), ["normal", "NORMAL", "pneumonia"])


def test_apply_class_match_renames_named_class_weights():
    rec = recipe_from_dict(
        {"name": "w", "classes": ["NORMAL", "PNEUMONIA"], "class_weights": {"PNEUMONIA": 3.0}}
    )
    resolved = apply_class_match(rec, match_classes(rec, ["normal", "pneumonia"]))
    assert resolved.classes == ("normal", "pneumonia")
    assert resolved.class_weights == {"pneumonia": 3.0}
    mismatch = match_classes(rec, ["bleed", "no_bleed"], "bleed")
    with pytest.raises(RecipeError, match="weights classes 'PNEUMONIA' by name"):
        apply_class_match(rec, mismatch)
    balanced = apply_class_match(load_recipe("ct"), mismatch)
    assert balanced.classes == ("no_bleed", "bleed") and balanced.class_weights == "balanced"


def test_load_spec_with_recipe_classes_labels_lowercase_folders_by_their_folder(tmp_path):
    root = tmp_path / "chest_xray"
    paths = write_class_images(root, ["normal", "pneumonia"], 3)
    rec = load_recipe("xray")
    # Without a match first, the recipe's own spelling still labels the folders correctly.
    spec = load_spec(root, class_names=rec.classes, val_fraction=0.0)
    assert spec.class_names == ("NORMAL", "PNEUMONIA")
    truth = {str(p): ["normal", "pneumonia"].index(p.parent.name) for p in paths}
    assert {i: lab for i, lab in zip(spec.items, spec.labels, strict=True)} == truth
    # The flow the trainer uses: find the data's classes, match, load in that order.
    found = load_spec(root, val_fraction=0.0).class_names
    match = match_classes(rec, found)
    spec = load_spec(
        root, class_names=match.class_names, val_fraction=0.2, class_names_from="recipe 'xray'"
    )
    assert spec.class_names == ("normal", "pneumonia")
    assert all(spec.labels[spec.items.index(i)] == t for i, t in truth.items())


def test_unknown_class_message_names_who_knows_the_classes(tmp_path):
    root = tmp_path / "ct"
    write_class_images(root, ["bleed", "no_bleed"], 2)
    with pytest.raises(DataError) as info:
        load_spec(
            root,
            class_names=("normal", "hemorrhage"),
            class_names_from="recipe 'ct'",
            val_fraction=0.0,
        )
    assert "unknown to recipe 'ct'" in str(info.value) and "model" not in str(info.value)
    with pytest.raises(DataError, match="unknown to the model"):
        load_spec(root, class_names=("normal", "hemorrhage"), val_fraction=0.0)


def test_relabel_refuses_two_folders_landing_on_one_class():
    spec = DatasetSpec(["a", "b"], [0, 1], ["Normal", "normal_"], root="r")
    with pytest.raises(DataError, match="differ only in case"):
        relabel(spec, ["NORMAL", "PNEUMONIA"])
    # Exact names win over loose ones: both known classes exist, nothing is merged.
    both = relabel(spec, ["normal_", "Normal"])
    assert both.labels == (1, 0)
