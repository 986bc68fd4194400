"""What a run says about its data (data/summary.py): on the synthetic MHIST with MHIST's real votes, the
label bits of each annotation scheme are those of the real annotations."""

from __future__ import annotations

import numpy as np
import pytest

from skd_tune.data import load_dataset
from skd_tune.data.mhist import read_annotations
from skd_tune.data.summary import data_line, partition_label_bits
from skd_tune.data.synth import VOTE_COUNTS, write_synthetic_mhist
from skd_tune.spec import DataSpec


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """MHIST's 3,152 images (8 px: only the votes matter here)."""
    return write_synthetic_mhist(tmp_path_factory.mktemp("mhist3152"), n=3152, seed=0, size=8)


def test_the_written_csv_holds_mhists_vote_table(full_size):
    ann = read_annotations(full_size / "annotations.csv")
    for part, rows in (("train", ~ann.test), ("test", ann.test)):
        assert np.bincount(ann.votes[rows], minlength=8).tolist() == list(VOTE_COUNTS[part])


@pytest.mark.parametrize("scheme,bits", [("agreement", "1.920"), ("unanimous", "0.932")])
def test_a_run_on_the_synthetic_mhist_prints_the_real_votes_label_bits(full_size, scheme, bits):
    data = load_dataset(DataSpec(source="mhist", root=str(full_size), subclasses=scheme), seed=0)
    assert len(data.train) + len(data.val) == 2175 and len(data.test) == 977  # MHIST's train partition
    line = data_line(data, partition_label_bits(data))
    assert f"H(S|C) = {bits} bits per training sample" in line
    assert "Sajedi et al. 2022 report 0.4656 bits for MHIST, which no grouping of its vote levels gives" in line


def test_other_sources_do_not_mention_mhists_paper():
    data = load_dataset(DataSpec(source="digits"), seed=0)
    line = data_line(data, partition_label_bits(data))
    assert "H(S|C) = 2.322 bits per training sample" in line and "Sajedi" not in line
