"""Ray start-up (local, or joining a cluster) and the check that every trial fits on one node."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..errors import PipelineError, last_line
from ..spec import Spec

__all__ = ["check_resources", "init_ray"]


def init_ray(address: str | None = None, verbose: bool = False) -> bool:
    """Start local Ray (or join `address`), quiet unless `verbose`. True if this call started local Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Our Parquet tables are the record of every trial: skip Tune's CSV/JSON/TensorBoard loggers.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ray Tune's experiment snapshot keeps its default period ("auto": every 10 s, longer when a snapshot
    # takes over 5% of the time): each snapshot rewrites every trial's state, so at every step it made a
    # search's cost grow with the square of its trials (benchmarks/growth.py). A trial restored from an
    # older snapshot goes on from its own latest checkpoint (tune/trainables.py), so the trials that
    # ended since are not trained again.
    import ray

    if not verbose:
        for name in ("ray", "ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
        )
    except (ConnectionError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS")
        if where is None:
            raise
        text, cause = "", e
        while cause is not None:
            text, cause = text + f" {cause}", cause.__cause__ or cause.__context__
        if "InvalidAuthToken" in text:
            raise PipelineError(
                f"the Ray cluster at {where} uses token authentication and refused this driver: set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token; "
                "`ray get-auth-token` on the head prints it)"
            ) from None
        raise PipelineError(
            f"cannot join the Ray cluster at {where} ({last_line(e)}); check the address "
            "that `ray start --head` printed and that the head runs"
        ) from None
    return address is None and not os.environ.get("RAY_ADDRESS")


def _unplaceable(spec: Spec) -> list[str]:
    """The roles whose trial fits on no alive node (a trial runs on one node: its CPUs and GPUs together)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    out = []
    for role in ("teacher", "student"):
        res = getattr(spec, role).resources
        if not any(n.get("CPU", 0) >= res.cpu and n.get("GPU", 0) >= res.gpu for n in nodes):
            out.append(role)
    return out


def check_resources(spec: Spec, wait_s: float, printer: Callable[[str], None]) -> None:
    """Refuse a spec whose teacher or student trial no node of the cluster can hold (Tune would wait
    forever). On a joined cluster, wait up to `wait_s` for such a node first: workers may still be
    starting, or an autoscaler adding them."""
    import ray

    deadline = time.monotonic() + wait_s
    missing = _unplaceable(spec)
    if missing and wait_s > 0:
        asks = ", ".join(
            f"{r}: cpu={getattr(spec, r).resources.cpu:g}, gpu={getattr(spec, r).resources.gpu:g}" for r in missing
        )
        printer(f"waiting up to {wait_s:.0f} s for a Ray node that can hold a trial ({asks})")
        while missing and time.monotonic() < deadline:
            time.sleep(min(5.0, max(deadline - time.monotonic(), 0.0)))
            missing = _unplaceable(spec)
    if not missing:
        return
    role = missing[0]
    res = getattr(spec, role).resources
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    largest = ", ".join(sorted({f"cpu={n.get('CPU', 0):g}, gpu={n.get('GPU', 0):g}" for n in nodes})) or "none"
    waited = f" (waited {wait_s:.0f} s)" if wait_s > 0 else ""
    raise PipelineError(
        f"{role}.resources asks for cpu={res.cpu:g}, gpu={res.gpu:g} on one node, but no node of the Ray cluster has "
        f"that{waited}; its nodes have: {largest}. The trial could never start. Lower {role}.resources in the spec, "
        f"or run on a cluster with such a node (--address; on a cluster whose workers are still starting, give them "
        f"longer with --node-wait SECONDS)"
    )
