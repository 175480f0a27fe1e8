"""``classic``: candidates by joint geometric augmentation of a source image and its mask.

The baseline the synthesis experiments compare generative models against (Mahapatra et al.
2018 augment their selected images "200 times using standard data augmentation like rotation and
translation"). For each candidate the parameters are drawn once from the rng into a recorded dict
(TorchIO style), then applied deterministically, so every candidate can be replayed from its
provenance record alone (:func:`apply`):

    {"flip": [axes], "rotate_deg": a, "scale": [sy, sx], "translate_px": [ty, tx]}

``flip`` lists the flipped image axes (0 = rows/up-down, 1 = columns/left-right), each flipped
with probability ``flip_prob`` among ``flip_axes``; then one MONAI ``Affine`` (rotation about
the centre by ``a`` degrees, per-axis scale, translation in pixels) resamples the image
bilinearly and the mask by nearest neighbour, with border padding. uint8 images are rounded
back to uint8. The label is inherited (cost ``INHERITED``, 0 expert labels): the mask goes
through the same transform, an image label is copied. Default flips are off: a left-right flip
of a chest radiograph moves the heart to the wrong side, so flips are opt-in per dataset.
Unlike the mask-conditioned generators (``PerturbConfig.for_data``) it does not read
``ImageSet.lr_flip_safe``: off is already safe for every dataset, and turning flips on where a
set is flip-safe (LGG, phantoms) would change the results of existing configs.

Cost: one affine resample per candidate image and one per mask (``n * len(sources)`` of them),
run with MONAI's metadata tracking off (it would double the time and is never read here):
about 28 candidates/s at 128x128 on one thread of the shared 2-core test machine under load, so
Mahapatra's 200 per source over 50 sources takes minutes; cap sources with the loop's
``max_sources``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Affine

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.generative.base import GENERATORS, params_hash
from activesynth.synthesis.candidates import Candidates, LabelCost, Provenance

__all__ = ["ClassicAugmentation", "apply", "draw"]


def draw(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    rotate_deg: float,
    scale: float,
    translate: float,
    flip_axes: tuple[int, ...],
    flip_prob: float,
) -> dict[str, Any]:
    """Draw one candidate's parameters (a JSON-ready dict; see the module docstring).

    Args:
        rng: the only source of randomness.
        shape: (H, W) of the image (translations are a fraction of it).
        rotate_deg: rotation drawn uniformly in [-rotate_deg, rotate_deg] degrees.
        scale: per-axis scale drawn uniformly in [1 - scale, 1 + scale].
        translate: per-axis shift drawn uniformly in [-translate, translate] x the side.
        flip_axes: axes that may be flipped; flip_prob: probability of each flip.
    """
    flips = [int(a) for a in flip_axes if rng.random() < flip_prob]
    rot = float(rng.uniform(-rotate_deg, rotate_deg))
    sc = [float(s) for s in rng.uniform(1 - scale, 1 + scale, size=2)]
    tr = [float(t) for t in rng.uniform(-translate, translate, size=2) * np.asarray(shape)]
    return {"flip": flips, "rotate_deg": rot, "scale": sc, "translate_px": tr}


@contextmanager
def _plain_tensors() -> Iterator[None]:
    """MONAI transforms on plain tensors (no MetaTensor bookkeeping), restoring the setting."""
    was = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(was)


def apply(
    image: np.ndarray, mask: np.ndarray | None, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply recorded parameters to one item (deterministic).

    Args:
        image: (H,W,C) uint8 or float32.
        mask: (H,W) uint8 class ids, or None.
        params: a dict from :func:`draw`.

    Returns:
        (image (H,W,C) of the input dtype, mask (H,W) uint8 or None).
    """
    with _plain_tensors():
        return _apply(image, mask, params)


def _apply(
    image: np.ndarray, mask: np.ndarray | None, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    img = image
    m = mask
    for ax in params["flip"]:
        img = np.flip(img, axis=ax)
        m = None if m is None else np.flip(m, axis=ax)
    aff = Affine(
        rotate_params=math.radians(params["rotate_deg"]),
        scale_params=list(params["scale"]),
        translate_params=list(params["translate_px"]),
        padding_mode="border",
        image_only=True,
    )
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
    out = np.asarray(aff(x, mode="bilinear")).transpose(1, 2, 0)
    if image.dtype == np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
        out = out.astype(np.float32)
    if m is not None:
        y = torch.from_numpy(np.ascontiguousarray(m[None], dtype=np.float32))
        m = np.rint(np.asarray(aff(y, mode="nearest"))[0]).astype(np.uint8)
    return np.ascontiguousarray(out), m


@GENERATORS.register("classic")
class ClassicAugmentation:
    """Classic augmentation as a generator (see the module docstring).

    Args:
        rotate_deg: maximum absolute rotation in degrees (>= 0).
        scale: maximum relative scale change per axis, in [0, 0.5).
        translate: maximum shift per axis as a fraction of the side, in [0, 0.5).
        flip_axes: image axes that may be flipped (0 up-down, 1 left-right); none by default.
        flip_prob: probability of each allowed flip, in [0, 1].
    """

    name: ClassVar[str] = "classic"

    def __init__(
        self,
        rotate_deg: float = 15.0,
        scale: float = 0.1,
        translate: float = 0.05,
        flip_axes: tuple[int, ...] | list[int] = (),
        flip_prob: float = 0.5,
    ) -> None:
        if not (0 <= rotate_deg <= 180):
            raise ConfigError(f"classic rotate_deg must be in [0, 180], got {rotate_deg!r}.")
        if not (0 <= scale < 0.5):
            raise ConfigError(f"classic scale must be in [0, 0.5), got {scale!r}.")
        if not (0 <= translate < 0.5):
            raise ConfigError(f"classic translate must be in [0, 0.5), got {translate!r}.")
        axes = tuple(int(a) for a in flip_axes)
        if any(a not in (0, 1) for a in axes) or len(set(axes)) != len(axes):
            raise ConfigError(
                f"classic flip_axes must be distinct image axes 0 and/or 1, got {flip_axes!r}."
            )
        if not (0 <= flip_prob <= 1):
            raise ConfigError(f"classic flip_prob must be in [0, 1], got {flip_prob!r}.")
        self.params = {
            "rotate_deg": float(rotate_deg),
            "scale": float(scale),
            "translate": float(translate),
            "flip_axes": axes,
            "flip_prob": float(flip_prob),
        }

    @property
    def checkpoint_hash(self) -> str:
        return params_hash(self.name, self.params)

    def fit(self, data: ImageSet, *, rng: np.random.Generator) -> None:
        """Nothing to learn: classic augmentation has parameters only."""

    def encode(self, images: np.ndarray) -> np.ndarray:
        raise ConfigError(
            "Generator 'classic' has no latent space to encode into; use a bidirectional "
            "generator (e.g. a VAE or flow) for latent codes."
        )

    def propose(self, sources: ImageSet, n: int, *, rng: np.random.Generator) -> Candidates:
        """``n`` augmented copies of each source item, source-major.

        Args:
            sources: S real items with masks (segmentation) and/or image labels.
            n: candidates per source (>= 1).
            rng: draws every parameter dict, in candidate order.

        Returns:
            Candidates of S * n items: images (S*n,H,W,C) of the sources' dtype, inherited masks
            (S*n,H,W) uint8 and/or labels (S*n,), cost ``INHERITED``.
        """
        if int(n) != n or n < 1:
            raise ConfigError(f"classic: candidates per source must be an integer >= 1, got {n!r}.")
        if sources.masks is None and sources.labels is None:
            raise DataError(
                f"{sources.name}: classic augmentation inherits masks or labels, and these "
                "sources have neither; label them first."
            )
        h, w, _ = sources.shape
        total = len(sources) * int(n)
        images = np.empty((total, *sources.images.shape[1:]), sources.images.dtype)
        masks = None if sources.masks is None else np.empty((total, h, w), np.uint8)
        prov: list[Provenance] = []
        with _plain_tensors():
            self._fill(sources, int(n), rng, images, masks, prov)
        labels = None if sources.labels is None else np.repeat(sources.labels, int(n))
        return Candidates(
            images=images,
            provenance=tuple(prov),
            masks=masks,
            labels=labels,
            cost=LabelCost.INHERITED,
            info={"params": {**self.params, "flip_axes": list(self.params["flip_axes"])}},
        )

    def _fill(
        self,
        sources: ImageSet,
        n: int,
        rng: np.random.Generator,
        images: np.ndarray,
        masks: np.ndarray | None,
        prov: list[Provenance],
    ) -> None:
        """Draw and apply each candidate's parameters into the preallocated arrays."""
        h, w, _ = sources.shape
        ckpt = self.checkpoint_hash
        j = 0
        for s in range(len(sources)):
            for _ in range(n):
                p = draw(rng, (h, w), **self.params)
                img, m = _apply(
                    sources.images[s], None if sources.masks is None else sources.masks[s], p
                )
                images[j] = img
                if masks is not None:
                    masks[j] = m
                prov.append(
                    Provenance(
                        source_id=str(sources.ids[s]),
                        source_group=str(sources.groups[s]),
                        generator=self.name,
                        checkpoint=ckpt,
                        perturbation=p,
                    )
                )
                j += 1
