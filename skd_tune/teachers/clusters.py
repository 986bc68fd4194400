"""Subclasses found post hoc in a class-output teacher's embeddings (`data.subclasses: clustered`).

The teacher's penultimate embeddings e(x) of the training split are clustered per class with k-means
(scikit-learn, seeded): the samples labelled c give K centroids mu_{c,1..K}. The teacher's subclass
logits are then built from its class logits z_c(x) as

    z_{c,j}(x) = z_c(x) + log softmax_j( -||e(x) - mu_{c,j}||^2 / tau ),      j = 1..K

for every sample x and every class c (whatever x's label), so that

    logsumexp_j z_{c,j}(x) = z_c(x) + log sum_j softmax_j(.) = z_c(x)      exactly.

Exactness: the class probabilities softmax_c z_c(x) of the teacher are kept, so KD on these logits is KD
on the teacher's own (up to float32 rounding, about 1e-7); only how each class's probability is shared
among its K subclasses is new: by a softmax over the negative squared distances to that class's
centroids at temperature tau. `tau` defaults to the mean within-cluster squared distance of the training
samples (the scale of the distances, so the default is neither one-hot nor uniform); tau -> 0 gives
one-hot subclass probabilities (the nearest centroid), tau -> infinity uniform ones (then SKD carries
nothing beyond KD).

Limits: the clusters are of the embedding space, not of any label: they are subclasses only as far as
the teacher's embedding separates the data's modes (AMI with known subclasses measures it). k-means
assumes roughly round clusters of similar spread; K is the user's (a too large K splits modes, with
near-duplicate centroids; `metrics.subclass_usage` shows dead ones). The fit sees only the training
split's samples of each class (true labels); one tau serves every class. tau is not searched in the
teacher stage: the teacher's validation metrics do not depend on it (the class probabilities are exact),
so that search could not choose; set `teacher.cluster_tau` to change it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

__all__ = ["Clusters", "fit_clusters", "subclass_logits"]


@dataclass(frozen=True)
class Clusters:
    """Per-class k-means centroids (C, K, D) of the teacher's embeddings and the temperature tau."""

    centroids: np.ndarray
    tau: float

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that cache them (`Experiment.save_clusters`)."""
        return {"centroids": np.asarray(self.centroids, dtype=np.float64), "tau": np.asarray(self.tau)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Clusters:
        return cls(np.asarray(arrays["centroids"], dtype=np.float64), float(arrays["tau"]))

    def fits(self, num_classes: int, k: int, dim: int) -> bool:
        """Whether these clusters are of `num_classes` classes, `k` per class, in `dim` dimensions."""
        return self.centroids.shape == (num_classes, k, dim) and self.tau > 0


def _squared_distances(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, C, K) squared Euclidean distances of each embedding (N, D) to each centroid (C, K, D)."""
    e = np.asarray(embeddings, dtype=np.float64)
    mu = centroids.reshape(-1, centroids.shape[-1])
    d2 = (e**2).sum(1)[:, None] - 2.0 * e @ mu.T + (mu**2).sum(1)[None, :]
    return np.maximum(d2, 0.0).reshape(len(e), *centroids.shape[:2])


def fit_clusters(
    embeddings: np.ndarray, classes: np.ndarray, num_classes: int, k: int, seed: int, tau: float | None = None
) -> Clusters:
    """K-means with `k` clusters in each class's training embeddings (N, D), seeded; `tau` None: the mean
    squared distance of each training sample to its own centroid (at least 1e-12)."""
    from sklearn.cluster import KMeans

    e = np.asarray(embeddings, dtype=np.float64)
    classes = np.asarray(classes)
    if e.ndim != 2 or len(e) != len(classes):
        raise DataError(f"teacher embeddings: need (N, D) for the {len(classes)} training samples, got {e.shape}")
    centroids, within = [], 0.0
    for c in range(num_classes):
        members = e[classes == c]
        if len(members) < k:
            raise DataError(
                f"data.subclasses_per_class: {k} clusters, but class {c} has only {len(members)} training samples; "
                "lower data.subclasses_per_class"
            )
        km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(members)
        centroids.append(km.cluster_centers_)
        within += float(km.inertia_)
    default_tau = max(within / max(len(e), 1), 1e-12)
    return Clusters(np.stack(centroids), float(tau) if tau is not None else default_tau)


def subclass_logits(class_logits: np.ndarray, embeddings: np.ndarray, clusters: Clusters) -> np.ndarray:
    """(N, C*K) subclass logits z_{c,j} = z_c + log softmax_j(-||e - mu_{c,j}||^2 / tau), class-major (the
    outputs of class c are c*K .. c*K+K-1); `logsumexp_j z_{c,j} = z_c` (module docstring)."""
    z = np.asarray(class_logits, dtype=np.float64)
    num_classes, k, _ = clusters.centroids.shape
    if z.ndim != 2 or z.shape[1] != num_classes or len(z) != len(embeddings):
        raise DataError(
            f"class logits {z.shape} and embeddings {np.shape(embeddings)} do not fit {num_classes} classes"
        )
    a = -_squared_distances(embeddings, clusters.centroids) / clusters.tau
    a -= a.max(axis=2, keepdims=True)
    log_share = a - np.log(np.exp(a).sum(axis=2, keepdims=True))  # log softmax over each class's K clusters
    return (z[:, :, None] + log_share).reshape(len(z), num_classes * k).astype(np.float32)
