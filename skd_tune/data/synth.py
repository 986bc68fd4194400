"""A synthetic stand-in for MHIST, in MHIST's exact layout (the real data cannot be downloaded here).

`write_synthetic_mhist(out_dir)` writes::

    out_dir/annotations.csv     Image Name, Majority Vote Label, Number of Annotators who Selected SSA
                                (Out of 7), Partition
    out_dir/images/MHIST_aaa.png, MHIST_aab.png, ...   RGB PNGs, size x size (224 as MHIST)

What the images hold (a caricature of H&E-stained colorectal polyps, all sizes in fractions of the
image so a small rendering looks like a downscaled large one):

* pink stroma with a few glands: a pale lumen inside a purple epithelial rim dotted with nuclei;
* HP ("hyperplastic"): smaller, rounder glands with smooth rims, pinker stain, smooth stroma;
* SSA ("sessile serrated adenoma"): larger, more elongated glands whose rims are serrated (the radius
  is modulated by band-limited noise), a slightly bluer/purpler hue, more high-frequency texture;
* every image's appearance interpolates between the two by its SSA vote share (votes / 7), so a 4-3
  split looks almost like the other class, and a per-image random "look" plus staining variation and
  pixel noise make the classes overlap: learnable, not trivially separable.

The vote counts follow MHIST's real table (`VOTE_COUNTS`), per partition: at n = 3152 the counts are
exactly MHIST's, at other sizes proportional (largest remainder), so the test partition is shifted
towards SSA as MHIST's is, and each class's agreement levels have MHIST's shares. Everything is drawn from `seed`: the same arguments give a byte-identical
CSV and identical pixels (PNG bytes too, for one Pillow version).
"""

from __future__ import annotations

import csv
import io
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..atomic import make_dir, write_text_atomic
from ..errors import DataError

__all__ = ["COLUMNS", "VOTE_COUNTS", "mhist_names", "write_synthetic_mhist"]

# The columns of MHIST's annotations.csv, in order.
COLUMNS = ("Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition")

# MHIST's images per number of SSA votes (0..7 of 7 pathologists), per partition, from its public
# annotations.csv (totals as Wei et al. 2021: 3,152 images, 2,175 train and 977 test, 2,162 HP and 990
# SSA). SSA (4+ votes) is 29.0% of train but 36.8% of test: the test partition is shifted.
VOTE_COUNTS = {
    "train": (537, 497, 302, 209, 151, 106, 154, 219),
    "test": (186, 208, 124, 99, 65, 62, 96, 137),
}

_CHUNK = 16  # images rendered together (fixed: the pixels must not depend on the worker count)
_PARALLEL_MIN_PIXELS = 64 * 224 * 224  # smaller sets are written in-process (no worker start-up)

# Colours on the [0, 1] sRGB scale: (HP, SSA); an image's colour interpolates by its SSA-ness.
_STROMA = (np.array([0.91, 0.63, 0.76]), np.array([0.85, 0.61, 0.80]))
_EPITHELIUM = (np.array([0.58, 0.38, 0.64]), np.array([0.50, 0.35, 0.67]))
_LUMEN = (np.array([0.96, 0.93, 0.95]), np.array([0.92, 0.91, 0.96]))

_LOOK_JITTER = 0.22  # sd of the per-image shift of SSA-ness shared by all features
_FEATURE_JITTER = 0.10  # sd of each feature's own shift
_N_GLANDS = 6


def mhist_names(n: int) -> list[str]:
    """`MHIST_aaa.png`, `MHIST_aab.png`, ... (three letters as in MHIST; more when n > 26**3)."""
    width = 3
    while 26**width < n:
        width += 1
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = []
    for i in range(n):
        digits = []
        for _ in range(width):
            i, r = divmod(i, 26)
            digits.append(letters[r])
        names.append("MHIST_" + "".join(reversed(digits)) + ".png")
    return names


def _quota(n: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to n, proportional to `shares` (largest remainder)."""
    raw = np.asarray(shares, dtype=np.float64) * n / np.sum(shares)
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _annotations(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Labels (0 HP, 1 SSA), agreement (4..7), SSA votes (0..7) and partition (1 = test) of n images.

    The 16 (partition, votes) cells get exact quotas proportional to `VOTE_COUNTS` (largest remainder),
    so n = 3152 gives MHIST's table exactly; from n = 4 on, both partitions hold both classes. The rows
    are then shuffled.
    """
    table = np.array([VOTE_COUNTS["train"], VOTE_COUNTS["test"]], dtype=np.int64)  # (partition, votes)
    cells = _quota(n, table.ravel()).reshape(table.shape)
    if n >= 4:
        for part in range(2):
            for votes in (range(4), range(4, 8)):  # HP, SSA
                block = cells[part, list(votes)]
                if block.sum() == 0:  # a tiny set: take one image from the fullest cell
                    donor = np.unravel_index(np.argmax(cells), cells.shape)
                    cells[donor] -= 1
                    cells[part, votes[int(np.argmax(table[part, list(votes)]))]] += 1
    votes = np.concatenate([np.full(cells[p, v], v) for p in range(2) for v in range(8)]).astype(np.int64)
    test = np.concatenate([np.full(cells[p, v], p) for p in range(2) for v in range(8)]).astype(np.int64)
    perm = rng.permutation(n)
    votes, test = votes[perm], test[perm]
    label = (votes >= 4).astype(np.int64)
    agreement = np.where(label == 1, votes, 7 - votes)
    return {"label": label, "agreement": agreement, "votes": votes, "test": test}


def _band_noise(rng: np.random.Generator, b: int, size: int, bands: list[tuple[float, float]]) -> list[np.ndarray]:
    """For each (centre, width) in cycles per image, a (b, size, size) float32 field of Gaussian noise
    band-passed around that frequency. Its sd is 1 when the band lies well below the Nyquist frequency
    and shrinks with the part of the band cut off at small sizes (as when downscaling a large image).
    All bands come from one white-noise draw: disjoint bands are independent."""
    white = rng.standard_normal((b, size, size), dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(size) * size
    fx = np.fft.rfftfreq(size) * size
    f = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    out = []
    for centre, width in bands:
        # The field's variance is sum(gain^2 over the grid's frequencies) / size^2: normalise by the
        # sum over all integer frequencies, as if the grid were unbounded.
        lim = int(centre + 6 * width) + 1
        k = np.arange(-lim, lim + 1)
        total = np.sum(np.exp(-(((np.sqrt(k[:, None] ** 2 + k[None, :] ** 2) - centre) / width) ** 2)))
        gain = (np.exp(-0.5 * ((f - centre) / width) ** 2) * (size / np.sqrt(total))).astype(np.float32)
        out.append(np.fft.irfft2(spec * gain, s=(size, size)).astype(np.float32, copy=False))
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _render(ssa_share: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(B, size, size, 3) uint8 images for SSA vote shares `ssa_share` (B,) in [0, 1]."""
    b = len(ssa_share)
    look = ssa_share + rng.normal(0.0, _LOOK_JITTER, b)  # this image's SSA-ness

    def feature() -> np.ndarray:  # SSA-ness of one feature, (B,), roughly in [0, 1]
        return np.clip(look + rng.normal(0.0, _FEATURE_JITTER, b), -0.3, 1.3).astype(np.float32)

    s_size, s_shape, s_serr, s_tex, s_col = (feature() for _ in range(5))

    # Glands: K ellipses per image; centres anywhere (some cut by the border). rho is the smallest
    # ellipse "radius" sqrt(q), q = a dx^2 + 2 b dx dy + c dy^2, built from separable pieces.
    k = _N_GLANDS
    cy, cx = rng.uniform(-0.05, 1.05, (2, b, k, 1, 1)).astype(np.float32)
    radius = (0.085 + 0.045 * s_size)[:, None] * rng.uniform(0.75, 1.25, (b, k))
    elong = 1.0 + (0.12 + 0.35 * np.clip(s_shape, 0, None))[:, None] * rng.uniform(0.5, 1.5, (b, k))
    theta = rng.uniform(0.0, np.pi, (b, k))
    cos, sin = np.cos(theta), np.sin(theta)
    inv_a2 = 1.0 / (radius**2 * elong)  # along the long axis (semi-axis radius * sqrt(elong))
    inv_c2 = elong / radius**2  # across it
    qa = (cos**2 * inv_a2 + sin**2 * inv_c2).astype(np.float32)[..., None, None]
    qb = (cos * sin * (inv_a2 - inv_c2)).astype(np.float32)[..., None, None]
    qc = (sin**2 * inv_a2 + cos**2 * inv_c2).astype(np.float32)[..., None, None]
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    dy = u[None, None, :, None] - cy  # (B, K, H, 1)
    dx = u[None, None, None, :] - cx  # (B, K, 1, W)
    q = (2.0 * qb * dx) * dy  # (B, K, H, W)
    q += qa * dx * dx
    q += qc * dy * dy
    rho = np.sqrt(q.min(axis=1))  # (B, H, W); < 1 inside a gland
    del q

    # Serration of gland rims; fine texture (nuclei on the rims, fibres in the stroma: disjoint
    # regions, so one field serves both); uneven staining.
    serr, fine, stain = _band_noise(rng, b, size, [(11.0, 2.5), (40.0, 10.0), (0.0, 2.0)])
    amp_serr = (0.03 + 0.16 * np.clip(s_serr, 0, None))[:, None, None]
    rho = rho * (1.0 + amp_serr * serr)
    soft = max(0.04, 1.5 / (size * 0.1))  # edge width in rho units: about a pixel and a half
    inside_rim = _sigmoid((1.0 - rho) / soft)
    lumen = _sigmoid((0.70 - rho) / soft)
    rim = inside_rim - lumen
    stroma = 1.0 - inside_rim

    w = s_col[:, None].astype(np.float64)
    stain_gain = rng.normal(1.0, 0.045, (b, 3))  # per-image staining variation
    scale = 255.0

    def colour(pair, gain) -> np.ndarray:  # (B, 3) float32 on the 0..255 scale
        return (((1 - w) * pair[0] + w * pair[1]) * gain * scale).astype(np.float32)

    c_stroma, c_epi, c_lumen = colour(_STROMA, stain_gain), colour(_EPITHELIUM, stain_gain), colour(_LUMEN, 1.0)

    tex_amp = (0.015 + 0.05 * np.clip(s_tex, 0, None))[:, None, None]
    rim *= 1.0 - 0.35 * np.clip(fine - 0.8, 0.0, None)  # sparse dark nuclei
    fine *= tex_amp
    fine += 1.0
    fine += 0.03 * stain
    stroma *= fine
    img = rng.random((b, 3, size, size), dtype=np.float32)  # sensor noise: uniform, sd 0.025
    img -= 0.5
    img *= 0.025 * np.sqrt(12.0) * scale
    img += 0.5  # rounds to nearest in the uint8 cast below
    for ch in range(3):
        img[:, ch] += lumen * c_lumen[:, ch, None, None]
        img[:, ch] += rim * c_epi[:, ch, None, None]
        img[:, ch] += stroma * c_stroma[:, ch, None, None]
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(0, 2, 3, 1))


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    # Fast: zlib level 1 with Huffman coding only (compress_type 2 = Z_HUFFMAN_ONLY); noisy pixels hardly
    # compress anyway, and this is smaller and ~30% faster than level 1's default strategy.
    Image.fromarray(array, mode="RGB").save(path, format="PNG", compress_level=1, compress_type=2)


def _write_chunk(task: tuple) -> None:
    """Render one chunk of images and save them (runs in a worker process, or in-process)."""
    seed_seq, shares, names, size, images = task
    pixels = _render(shares, size, np.random.default_rng(seed_seq))
    for j, name in enumerate(names):
        _save_png(pixels[j], images / name)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def write_synthetic_mhist(
    out_dir: str | os.PathLike, n: int = 3152, seed: int = 0, size: int = 224, workers: int | None = None
) -> Path:
    """Write a synthetic MHIST-layout dataset of `n` images of `size` x `size` pixels into `out_dir`.

    Returns `out_dir` as a Path. Existing files of the same names are overwritten; `annotations.csv`
    is written last (atomically), so an interrupted run leaves no CSV that lists missing images.
    Large sets are rendered in `workers` forked processes (default: the usable CPUs, at most 8; PNG
    encoding holds the GIL, so threads would not help); the output does not depend on `workers`.
    """
    if n < 1:
        raise DataError(f"synthetic MHIST: n must be >= 1, got {n}; give the number of images, e.g. 3152")
    if size < 8:
        raise DataError(f"synthetic MHIST: size must be >= 8 pixels, got {size}; MHIST's images are 224")
    out = Path(out_dir)
    images = out / "images"
    make_dir(images, DataError, "choose a writable location")

    meta_ss, pixel_ss = np.random.SeedSequence(seed).spawn(2)
    ann = _annotations(n, np.random.default_rng(meta_ss))
    names = mhist_names(n)
    share = ann["votes"] / 7.0
    starts = range(0, n, _CHUNK)
    tasks = [
        (ss, share[lo : lo + _CHUNK], names[lo : lo + _CHUNK], size, images)
        for ss, lo in zip(pixel_ss.spawn(len(starts)), starts)
    ]

    n_workers = min(workers or min(8, _cpu_count()), len(tasks))
    parallel = n_workers > 1 and n * size * size >= _PARALLEL_MIN_PIXELS and "fork" in mp.get_all_start_methods()
    try:
        if parallel:
            # fork: the workers need nothing but numpy and Pillow, already loaded here (spawn would
            # re-import the package, seconds per worker).
            with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("fork")) as pool:
                for _ in pool.map(_write_chunk, tasks):
                    pass
        else:
            for task in tasks:
                _write_chunk(task)
    except OSError as e:
        raise DataError(
            f"{images}: cannot write the images ({e.strerror or e}); free some space or choose another directory"
        ) from None

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, lab, votes, test in zip(names, ann["label"], ann["votes"], ann["test"]):
        writer.writerow([name, "SSA" if lab else "HP", int(votes), "test" if test else "train"])
    try:
        write_text_atomic(out / "annotations.csv", buf.getvalue())
    except OSError as e:
        raise DataError(
            f"{out / 'annotations.csv'}: cannot write the file ({e.strerror or e}); choose a writable directory"
        ) from None
    return out
