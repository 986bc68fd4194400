"""MHIST: the synthetic generator, the loader (validation, subclasses, splits, cache), the CLI and spec."""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from skd_tune.cli import main
from skd_tune.data import SOURCES, DataError, Dataset, load_dataset
from skd_tune.data import mhist as mhist_module
from skd_tune.data import synth as synth_module
from skd_tune.data.mhist import IMAGENET_MEAN, IMAGENET_STD, read_annotations
from skd_tune.data.mhist_annotations import subclasses_for_votes, vote_group_name
from skd_tune.data.summary import data_summary
from skd_tune.data.synth import COLUMNS, mhist_names, write_synthetic_mhist
from skd_tune.metrics import label_bits
from skd_tune.spec import DataSpec, Spec

NAME, LABEL, VOTES, PARTITION = COLUMNS
AGREEMENT_NAMES = ["HP-7/7", "HP-6/7", "HP-5/7", "HP-4/7", "SSA-7/7", "SSA-6/7", "SSA-5/7", "SSA-4/7"]
UNANIMOUS_NAMES = ["HP-unanimous", "HP-split", "SSA-unanimous", "SSA-split"]


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "annotations.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _agreement(row: dict[str, str]) -> int:
    votes = int(row[VOTES])
    return votes if row[LABEL] == "SSA" else 7 - votes


def _pixels(root: Path, name: str) -> np.ndarray:
    with Image.open(root / "images" / name) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def _spec(root: Path, **kw) -> DataSpec:
    return DataSpec(source="mhist", root=str(root), **kw)


@pytest.fixture(scope="module")
def synth300(tmp_path_factory) -> Path:
    """300 images at 32 px, shared by the read-only tests (its cache lands in its .skd_cache/)."""
    return write_synthetic_mhist(tmp_path_factory.mktemp("mhist300"), n=300, seed=0, size=32)


@pytest.fixture(scope="module")
def ds300(synth300) -> Dataset:
    return load_dataset(_spec(synth300, image_size=32, val_fraction=0.25), seed=0)


@pytest.fixture
def small(tmp_path) -> Path:
    """A fresh 24-image dataset at 16 px that a test may damage."""
    return write_synthetic_mhist(tmp_path / "mhist", n=24, seed=1, size=16)


# ---------------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------------


def test_synth_writes_mhist_layout(tmp_path) -> None:
    root = write_synthetic_mhist(tmp_path / "d", n=60, seed=0, size=32)
    assert root == tmp_path / "d"
    assert sorted(p.name for p in root.iterdir()) == ["annotations.csv", "images"]
    header = (root / "annotations.csv").read_text().splitlines()[0]
    assert header == "Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition"
    rows = _rows(root)
    assert [r[NAME] for r in rows] == mhist_names(60)
    assert rows[0][NAME] == "MHIST_aaa.png" and rows[1][NAME] == "MHIST_aab.png" and rows[26][NAME] == "MHIST_aba.png"
    assert sorted(p.name for p in (root / "images").iterdir()) == sorted(r[NAME] for r in rows)
    for r in rows:
        with Image.open(root / "images" / r[NAME]) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32))
        assert r[LABEL] in ("HP", "SSA")
        assert r[PARTITION] in ("train", "test")
        assert 0 <= int(r[VOTES]) <= 7
    assert {r[LABEL] for r in rows} == {"HP", "SSA"}
    assert {r[PARTITION] for r in rows} == {"train", "test"}


def test_synth_counts_follow_mhist(tmp_path) -> None:
    rows = _rows(write_synthetic_mhist(tmp_path / "d", n=600, seed=3, size=8))
    for r in rows:  # the majority label agrees with the votes
        assert (r[LABEL] == "SSA") == (int(r[VOTES]) >= 4), r
    for part in ("train", "test"):  # per partition, the votes in MHIST's proportions
        votes = np.bincount([int(r[VOTES]) for r in rows if r[PARTITION] == part], minlength=8)
        table = np.array(synth_module.VOTE_COUNTS[part])
        assert np.abs(votes - table * votes.sum() / table.sum()).max() < 1.0
    ssa = {p: np.mean([r[LABEL] == "SSA" for r in rows if r[PARTITION] == p]) for p in ("train", "test")}
    assert ssa["train"] == pytest.approx(0.290, abs=0.01) and ssa["test"] == pytest.approx(0.368, abs=0.01)


def test_synth_full_size_counts_are_mhists() -> None:
    ann = synth_module._annotations(3152, np.random.default_rng(0))  # the labels only, no images
    for part, flag in (("train", 0), ("test", 1)):
        votes = np.bincount(ann["votes"][ann["test"] == flag], minlength=8)
        assert votes.tolist() == list(synth_module.VOTE_COUNTS[part])
    assert int((ann["label"] == 0).sum()) == 2162 and int((ann["label"] == 1).sum()) == 990
    assert int(ann["test"].sum()) == 977


@pytest.mark.parametrize("n", [4, 5, 7, 24, 61])
def test_synth_tiny_sets_hold_both_classes_in_both_partitions(n) -> None:
    ann = synth_module._annotations(n, np.random.default_rng(0))
    assert len(ann["votes"]) == n
    for flag in (0, 1):
        assert set(ann["label"][ann["test"] == flag].tolist()) == {0, 1}


def test_synth_is_deterministic(tmp_path) -> None:
    a = write_synthetic_mhist(tmp_path / "a", n=40, seed=7, size=24)
    b = write_synthetic_mhist(tmp_path / "b", n=40, seed=7, size=24)
    c = write_synthetic_mhist(tmp_path / "c", n=40, seed=8, size=24)
    assert (a / "annotations.csv").read_bytes() == (b / "annotations.csv").read_bytes()
    for r in _rows(a):
        assert np.array_equal(_pixels(a, r[NAME]), _pixels(b, r[NAME]))
    assert (a / "annotations.csv").read_bytes() != (c / "annotations.csv").read_bytes()
    assert not np.array_equal(_pixels(a, "MHIST_aaa.png"), _pixels(c, "MHIST_aaa.png"))


def test_synth_output_does_not_depend_on_workers(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(synth_module, "_PARALLEL_MIN_PIXELS", 0)  # use worker processes even for a tiny set

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()

    one = write_synthetic_mhist(tmp_path / "one", n=40, seed=2, size=16, workers=1)
    two = write_synthetic_mhist(tmp_path / "two", n=40, seed=2, size=16, workers=2)
    assert digest(one) == digest(two)


def test_synth_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(DataError, match=r"n must be >= 1, got 0"):
        write_synthetic_mhist(tmp_path, n=0)
    with pytest.raises(DataError, match=r"size must be >= 8 pixels, got 4"):
        write_synthetic_mhist(tmp_path, n=5, size=4)


# ---------------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------------


def test_mhist_is_registered() -> None:
    source = SOURCES["mhist"]
    assert source.needs_root
    assert source.subclass_schemes == ("agreement", "unanimous")
    assert source.description


def test_load_shapes_and_metadata(ds300: Dataset, synth300: Path) -> None:
    rows = _rows(synth300)
    assert ds300.name == "mhist"
    for split in (ds300.train, ds300.val, ds300.test):
        assert split.x.dtype == np.uint8 and split.x.shape[1:] == (3, 32, 32)
        assert split.subclass.dtype == np.int64
        assert len(split.x) == len(split.subclass) == len(split.difficulty)
    assert len(ds300.train) + len(ds300.val) + len(ds300.test) == 300
    assert ds300.input_shape == (3, 32, 32)
    assert ds300.scale == 1.0 / 255.0
    assert ds300.mean == IMAGENET_MEAN == [0.485, 0.456, 0.406]
    assert ds300.std == IMAGENET_STD == [0.229, 0.224, 0.225]
    assert ds300.class_names == ["HP", "SSA"]
    assert ds300.positive_class == 1
    info = ds300.info
    assert sum(info["images_per_subclass"].values()) == 300
    expected = {name: 0 for name in AGREEMENT_NAMES}
    for r in rows:
        expected[f"{r[LABEL]}-{_agreement(r)}/7"] += 1
    assert info["images_per_subclass"] == expected
    assert Path(info["cache"]).is_file() and Path(info["cache"]).parent == synth300 / ".skd_cache"


def test_positive_class_by_name(synth300: Path) -> None:
    assert load_dataset(_spec(synth300, image_size=32, positive_class="HP"), seed=0).positive_class == 0
    with pytest.raises(DataError, match=r"data\.positive_class: 'NP' is not a class of mhist; classes: HP, SSA"):
        load_dataset(_spec(synth300, image_size=32, positive_class="NP"), seed=0)


def test_agreement_subclasses_and_difficulty(ds300: Dataset, synth300: Path) -> None:
    assert ds300.subclass_names == AGREEMENT_NAMES
    assert ds300.subclass_to_class.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # Every sample's subclass and difficulty agree with its row of the CSV (images are unique).
    by_pixels = {_pixels(synth300, r[NAME]).tobytes(): r for r in _rows(synth300)}
    assert len(by_pixels) == 300
    for split in (ds300.train, ds300.val, ds300.test):
        assert split.difficulty.dtype == np.float32
        for x, s, d in zip(split.x, split.subclass, split.difficulty):
            row = by_pixels[x.tobytes()]
            agreement = _agreement(row)
            assert ds300.subclass_names[s] == f"{row[LABEL]}-{agreement}/7"
            assert d == np.float32((7 - agreement) / 3.0)
    all_d = np.concatenate([s.difficulty for s in (ds300.train, ds300.val, ds300.test)])
    assert set(np.unique(all_d).tolist()) == {0.0, np.float32(1 / 3), np.float32(2 / 3), 1.0}


def test_unanimous_subclasses(synth300: Path, ds300: Dataset) -> None:
    ds = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25, subclasses="unanimous"), seed=0)
    assert ds.subclass_names == UNANIMOUS_NAMES
    assert ds.subclass_to_class.tolist() == [0, 0, 1, 1]
    assert ds.info["subclass_scheme"] == "unanimous"
    for name in ("train", "val", "test"):
        split = ds.split(name)
        unanimous = split.difficulty == 0
        assert np.array_equal(split.subclass, ds.classes(name) * 2 + ~unanimous)
    per = ds300.info["images_per_subclass"]
    assert ds.info["images_per_subclass"] == {
        "HP-unanimous": per["HP-7/7"],
        "HP-split": per["HP-6/7"] + per["HP-5/7"] + per["HP-4/7"],
        "SSA-unanimous": per["SSA-7/7"],
        "SSA-split": per["SSA-6/7"] + per["SSA-5/7"] + per["SSA-4/7"],
    }
    assert np.array_equal(ds.test.x, ds300.test.x) and np.array_equal(ds.test.difficulty, ds300.test.difficulty)


def test_subclasses_without_samples_are_kept(tmp_path) -> None:
    root = write_synthetic_mhist(tmp_path / "d", n=24, seed=0, size=16)
    text = (root / "annotations.csv").read_text()
    lines = text.splitlines()
    # Make every SSA row unanimous (7 votes): SSA-6/7, SSA-5/7 and SSA-4/7 become empty.
    out = [lines[0]] + [re.sub(r",SSA,\d,", ",SSA,7,", line) for line in lines[1:]]
    (root / "annotations.csv").write_text("\n".join(out) + "\n")
    ds = load_dataset(_spec(root, image_size=16), seed=0)
    assert ds.subclass_names == AGREEMENT_NAMES
    assert [ds.info["images_per_subclass"][k] for k in ("SSA-6/7", "SSA-5/7", "SSA-4/7")] == [0, 0, 0]


def test_test_split_is_the_csv_test_partition(ds300: Dataset, synth300: Path) -> None:
    rows = _rows(synth300)
    test_names = [r[NAME] for r in rows if r[PARTITION] == "test"]
    assert len(ds300.test) == len(test_names)
    for x, name in zip(ds300.test.x, test_names):  # in CSV order
        assert np.array_equal(x, _pixels(synth300, name))
    train_pixels = sorted(_pixels(synth300, r[NAME]).tobytes() for r in rows if r[PARTITION] == "train")
    assert sorted(x.tobytes() for x in np.concatenate([ds300.train.x, ds300.val.x])) == train_pixels


def test_val_is_a_stratified_part_of_train(ds300: Dataset, synth300: Path) -> None:
    train = {x.tobytes() for x in ds300.train.x}
    val = {x.tobytes() for x in ds300.val.x}
    assert not train & val
    n_train_partition = len(ds300.train) + len(ds300.val)
    assert len(ds300.val) == pytest.approx(0.25 * n_train_partition, abs=1)
    tr_counts = np.bincount(ds300.train.subclass, minlength=8)
    va_counts = np.bincount(ds300.val.subclass, minlength=8)
    for t, v in zip(tr_counts, va_counts):  # each subclass split 75/25 (to rounding)
        assert v == pytest.approx(0.25 * (t + v), abs=1)
    # Reproducible from the seed; another seed draws another val split of the same sizes.
    again = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25), seed=0)
    other = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25), seed=1)
    assert np.array_equal(again.val.x, ds300.val.x)
    assert np.array_equal(other.val.subclass.shape, ds300.val.subclass.shape)
    assert not np.array_equal(other.val.x, ds300.val.x)
    assert np.array_equal(other.test.x, ds300.test.x)  # the test partition is fixed


def test_test_fraction_is_ignored(synth300: Path, ds300: Dataset) -> None:
    ds = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25, test_fraction=0.4), seed=0)
    assert len(ds.test) == len(ds300.test)


def test_odd_images_are_converted_and_resized(small: Path) -> None:
    name = _rows(small)[0][NAME]
    Image.new("L", (40, 30), color=200).save(small / "images" / name)  # grey, wrong size
    rgba = _rows(small)[1][NAME]
    Image.new("RGBA", (16, 16), color=(10, 20, 30, 128)).save(small / "images" / rgba)
    ds = load_dataset(_spec(small, image_size=16), seed=0)
    all_x = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    assert all_x.shape[1:] == (3, 16, 16)
    assert any(np.all(x == 200) for x in all_x)
    assert any(np.array_equal(x[:, 0, 0], [10, 20, 30]) for x in all_x)


def test_default_image_size_is_224(small: Path) -> None:
    ds = load_dataset(_spec(small), seed=0)
    assert ds.input_shape == (3, 224, 224)


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------


def _all_x(ds: Dataset) -> np.ndarray:
    return np.concatenate([ds.train.x, ds.val.x, ds.test.x])


def test_cache_is_written_then_reused(small: Path, monkeypatch) -> None:
    first = load_dataset(_spec(small, image_size=16), seed=0)
    cache = Path(first.info["cache"])
    assert cache.parent == small / ".skd_cache" and cache.suffix == ".npy"
    assert first.info["decoded"] is True
    assert np.load(cache, allow_pickle=False).shape == (24, 3, 16, 16)
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left
    mtime = cache.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("the images were decoded again despite a valid cache")

    monkeypatch.setattr(mhist_module, "_decode_images", no_decoding)
    second = load_dataset(_spec(small, image_size=16), seed=0)
    assert second.info["decoded"] is False
    assert second.info["cache"] == str(cache)
    assert cache.stat().st_mtime_ns == mtime
    for name in ("train", "val", "test"):
        assert np.array_equal(first.split(name).x, second.split(name).x)
        assert np.array_equal(first.split(name).subclass, second.split(name).subclass)
        assert np.array_equal(first.split(name).difficulty, second.split(name).difficulty)


def test_cache_dir_option(small: Path, tmp_path) -> None:
    ds = load_dataset(_spec(small, image_size=16, cache_dir=str(tmp_path / "cache")), seed=0)
    assert Path(ds.info["cache"]).parent == tmp_path / "cache"
    assert not (small / ".skd_cache").exists()


def test_changed_csv_invalidates_the_cache(small: Path) -> None:
    first = load_dataset(_spec(small, image_size=16), seed=0)
    old = Path(first.info["cache"])
    rows = _rows(small)
    # Move one image from test to train: a different dataset, so the cache is rebuilt.
    i = next(i for i, r in enumerate(rows) if r[PARTITION] == "test")
    text = (small / "annotations.csv").read_text().splitlines()
    text[i + 1] = text[i + 1].replace(",test", ",train")
    (small / "annotations.csv").write_text("\n".join(text) + "\n")
    second = load_dataset(_spec(small, image_size=16), seed=0)
    assert second.info["decoded"] is True
    assert second.info["cache"] != str(old)
    assert len(second.test) == len(first.test) - 1
    assert not old.exists()  # the stale cache of this dataset is removed
    assert np.array_equal(np.sort(_all_x(first), axis=0), np.sort(_all_x(second), axis=0))


def test_changed_image_invalidates_the_cache(small: Path) -> None:
    first = load_dataset(_spec(small, image_size=16), seed=0)
    name = _rows(small)[0][NAME]
    Image.new("RGB", (16, 16), color=(1, 2, 3)).save(small / "images" / name)
    os.utime(small / "images" / name, ns=(1, 1))  # a different modification time for sure
    second = load_dataset(_spec(small, image_size=16), seed=0)
    assert second.info["decoded"] is True and second.info["cache"] != first.info["cache"]
    assert any(np.all(x == np.array([1, 2, 3])[:, None, None]) for x in _all_x(second))


def test_other_image_size_has_its_own_cache(small: Path) -> None:
    a = load_dataset(_spec(small, image_size=16), seed=0)
    b = load_dataset(_spec(small, image_size=8), seed=0)
    assert a.info["cache"] != b.info["cache"] and Path(a.info["cache"]).exists()
    assert b.input_shape == (3, 8, 8)


def test_damaged_cache_is_rebuilt(small: Path) -> None:
    first = load_dataset(_spec(small, image_size=16), seed=0)
    cache = Path(first.info["cache"])
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    second = load_dataset(_spec(small, image_size=16), seed=0)
    assert second.info["decoded"] is True
    assert np.array_equal(_all_x(first), _all_x(second))
    assert np.load(cache, allow_pickle=False).shape == (24, 3, 16, 16)


# ---------------------------------------------------------------------------------------------------
# Damaged layouts: one DataError naming the file, the row and the fix
# ---------------------------------------------------------------------------------------------------


def _edit_row(root: Path, line: int, column: str, value: str) -> None:
    """Set `column` of the row on 1-based CSV `line` (line 1 is the header) to `value`."""
    path = root / "annotations.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows[line - 1][rows[0].index(column)] = value
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _row(root: Path, line: int) -> dict[str, str]:
    return _rows(root)[line - 2]


def _load(root: Path):
    return load_dataset(_spec(root, image_size=16), seed=0)


def _csv(root: Path) -> str:
    return re.escape(str(root / "annotations.csv"))


def test_missing_column(small: Path) -> None:
    path = small / "annotations.csv"
    with open(path, newline="") as f:
        rows = [r[:3] for r in csv.reader(f)]  # drop Partition
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with pytest.raises(
        DataError,
        match=_csv(small)
        + re.escape(
            ": missing column(s) 'Partition'; found: 'Image Name', 'Majority Vote Label', "
            "'Number of Annotators who Selected SSA (Out of 7)'. The header must name"
        ),
    ):
        _load(small)


def test_unknown_label(small: Path) -> None:
    _edit_row(small, 3, LABEL, "NP")
    with pytest.raises(
        DataError, match=_csv(small) + r": line 3: unknown Majority Vote Label 'NP'; expected HP or SSA.*Fix that row"
    ):
        _load(small)


@pytest.mark.parametrize("vote", ["8", "-1", "3.5", "many", ""])
def test_bad_vote(small: Path, vote: str) -> None:
    _edit_row(small, 4, VOTES, vote)
    with pytest.raises(
        DataError,
        match=_csv(small)
        + re.escape(
            f": line 4: 'Number of Annotators who Selected SSA (Out of 7)' must be an integer from 0 to 7, got {vote!r}"
        ),
    ):
        _load(small)


def test_label_inconsistent_with_votes(small: Path) -> None:
    label = _row(small, 5)[LABEL]
    _edit_row(small, 5, VOTES, "5" if label == "HP" else "2")
    votes = "5" if label == "HP" else "2"
    with pytest.raises(
        DataError,
        match=_csv(small)
        + re.escape(
            f": line 5: Majority Vote Label is {label} but {votes} of 7 annotators selected SSA; the majority label must be "
            "SSA when 4 or more selected SSA"
        ),
    ):
        _load(small)


def test_bad_partition(small: Path) -> None:
    _edit_row(small, 6, PARTITION, "val")
    with pytest.raises(DataError, match=_csv(small) + r": line 6: Partition must be train or test, got 'val'"):
        _load(small)


def test_duplicate_image_name(small: Path) -> None:
    _edit_row(small, 7, NAME, "MHIST_aaa.png")
    with pytest.raises(
        DataError,
        match=_csv(small)
        + re.escape(": line 7: image 'MHIST_aaa.png' is listed again (first on line 2); each image must appear once"),
    ):
        _load(small)


def test_several_bad_rows_are_listed(small: Path) -> None:
    for line in (3, 4, 5, 6, 8):
        _edit_row(small, line, PARTITION, "dev")
    with pytest.raises(
        DataError, match=r"line 3: .*; line 4: .*; line 5: .*; and 2 more rows with problems\. Fix those rows"
    ):
        _load(small)


def test_missing_image_file(small: Path) -> None:
    (small / "images" / "MHIST_aab.png").unlink()
    path = re.escape(str(small / "images" / "MHIST_aab.png"))
    with pytest.raises(
        DataError, match=path + r": image file missing \(listed on line 3 of " + _csv(small) + r"\); add the file"
    ):
        _load(small)


def test_file_that_is_not_an_image(small: Path) -> None:
    (small / "images" / "MHIST_aac.png").write_text("this is not a PNG\n")
    path = re.escape(str(small / "images" / "MHIST_aac.png"))
    with pytest.raises(DataError, match=path + r": not a readable image \(.*\); listed on line 4 of " + _csv(small)):
        _load(small)
    assert not (small / ".skd_cache").exists() or not list((small / ".skd_cache").glob("*.npy"))


def test_missing_annotations(small: Path) -> None:
    (small / "annotations.csv").unlink()
    with pytest.raises(
        DataError, match=_csv(small) + r": annotations file not found\. data\.root must be an MHIST directory"
    ):
        _load(small)


def test_read_annotations_summary(small: Path) -> None:
    ann = read_annotations(small / "annotations.csv")
    assert ann.lines.tolist() == list(range(2, 26))
    assert ann.summary().startswith("24 images (")


# ---------------------------------------------------------------------------------------------------
# CLI and spec
# ---------------------------------------------------------------------------------------------------


def test_cli_synth_mhist(tmp_path, capsys) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth-mhist", str(out), "--n", "30", "--seed", "1", "--size", "16"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    assert line.startswith(f"{out}: 30 images (") and "16x16 px" in line and line.endswith(" s")
    assert len(_rows(out)) == 30 and len(list((out / "images").glob("*.png"))) == 30
    assert load_dataset(_spec(out, image_size=16), seed=0).num_subclasses == 8


def test_cli_synth_mhist_bad_argument(tmp_path, capsys) -> None:
    assert main(["data", "synth-mhist", str(tmp_path / "x"), "--n", "0"]) == 2
    assert "error: synthetic MHIST: n must be >= 1, got 0" in capsys.readouterr().err


def test_spec_accepts_mhist_schemes(small: Path) -> None:
    assert _spec(small, subclasses="unanimous").subclass_scheme == "unanimous"
    assert _spec(small).subclass_scheme == "agreement"
    with pytest.raises(
        ValidationError,
        match=r"subclasses\n  Value error, 'digits' is not a subclass scheme of source 'mhist'; "
        r"available: agreement, unanimous, invented, clustered; or a grouping of SSA vote counts",
    ):
        _spec(small, subclasses="digits")
    with pytest.raises(ValidationError, match=r"data\.root is required for source 'mhist'"):
        DataSpec(source="mhist")


# ---------------------------------------------------------------------------------------------------
# Learnable, not trivially
# ---------------------------------------------------------------------------------------------------


def test_a_small_cnn_learns_the_synthetic_data(ds300: Dataset) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and robust to a busy machine
    try:
        _train_and_check(torch, ds300)
    finally:
        torch.set_num_threads(threads)


def _train_and_check(torch, ds300: Dataset) -> None:
    from skd_tune.models import build_model
    from skd_tune.train import DeviceSplit, evaluate, fit, make_optimizer, membership_for, teacher_loss

    torch.manual_seed(0)
    device = "cpu"

    def on_device(split):
        return DeviceSplit.from_numpy(split.x, split.subclass, ds300.subclass_to_class, ds300.scale, device)

    train, val = on_device(ds300.train), on_device(ds300.val)
    model = build_model("cnn_small", ds300.num_subclasses, ds300.input_shape, ds300.mean, ds300.std)
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.0)
    membership = membership_for(ds300.subclass_to_class, device)
    history = list(
        fit(
            model,
            optimizer,
            teacher_loss(train),
            train,
            val,
            membership,
            ds300.positive_class,
            epochs=20,
            batch_size=32,
            seed=0,
        )
    )
    last = history[-1]
    test = evaluate(model, on_device(ds300.test), membership, ds300.positive_class, prefix="test_")
    print(
        f"\nsynthetic MHIST, cnn_small, 32 px, {len(train)} training images: val accuracy {last['val_accuracy']:.3f} "
        f"(majority {1 - float(val.classes.float().mean()):.3f}), val AUC {last['val_auc']:.3f}; "
        f"test accuracy {test['test_accuracy']:.3f}, test AUC {test['test_auc']:.3f}"
    )
    assert last["val_accuracy"] > 0.6
    assert last["val_auc"] > 0.75  # better than always answering the majority class (HP, ~69%) would score


# ---------------------------------------------------------------------------------------------------
# Subclasses from a grouping of the SSA vote counts
# ---------------------------------------------------------------------------------------------------

GROUPING = {"HP": [[0], [1], [2, 3]], "SSA": [[4, 5], [6], [7]]}
SINGLETONS = {"HP": [[0], [1], [2], [3]], "SSA": [[4], [5], [6], [7]]}  # agreement's subclasses
UNANIMOUS_GROUPS = {"HP": [[0], [1, 2, 3]], "SSA": [[4, 5, 6], [7]]}  # unanimous's subclasses


def _all_subclasses(ds: Dataset) -> np.ndarray:
    return np.concatenate([ds.train.subclass, ds.val.subclass, ds.test.subclass])


def _same_partition(a: Dataset, b: Dataset) -> None:
    """a's and b's subclasses are one partition of the samples under other names and order: label_bits
    agree on every split, and on the test split (the CSV's order in both) each subclass of a is one of b."""
    assert label_bits(_all_subclasses(a), a.subclass_to_class) == pytest.approx(
        label_bits(_all_subclasses(b), b.subclass_to_class), abs=1e-12
    )
    assert a.num_subclasses == b.num_subclasses
    pairs = set(zip(a.test.subclass.tolist(), b.test.subclass.tolist()))
    assert len(pairs) == len({s for s, _ in pairs}) == len({t for _, t in pairs})  # one to one
    assert all(a.subclass_to_class[s] == b.subclass_to_class[t] for s, t in pairs)
    assert sorted(a.info["images_per_subclass"].values()) == sorted(b.info["images_per_subclass"].values())


@pytest.mark.parametrize(
    "cls,group,name",
    [("HP", [0], "HP-0"), ("HP", [2, 3], "HP-2..3"), ("HP", [3, 1], "HP-1,3"), ("HP", [0, 1, 3], "HP-0..1,3")]
    + [("SSA", [4, 5, 6, 7], "SSA-4..7"), ("SSA", [7], "SSA-7")],
)
def test_vote_group_names(cls, group, name) -> None:
    assert vote_group_name(cls, group) == name


def test_vote_grouping_subclasses(synth300: Path, ds300: Dataset) -> None:
    spec = _spec(synth300, image_size=32, val_fraction=0.25, subclasses=GROUPING)
    assert spec.subclass_scheme == "votes"
    ds = load_dataset(spec, seed=0)
    assert ds.subclass_names == ["HP-0", "HP-1", "HP-2..3", "SSA-4..5", "SSA-6", "SSA-7"]
    assert ds.subclass_to_class.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.info["subclass_scheme"] == "votes"
    assert ds.info["vote_groups"] == GROUPING
    assert ds300.info["vote_groups"] is None
    # Every sample's subclass is the group of its row's votes; the difficulty stays by agreement.
    by_pixels = {_pixels(synth300, r[NAME]).tobytes(): r for r in _rows(synth300)}
    group_of = {v: i for i, g in enumerate([*GROUPING["HP"], *GROUPING["SSA"]]) for v in g}
    for split in (ds.train, ds.val, ds.test):
        for x, s, d in zip(split.x, split.subclass, split.difficulty):
            row = by_pixels[x.tobytes()]
            assert s == group_of[int(row[VOTES])]
            assert d == np.float32((7 - _agreement(row)) / 3.0)
    votes = np.bincount([int(r[VOTES]) for r in _rows(synth300)], minlength=8)
    expected = [votes[0], votes[1], votes[2] + votes[3], votes[4] + votes[5], votes[6], votes[7]]
    assert list(ds.info["images_per_subclass"].values()) == expected
    assert np.array_equal(ds.test.x, ds300.test.x)


def test_vote_groups_keep_the_order_given(synth300: Path) -> None:
    grouping = {"SSA": [[7], [4, 5, 6]], "HP": [[2, 3], [0], [1]]}  # HP comes first whatever the key order
    ds = load_dataset(_spec(synth300, image_size=32, subclasses=grouping), seed=0)
    assert ds.subclass_names == ["HP-2..3", "HP-0", "HP-1", "SSA-7", "SSA-4..6"]
    assert ds.info["vote_groups"] == {"HP": [[2, 3], [0], [1]], "SSA": [[7], [4, 5, 6]]}


@pytest.mark.parametrize("grouping,scheme", [(SINGLETONS, "agreement"), (UNANIMOUS_GROUPS, "unanimous")])
def test_vote_groupings_equal_the_schemes(synth300: Path, grouping, scheme) -> None:
    by_votes = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25, subclasses=grouping), seed=0)
    by_scheme = load_dataset(_spec(synth300, image_size=32, val_fraction=0.25, subclasses=scheme), seed=0)
    _same_partition(by_votes, by_scheme)


def test_subclasses_for_votes_checks_the_grouping() -> None:
    votes = np.array([0, 3, 4, 7])
    label = (votes >= 4).astype(np.int64)
    sub, names, s2c = subclasses_for_votes(UNANIMOUS_GROUPS, label, votes)
    assert sub.tolist() == [0, 1, 2, 3] and names == ["HP-0", "HP-1..3", "SSA-4..6", "SSA-7"]
    assert s2c.tolist() == [0, 0, 1, 1]
    with pytest.raises(
        DataError, match=r"data\.subclasses: HP \[\[0\], \[1, 2\]\]: vote count 3 is in no group; each of HP's"
    ):
        subclasses_for_votes({"HP": [[0], [1, 2]], "SSA": [[4, 5, 6, 7]]}, label, votes)


def test_spec_takes_a_grouping_for_mhist_only(small: Path) -> None:
    assert _spec(small, subclasses=GROUPING).vote_groups == {"HP": ((0,), (1,), (2, 3)), "SSA": ((4, 5), (6,), (7,))}
    with pytest.raises(ValidationError, match=r"vote count 4 in group 1 belongs to SSA"):
        _spec(small, subclasses={"HP": [[0, 1, 2, 3, 4]], "SSA": [[5, 6, 7]]})
    with pytest.raises(ValidationError, match=r"a grouping of vote counts is only for source 'mhist'"):
        DataSpec(source="digits", subclasses=GROUPING)


def test_data_summary_records_the_grouping(synth300: Path, ds300: Dataset) -> None:
    spec = Spec.model_validate(
        {"name": "v", "data": {"source": "mhist", "root": str(synth300), "image_size": 32, "subclasses": GROUPING}}
    )
    ds = load_dataset(spec.data, seed=0)
    summary = data_summary(spec, ds, label_bits(ds.train.subclass, ds.subclass_to_class))
    assert summary["subclasses"] == "votes" and summary["vote_groups"] == GROUPING
    assert summary["subclass_names"] == ["HP-0", "HP-1", "HP-2..3", "SSA-4..5", "SSA-6", "SSA-7"]
    plain = Spec.model_validate({"name": "a", "data": {"source": "mhist", "root": str(synth300), "image_size": 32}})
    assert data_summary(plain, ds300, 0.0)["vote_groups"] is None
