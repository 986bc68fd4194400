"""The teacher-logits stage: the frozen teacher's logits of every split, computed once and cached
(with `teacher_logits: views`, the training split's for all 8 flips and turns of each image), and what
its subclass probabilities carry beyond its class probabilities, I_T(S;X|C) (`metrics.subclass_information`).

As a Ray task with the teacher's resources (on a GPU node where the teacher asks for one), or, for a
CPU-only teacher on local Ray, in the driver: the same computation without starting a worker process
that imports torch (~5 s of a small search). The logits are derived from the teacher's checkpoint:
when a cached file is missing or damaged, this stage runs again (saying so) instead of failing.
With several outputs per group (invented subclasses), `results/subclasses.json` says how the teacher
uses them: the entropy of their use per class, the dead share, and their AMI with the known subclasses.

A teacher made elsewhere (`teacher.source: checkpoint | logits`) gives its outputs in the driver
(`skd_tune.teachers`). With `data.subclasses: clustered`, the class-output teacher's embeddings are
clustered per class and its subclass logits built from them (`teachers/clusters.py`); the clusters are
cached beside the logits, so rebuilding the logits reuses them instead of fitting them again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Context, Stage

__all__ = ["TeacherLogitsStage", "class_metrics"]


class TeacherLogitsStage(Stage):
    name = "teacher_logits"

    def _in_driver(self, ctx: Context) -> bool:
        return ctx.local and ctx.spec.teacher.resources.gpu == 0

    def needs_ray(self, ctx: Context) -> bool:
        return ctx.spec.teacher.source == "train" and not self._in_driver(ctx)

    def intact(self, ctx: Context, record: dict[str, Any]) -> bool:
        if "logits" not in ctx.cache:
            ctx.cache["logits"] = ctx.exp.load_teacher_logits(say=ctx.say)
        return ctx.cache["logits"] is not None

    def _outputs(self, ctx: Context) -> dict[str, Any]:
        """The teacher's logits of every split (with "embeddings" for clustered subclasses)."""
        spec, exp, data = ctx.spec, ctx.exp, ctx.data
        if spec.teacher.source != "train":
            from ..teachers import load_teacher

            loaded = ctx.cache.pop("teacher_outputs", None) or load_teacher(spec, data)
            _same_teacher(exp.done("teacher") or {}, loaded.record)
            return dict(loaded.logits) | ({"embeddings": loaded.embeddings} if loaded.embeddings else {})
        from ..data import class_view
        from ..experiment import join
        from ..tune.trainables import remote_teacher_logits, teacher_logits_task

        checkpoint = join(exp.tune_location(), exp.done("teacher")["checkpoint"])
        if self._in_driver(ctx):
            import torch

            return teacher_logits_task(spec, class_view(data), checkpoint, device=torch.device("cpu"))
        return remote_teacher_logits(spec, class_view(data), checkpoint)

    def run(self, ctx: Context) -> dict[str, Any]:
        from ..recipes import clean_view

        exp, data = ctx.exp, ctx.data
        logits = self._outputs(ctx)
        embeddings = logits.pop("embeddings", None)
        clusters = None
        if data.clustered:
            logits, clusters = _clustered(ctx, logits, embeddings)
        exp.save_teacher_logits(logits)
        ctx.cache["logits"] = {k: np.asarray(v, dtype=np.float32) for k, v in logits.items()}
        info: dict[str, Any] = {
            "shapes": {k: list(v.shape) for k, v in logits.items()},
            "test_metrics": class_metrics(logits["test"], data, "test"),
            "subclass_bits": _subclass_bits(clean_view(logits["train"]), data),
        }
        if clusters is not None:
            info["clusters"] = clusters
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
        clusters = record.get("clusters")
        if clusters:
            how = "fitted" if clusters["fitted"] else f"reused from {clusters['file']} (not refitted)"
            ctx.say(
                f"[teacher] subclasses: k-means, {data.outputs_per_group} clusters per class of its "
                f"{clusters['dim']}-dimensional embeddings ({how}), tau {clusters['tau']:.4g}"
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
            per += " (clusters of its embeddings)" if data.clustered else ""
            ctx.say(
                f"[teacher] {data.outputs_per_group} outputs per {per}: entropy of their use per class {ents} bits "
                f"(max {np.log2(data.outputs_per_group):.2f}), dead {diag['dead_share']:.0%}, AMI with the known "
                f"subclasses on test {diag['ami_test']:.3f}"
            )


def class_metrics(sub_logits: np.ndarray, data: Any, split: str, class_level: bool = False) -> dict[str, float]:
    """The teacher's class metrics on `split` from its subclass logits (or, `class_level`, its class logits)."""
    import torch

    from ..losses import class_logits, class_membership
    from ..metrics import classification_metrics

    cls = torch.tensor(sub_logits)
    if not class_level:
        cls = class_logits(cls, class_membership(torch.tensor(data.output_to_class)))
    return classification_metrics(data.classes(split), torch.softmax(cls, 1).numpy(), data.positive_class)


def _same_teacher(record: dict[str, Any], loaded: dict[str, Any]) -> None:
    """A checkpoint teacher whose file changed since the teacher stage checked it is refused."""
    from ..errors import PipelineError

    if record.get("sha256") and loaded.get("sha256") and record["sha256"] != loaded["sha256"]:
        raise PipelineError(
            f"{loaded['path']}: the teacher's file changed since this experiment's teacher stage checked it; put "
            "the original back, or run the new teacher as a new experiment (another name)"
        )


def _clustered(ctx: Context, logits: dict[str, np.ndarray], embeddings: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Subclass logits from the class logits and per-class clusters of the embeddings (teachers/clusters.py):
    the cached clusters when they fit, else fitted on the training split and cached."""
    from ..experiment import layout
    from ..teachers import Clusters, fit_clusters, subclass_logits

    spec, data = ctx.spec, ctx.data
    dim = embeddings["train"].shape[1]
    cached = ctx.exp.load_clusters()
    clusters = Clusters.from_arrays(cached) if cached is not None else None
    fitted = clusters is None or not clusters.fits(data.num_classes, data.outputs_per_group, dim)
    if fitted:
        clusters = fit_clusters(
            embeddings["train"], data.classes("train"), data.num_classes, data.outputs_per_group, spec.seed,
            spec.teacher.cluster_tau,
        )  # fmt: skip
        ctx.exp.save_clusters(clusters.arrays())
    out = {k: subclass_logits(logits[k], embeddings[k], clusters) for k in logits}
    return out, {"tau": clusters.tau, "dim": int(dim), "fitted": fitted, "file": layout.CLUSTERS}


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
        "scheme": "clustered" if data.clustered else ("invented" if data.invented else "known, split"),
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
