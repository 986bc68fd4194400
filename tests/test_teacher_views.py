"""`teacher_logits: views`: the teacher's logits of all 8 flips and turns of every training image, and a
student's augmented batch distilling the logits of the very view each image was given."""

from __future__ import annotations

import numpy as np
import torch

from skd_tune.augment import VIEWS
from skd_tune.data import load_dataset
from skd_tune.recipes import build_student_run, build_teacher_run, clean_view, teacher_logits
from skd_tune.spec import validate_spec
from skd_tune.train import save_state

from .conftest import TINY_SPEC, deep_update

CPU = torch.device("cpu")


def _spec(**changes):
    base = {"teacher_logits": "views", "student": {"augment": True, "epochs": 1, "batch_size": 64}}
    return validate_spec(deep_update(deep_update(TINY_SPEC, base), changes))


def _by_hand(x: torch.Tensor, view: int) -> torch.Tensor:
    """The dihedral view written out, independently of augment.apply_view."""
    h, v, t = view & 1, (view >> 1) & 1, (view >> 2) & 1
    x = torch.flip(x, dims=[3]) if h else x
    x = torch.flip(x, dims=[2]) if v else x
    return x.permute(0, 1, 3, 2) if t else x


def test_the_eight_cached_views_are_the_teachers_logits_on_the_transformed_images(tmp_path):
    spec = _spec(teacher={"epochs": 1})
    data = load_dataset(spec.data, spec.seed)
    run = build_teacher_run(spec, data, {}, device=CPU)
    for _ in run.epochs():
        pass
    save_state(tmp_path, run.model, run.optimizer, 1, run.best)
    logits = teacher_logits(spec, data, torch.load(tmp_path / "state.pt", weights_only=True), device=CPU)
    n, s = len(data.train), data.num_outputs
    assert logits["train"].shape == (n, VIEWS, s) and logits["val"].shape == (len(data.val), s)
    model = run.model.eval()
    model.load_state_dict(run.best["model"])
    x = torch.from_numpy(data.train.x[:50].astype(np.float32)) * data.scale
    with torch.no_grad():
        for view in range(VIEWS):
            expected = model(_by_hand(x, view)).numpy()
            np.testing.assert_allclose(logits["train"][:50, view], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(logits["train"][:, 0], logits["train"][:, 5])  # digits are not symmetric
    np.testing.assert_array_equal(clean_view(logits["train"]), logits["train"][:, 0])


def test_an_augmented_batch_distils_the_logits_of_the_view_each_image_was_given():
    spec = _spec()
    data = load_dataset(spec.data, spec.seed)
    n, s = len(data.train), data.num_outputs
    table = np.random.default_rng(0).normal(size=(n, VIEWS, s)).astype(np.float32)  # logits per (image, view)
    only_skd = spec.student_for({"w_ce": 0.0, "w_kd": 0.0, "w_skd": 1.0, "temperature": 1.0})
    run = build_student_run(only_skd, spec, data, table, seed=0, device=CPU)
    seen_x, seen = [], []
    run.model.register_forward_pre_hook(lambda module, args: seen_x.append(args[0].detach().clone()))
    loss_fn = run.loss_fn

    def recording(out, idx, view=None):
        seen.append((idx.clone(), view.clone()))
        return loss_fn(out, idx, view)

    run.loss_fn = recording
    for _ in run.epochs():
        pass
    train_x = torch.from_numpy(data.train.x.astype(np.float32)) * data.scale
    views = torch.cat([v for _, v in seen])
    assert set(views.tolist()) == set(range(VIEWS))
    for x, (idx, view) in zip(seen_x, seen):  # the forward passes of training, in order (validation after)
        for i in range(len(idx)):  # one channel: no colour jitter, the image is exactly its view
            assert torch.equal(x[i : i + 1], _by_hand(train_x[idx[i]][None], int(view[i])))
        # The target of sample i is the table's row (idx[i], view[i]): the student outputting exactly those
        # logits has a distillation loss of 0, and any other view's logits do not.
        target = torch.from_numpy(table[idx.numpy(), view.numpy()])
        wrong = torch.from_numpy(table[idx.numpy(), ((view + 1) % VIEWS).numpy()])
        assert float(loss_fn(target, idx, view)[0]) < 1e-5 < float(loss_fn(wrong, idx, view)[0])
    # without augmentation (view None) a sample distils its clean view, view 0
    idx = torch.arange(4)
    assert float(loss_fn(torch.from_numpy(table[:4, 0]), idx, None)[0]) < 1e-5
