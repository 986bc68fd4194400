"""Errors the pipeline finds before any Ray work: clear paragraph, exit code 2, nothing lost."""

from __future__ import annotations

import numpy as np

from skd_tune.cli import main


def _tabular_npz(path):
    rng = np.random.default_rng(0)
    sub = rng.integers(0, 4, 200)
    x = (rng.normal(size=(200, 6)) + sub[:, None]).astype(np.float32) / 8 + 0.5
    np.savez(path, x=x, subclass=sub, subclass_to_class=np.array([0, 0, 1, 1]))


def test_model_that_cannot_take_the_data(write_spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tabular_npz(tmp_path / "tab.npz")
    path = write_spec({"data": {"source": "npz", "root": "tab.npz"}, "teacher": {"model": "cnn"}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "teacher.model 'cnn' cannot take the npz inputs of shape (6,)" in err and "use model: mlp" in err
    assert not (tmp_path / "runs").exists()


def test_directory_that_is_not_an_experiment(write_spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "notes.txt").write_text("mine")
    assert main(["run", str(write_spec())]) == 2
    err = capsys.readouterr().err
    assert "is not an skd-tune experiment (it has no spec.yaml); nothing was written" in err
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["notes.txt"]


def test_resources_no_node_can_satisfy(write_spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_spec({"student": {"resources": {"cpu": 512}}})
    try:
        assert main(["run", str(path)]) == 2
    finally:
        import ray

        ray.shutdown()
    err = capsys.readouterr().err
    assert "student.resources asks for cpu=512" in err and "could never start" in err
