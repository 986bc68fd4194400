"""Tests of skd_tune.data: the digits source, the npz source and the stratified split."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_digits

from skd_tune.data import DataError, Dataset, load_dataset, stratified_split
from skd_tune.spec import DataSpec

N_DIGITS = 1797


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataSpec(source="digits"), seed=0)


def _splits(ds: Dataset):
    return {"train": ds.train, "val": ds.val, "test": ds.test}


# ---------------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------------


def test_digits_split_sizes(digits: Dataset) -> None:
    sizes = {k: len(s) for k, s in _splits(digits).items()}
    assert sum(sizes.values()) == N_DIGITS
    # Default fractions 0.15 / 0.15 (val is taken from what the test split leaves).
    assert sizes["test"] == pytest.approx(0.15 * N_DIGITS, abs=2)
    assert sizes["val"] == pytest.approx(0.15 * N_DIGITS, abs=2)
    for split in _splits(digits).values():
        assert len(split.x) == len(split.subclass)


def test_digits_splits_partition_the_dataset(digits: Dataset) -> None:
    # Every (image, label) row of sklearn's digits appears in exactly one split, as often as in the
    # source: the splits are disjoint and together cover the dataset.
    bunch = load_digits()
    source = Counter((img.astype(np.uint8).tobytes(), int(t)) for img, t in zip(bunch.images, bunch.target))
    seen = Counter()
    for split in _splits(digits).values():
        seen.update((x[0].tobytes(), int(s)) for x, s in zip(split.x, split.subclass))
    assert seen == source


def test_stratified_split_indices_are_disjoint_and_cover() -> None:
    subclass = np.repeat(np.arange(4), [50, 30, 20, 100])
    tr, va, te = stratified_split(subclass, 0.2, 0.1, seed=3)
    assert len(set(tr) & set(va)) == 0
    assert len(set(tr) & set(te)) == 0
    assert len(set(va) & set(te)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(len(subclass)))
    assert len(te) == 20 and len(va) == 40
    for idx in (tr, va, te):
        assert np.all(np.diff(idx) > 0)  # sorted, no repeats


def test_digits_is_stratified(digits: Dataset) -> None:
    all_sub = np.concatenate([s.subclass for s in _splits(digits).values()])
    overall_sub = np.bincount(all_sub, minlength=10) / len(all_sub)
    overall_pos = float(np.mean(digits.subclass_to_class[all_sub]))
    for name, split in _splits(digits).items():
        counts = np.bincount(split.subclass, minlength=10)
        assert np.all(counts > 0), f"{name} lacks a subclass: {counts}"
        assert np.allclose(counts / len(split), overall_sub, atol=0.01), name
        pos = float(np.mean(digits.classes(name)))
        assert pos == pytest.approx(overall_pos, abs=0.01), name


def test_digits_is_deterministic_per_seed(digits: Dataset) -> None:
    again = load_dataset(DataSpec(source="digits"), seed=0)
    other = load_dataset(DataSpec(source="digits"), seed=1)
    for name in ("train", "val", "test"):
        assert np.array_equal(again.split(name).x, digits.split(name).x)
        assert np.array_equal(again.split(name).subclass, digits.split(name).subclass)
    assert again.mean == digits.mean and again.std == digits.std
    # Another seed draws other samples (same sizes, since the split is stratified).
    assert len(other.val) == len(digits.val)
    assert not np.array_equal(other.val.x, digits.val.x)
    assert not np.array_equal(other.test.x, digits.test.x)


def test_digits_arrays_and_scale(digits: Dataset) -> None:
    for split in _splits(digits).values():
        assert split.x.dtype == np.uint8
        assert split.x.shape == (len(split), 1, 8, 8)
        assert split.subclass.dtype == np.int64
        assert split.x.max() <= 16
    assert digits.scale == 1.0 / 16.0
    assert digits.train.x.max() * digits.scale == 1.0  # some pixel is saturated
    assert digits.input_shape == (1, 8, 8)
    # Normalisation: per-channel mean/std of the training split on the [0, 1] scale.
    xt = digits.train.x.astype(np.float64) * digits.scale
    assert digits.mean == pytest.approx([xt.mean()])
    assert digits.std == pytest.approx([xt.std()])


def test_digits_classes(digits: Dataset) -> None:
    assert digits.subclass_to_class.dtype == np.int64
    assert digits.subclass_to_class.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert digits.num_classes == 2
    assert digits.num_subclasses == 10
    assert digits.class_names == ["0-4", "5-9"]
    assert digits.subclass_names == [str(d) for d in range(10)]
    assert digits.positive_class == 1  # default: the last class
    assert np.array_equal(digits.classes("val"), (digits.val.subclass >= 5).astype(np.int64))


def test_digits_positive_class_by_name() -> None:
    ds = load_dataset(DataSpec(source="digits", positive_class="0-4"), seed=0)
    assert ds.positive_class == 0


def test_digits_unknown_positive_class_raises() -> None:
    with pytest.raises(DataError, match=r"data\.positive_class: 'cats' is not a class of digits; classes: 0-4, 5-9"):
        load_dataset(DataSpec(source="digits", positive_class="cats"), seed=0)


# ---------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------


def _valid_arrays(n_per_subclass: int = 20):
    rng = np.random.default_rng(0)
    subclass = np.repeat(np.arange(3), n_per_subclass)
    x = rng.integers(0, 256, size=(len(subclass), 2, 4, 4), dtype=np.uint8)
    return {"x": x, "subclass": subclass, "subclass_to_class": np.array([0, 0, 1])}


def _spec(path) -> DataSpec:
    return DataSpec(source="npz", root=str(path))


def test_npz_valid_file_loads(tmp_path) -> None:
    path = tmp_path / "mine.npz"
    arrays = _valid_arrays()
    np.savez(path, **arrays, class_names=np.array(["benign", "bad"]), subclass_names=np.array(["a", "b", "c"]))
    ds = load_dataset(_spec(path), seed=0)
    assert ds.name == "npz"
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60
    assert ds.input_shape == (2, 4, 4)
    assert ds.train.x.dtype == np.uint8
    assert ds.scale == 1.0 / 255.0
    assert ds.class_names == ["benign", "bad"]
    assert ds.subclass_names == ["a", "b", "c"]
    assert ds.subclass_to_class.tolist() == [0, 0, 1]
    assert ds.positive_class == 1
    assert len(ds.mean) == 2 and len(ds.std) == 2  # per channel
    assert ds.info == {"path": str(path)}
    # Rows keep their label: every loaded (x, subclass) row is a row of the file.
    rows = {(x.tobytes(), int(s)) for x, s in zip(arrays["x"], arrays["subclass"])}
    for split in (ds.train, ds.val, ds.test):
        assert all((x.tobytes(), int(s)) in rows for x, s in zip(split.x, split.subclass))


def test_npz_float_tabular_defaults(tmp_path) -> None:
    path = tmp_path / "table.npz"
    rng = np.random.default_rng(1)
    subclass = np.repeat(np.arange(4), 15)
    np.savez(path, x=rng.random((60, 5)), subclass=subclass, subclass_to_class=np.array([0, 1, 1, 2]))
    ds = load_dataset(_spec(path), seed=0)
    assert ds.train.x.dtype == np.float32
    assert ds.input_shape == (5,)
    assert ds.scale == 1.0
    assert ds.class_names == ["0", "1", "2"]
    assert ds.subclass_names == ["0", "1", "2", "3"]
    assert len(ds.mean) == 5  # per feature


def test_npz_missing_arrays_raise(tmp_path) -> None:
    path = tmp_path / "partial.npz"
    arrays = _valid_arrays()
    np.savez(path, x=arrays["x"])
    with pytest.raises(DataError, match=re.escape(f"{path}: missing array(s) subclass, subclass_to_class")):
        load_dataset(_spec(path), seed=0)


def test_npz_mismatched_lengths_raise(tmp_path) -> None:
    path = tmp_path / "short.npz"
    arrays = _valid_arrays()
    arrays["x"] = arrays["x"][:-5]
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=re.escape(f"{path}: x has 55 rows but subclass has 60")):
        load_dataset(_spec(path), seed=0)


@pytest.mark.parametrize("bad_label", [3, -1])
def test_npz_out_of_range_labels_raise(tmp_path, bad_label: int) -> None:
    path = tmp_path / "labels.npz"
    arrays = _valid_arrays()
    arrays["subclass"] = arrays["subclass"].copy()
    arrays["subclass"][7] = bad_label
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=re.escape(f"{path}: subclass labels must lie in [0, 2]")):
        load_dataset(_spec(path), seed=0)


def test_npz_unreadable_file_raises(tmp_path) -> None:
    path = tmp_path / "not_an.npz"
    path.write_text("hello, I am not a numpy archive\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: cannot read as an .npz file")):
        load_dataset(_spec(path), seed=0)


def test_invented_output_layout_keeps_the_known_subclasses():
    from skd_tune.data import load_dataset
    from skd_tune.spec import DataSpec

    known = load_dataset(DataSpec(source="digits"), 0)
    data = load_dataset(DataSpec(source="digits", subclasses="invented", subclasses_per_class=3), 0)
    assert data.invented and data.num_outputs == 6
    assert data.output_names == ["0-4/1", "0-4/2", "0-4/3", "5-9/1", "5-9/2", "5-9/3"]
    assert data.output_to_class.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.output_to_group.tolist() == [0, 0, 0, 1, 1, 1]
    # the teacher's targets are the classes; the known digits stay in the splits, same split as before
    np.testing.assert_array_equal(data.targets("train"), known.classes("train"))
    np.testing.assert_array_equal(data.train.subclass, known.train.subclass)
    np.testing.assert_array_equal(data.classes("test"), known.classes("test"))
    assert known.num_outputs == 10 and known.output_names == known.subclass_names
    np.testing.assert_array_equal(known.targets("val"), known.val.subclass)


def test_known_subclasses_with_several_outputs_each():
    from skd_tune.data import load_dataset
    from skd_tune.spec import DataSpec

    data = load_dataset(DataSpec(source="digits", outputs_per_subclass=2), 0)
    assert not data.invented and data.num_outputs == 20
    assert data.output_names[:4] == ["0/1", "0/2", "1/1", "1/2"]
    assert data.output_to_class.tolist() == [0] * 10 + [1] * 10
    np.testing.assert_array_equal(data.targets("train"), data.train.subclass)


def test_train_rows_are_a_seeded_stratified_share_of_the_training_split():
    from skd_tune.data import train_rows

    subclass = np.repeat(np.arange(10), 40)
    rows = train_rows(subclass, 0.25, seed=3)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(subclass[rows], minlength=10).tolist() == [10] * 10  # every subclass kept in proportion
    np.testing.assert_array_equal(rows, train_rows(subclass, 0.25, seed=3))
    assert not np.array_equal(rows, train_rows(subclass, 0.25, seed=4))
    np.testing.assert_array_equal(train_rows(subclass, 1.0, seed=3), np.arange(400))
    with pytest.raises(DataError, match=r"teacher\.train_fraction: 0\.01 of the 400 training samples keeps too few"):
        train_rows(subclass, 0.01, seed=0, field="teacher.train_fraction")
