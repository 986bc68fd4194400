"""The teacher-logits stage: the frozen teacher's logits of every split, computed once and cached
(with `teacher_logits: views`, the training split's for all 8 flips and turns of each image), and what
its subclass probabilities carry beyond its class probabilities, I_T(S;X|C) (`metrics.subclass_information`).

As a Ray task with the teacher's resources (on a GPU node where the teacher asks for one), or, for a
CPU-only teacher on local Ray, in the driver: the same computation without starting a worker process
that imports torch (~5 s of a small search). The logits are derived from the teacher's checkpoint:
when a cached file is missing or damaged, this stage runs again (saying so) instead of failing.
With several outputs per group (invented subclasses), `results/subclasses.json` says how the teacher
uses them: the entropy of their use per class, the dead share, and their AMI with the known subclasses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Context, Stage

__all__ = ["TeacherLogitsStage"]


class TeacherLogitsStage(Stage):
    name = "teacher_logits"

    def _in_driver(self, ctx: Context) -> bool:
        return ctx.local and ctx.spec.teacher.resources.gpu == 0

    def needs_ray(self, ctx: Context) -> bool:
        return not self._in_driver(ctx)

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        if "logits" not in ctx.cache:
            ctx.cache["logits"] = ctx.exp.load_teacher_logits(say=ctx.say)
        return ctx.cache["logits"] is not None

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..experiment import join
        from ..recipes import clean_view
        from ..tune.trainables import remote_teacher_logits, teacher_logits_task

        spec, exp, data = ctx.spec, ctx.exp, ctx.data
        checkpoint = join(exp.tune_location(), exp.done("teacher")["checkpoint"])
        if self._in_driver(ctx):
            import torch

            logits = teacher_logits_task(spec, data, checkpoint, device=torch.device("cpu"))
        else:
            logits = remote_teacher_logits(spec, data, checkpoint)
        exp.save_teacher_logits(logits)
        ctx.cache["logits"] = {k: np.asarray(v, dtype=np.float32) for k, v in logits.items()}
        info: dict[str, Any] = {
            "shapes": {k: list(v.shape) for k, v in logits.items()},
            "test_metrics": _class_metrics(logits["test"], data, "test"),
            "subclass_bits": _subclass_bits(clean_view(logits["train"]), data),
        }
        if data.outputs_per_group > 1:
            info["subclasses"] = _subclass_diagnostics(ctx, logits)
        return info

    def show(self, ctx: Context, record: dict[str, Any]) -> None:
        data = ctx.data
        views = record["shapes"]["train"][1] if len(record["shapes"]["train"]) == 3 else 0
        what = f"{views} views of every training image: flips and turns" if views else "clean inputs"
        ctx.say(
            f"[teacher] logits cached in {ctx.exp.logits_dir} ({what}); teacher test f1 {record['test_metrics']['f1']:.4f}"
        )
        bits = record.get("subclass_bits")
        if bits is not None:
            from ..data.summary import partition_label_bits

            ctx.say(
                f"[teacher] its subclass probabilities carry I_T(S;X|C) = {bits['bits']:.3f} bits per training sample "
                f"beyond its class probabilities (at most {bits['max_bits']:.3f} with its outputs); the labels' "
                f"H(S|C) is {partition_label_bits(data):.3f}"
            )
        diag = record.get("subclasses")
        if diag:
            ents = ", ".join(f"{e:.2f}" for e in diag["entropy_bits"])
            per = "class" if data.invented else "subclass"
            ctx.say(
                f"[teacher] {data.outputs_per_group} outputs per {per}: entropy of their use per class {ents} bits "
                f"(max {np.log2(data.outputs_per_group):.2f}), dead {diag['dead_share']:.0%}, AMI with the known "
                f"subclasses on test {diag['ami_test']:.3f}"
            )


def _class_metrics(sub_logits: np.ndarray, data: Any, split: str) -> dict[str, float]:
    import torch

    from ..losses import class_logits, class_membership
    from ..metrics import classification_metrics

    cls = class_logits(torch.tensor(sub_logits), class_membership(torch.tensor(data.output_to_class)))
    return classification_metrics(data.classes(split), torch.softmax(cls, 1).numpy(), data.positive_class)


def _subclass_bits(train_logits: np.ndarray, data: Any) -> dict[str, Any]:
    """I_T(S; X | C) of the teacher on the training split (`metrics.subclass_information`), per class by name."""
    from ..metrics import subclass_information

    out = subclass_information(train_logits, data.classes("train"), data.output_to_class)
    return {**out, "per_class": dict(zip(data.class_names, out["per_class"]))}


def _subclass_diagnostics(ctx: Context, logits: dict[str, np.ndarray]) -> dict[str, Any]:
    """Writes results/subclasses.json (usage on the training split, AMI on the test split against the
    source's own known subclasses, e.g. the ten digits); returns the summary the stage records."""
    import torch

    from ..metrics import subclass_ami, subclass_usage

    data = ctx.data
    from ..recipes import clean_view

    probs = torch.softmax(torch.from_numpy(np.array(clean_view(logits["train"]), dtype=np.float32)), 1).numpy()
    usage = subclass_usage(probs, data.classes("train"), data.output_to_class)
    for row in usage["per_class"]:
        row["class"] = data.class_names[row["class"]]
    out = {
        "scheme": "invented" if data.invented else "known, split",
        "outputs_per_group": data.outputs_per_group,
        "output_names": data.output_names,
        "per_class": usage["per_class"],
        "dead_share": usage["dead_share"],
        "ami_test": subclass_ami(logits["test"], data.test.subclass),
        "ami_against": "known subclasses of the source (" + ", ".join(data.subclass_names) + ")",
    }
    ctx.exp.write_result("subclasses", out)
    return {k: out[k] for k in ("dead_share", "ami_test")} | {
        "entropy_bits": [r["entropy_bits"] for r in out["per_class"]]
    }
