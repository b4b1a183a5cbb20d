"""Macenko stain normalization to one reference image (paper 2.3).

The stain-vector estimation itself is torchstain's maintained numpy
implementation. What this module adds is what a pipeline needs around it:
images with too little stained tissue to estimate two stain vectors raise a
named error instead of returning garbage, and `StainNormalizer.normalize_many`
counts such failures and keeps those images unnormalized, so a build can
report them rather than skip them silently.

A fitted reference travels with every trained model (`state`/`from_state`), so
prediction on new slides sees the colours the network was trained on. A whole
slide is never normalized band by band with per-band stain estimates (bands
would disagree); its stain vectors are estimated once (`estimate_stains`, on a
thumbnail) and every band is mapped with them (`normalize_with`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from segclass.errors import SegclassError

log = logging.getLogger(__name__)

#: Transmitted light intensity and the optical-density floor below which a pixel is glass.
LIGHT_INTENSITY = 240
OD_THRESHOLD = 0.15
#: Fewer stained pixels than this and the two-stain plane is not estimable.
MIN_TISSUE_PIXELS = 200


class StainNormalizationError(SegclassError):
    """Stain vectors cannot be estimated (too little tissue, degenerate colours)."""


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """N x 3 optical densities of an RGB image's pixels (Beer-Lambert, as torchstain's Macenko computes them)."""
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / LIGHT_INTENSITY)


def stained_pixel_count(rgb: np.ndarray) -> int:
    return int((~np.any(optical_density(rgb) < OD_THRESHOLD, axis=1)).sum())


@dataclass
class StainNormalizer:
    """Fitted once to a reference image, then applied to every image."""

    reference_name: str = ""
    failures: list[str] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

        self._macenko = NumpyMacenkoNormalizer()
        self._fitted = False

    def fit(self, reference: np.ndarray, name: str = "reference") -> "StainNormalizer":
        self._check(reference, name)
        with np.errstate(all="raise"):
            try:
                self._macenko.fit(reference, Io=LIGHT_INTENSITY, beta=OD_THRESHOLD)
            except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
                raise StainNormalizationError(f"cannot estimate stain vectors of reference {name}: {exc}") from exc
        self.reference_name, self._fitted = name, True
        return self

    def normalize(self, rgb: np.ndarray, name: str = "image") -> np.ndarray:
        """Normalized copy of `rgb`; raises StainNormalizationError when it cannot be done."""
        if not self._fitted:
            raise StainNormalizationError("StainNormalizer.fit must be called with a reference image first")
        self._check(rgb, name)
        try:
            with np.errstate(all="raise"):
                normalized, _, _ = self._macenko.normalize(rgb, Io=LIGHT_INTENSITY, beta=OD_THRESHOLD, stains=False)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
            raise StainNormalizationError(f"stain normalization of {name} failed: {exc}") from exc
        return normalized

    def state(self) -> dict:
        """The fitted reference as plain lists (stored in manifests and checkpoints)."""
        if not self._fitted:
            raise StainNormalizationError("StainNormalizer.fit must be called before state()")
        return {"reference": self.reference_name, "stain_matrix": self._macenko.HERef.tolist(),
                "max_concentrations": self._macenko.maxCRef.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "StainNormalizer":
        normalizer = cls(reference_name=state.get("reference", ""))
        normalizer._macenko.HERef = np.asarray(state["stain_matrix"], np.float64)
        normalizer._macenko.maxCRef = np.asarray(state["max_concentrations"], np.float64)
        normalizer._fitted = True
        return normalizer

    def normalize_with(self, rgb: np.ndarray, source: "SourceStains") -> np.ndarray:
        """Map `rgb` to the reference using stain vectors estimated elsewhere (the whole slide).

        The algebra of torchstain's Macenko `normalize`, minus its per-image
        estimate, written pixel by pixel (the 2 x 3 pseudo-inverse instead of
        a least-squares solve over all pixels at once): each output pixel then
        depends on its input pixel alone, so a slide mapped band by band
        (prediction) equals the same image mapped whole (the data build).
        """
        if not self._fitted:
            raise StainNormalizationError("StainNormalizer.fit must be called with a reference image first")
        height, width, _ = rgb.shape
        density = optical_density(rgb)
        unmix = np.linalg.pinv(source.stain_matrix)  # 2 x 3: optical density -> concentrations
        scale = source.max_concentrations / self._macenko.maxCRef
        hema, eosin = (sum(unmix[k, c] * density[:, c] for c in range(3)) / scale[k] for k in range(2))
        out = np.empty((height * width, 3), np.uint8)
        for channel in range(3):
            mixed = self._macenko.HERef[channel, 0] * hema + self._macenko.HERef[channel, 1] * eosin
            out[:, channel] = np.minimum(LIGHT_INTENSITY * np.exp(-mixed), 255)
        return out.reshape(height, width, 3)

    def normalize_many(self, images: np.ndarray, names: list[str] | None = None) -> np.ndarray:
        """Normalize a stack; images that fail are kept as they are and recorded in `failures`."""
        out = images.copy()
        for index, image in enumerate(images):
            name = names[index] if names else f"#{index}"
            self.attempts += 1
            try:
                out[index] = self.normalize(image, name)
            except StainNormalizationError as exc:
                self.failures.append(name)
                log.debug("%s", exc)
        return out

    def report(self) -> dict:
        return {"reference": self.reference_name, "attempts": self.attempts, "failures": len(self.failures),
                "failed_examples": self.failures[:20]}

    @staticmethod
    def _check(rgb: np.ndarray, name: str) -> None:
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise StainNormalizationError(f"{name}: expected an H x W x 3 uint8 image, got {rgb.shape} {rgb.dtype}")
        if stained_pixel_count(rgb) < MIN_TISSUE_PIXELS:
            raise StainNormalizationError(
                f"{name}: fewer than {MIN_TISSUE_PIXELS} stained pixels, too little tissue to estimate stain vectors"
            )


@dataclass(frozen=True)
class SourceStains:
    """Stain vectors and 99th-percentile concentrations of one image or slide."""

    stain_matrix: np.ndarray  # 3 x 2 optical-density directions of haematoxylin and eosin
    max_concentrations: np.ndarray  # 2


def estimate_stains(rgb: np.ndarray, name: str = "image") -> SourceStains:
    """Macenko stain vectors of `rgb` (a slide's thumbnail, say), by torchstain's estimator."""
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    StainNormalizer._check(rgb, name)
    estimator = NumpyMacenkoNormalizer()
    with np.errstate(all="raise"):
        try:
            estimator.fit(rgb, Io=LIGHT_INTENSITY, beta=OD_THRESHOLD)
        except (FloatingPointError, np.linalg.LinAlgError, ValueError) as exc:
            raise StainNormalizationError(f"cannot estimate stain vectors of {name}: {exc}") from exc
    return SourceStains(np.asarray(estimator.HERef, np.float64), np.asarray(estimator.maxCRef, np.float64))


def pick_reference(images: list[np.ndarray]) -> int:
    """Index of the training image with the most stained tissue: a stable reference."""
    return int(np.argmax([stained_pixel_count(image) for image in images]))
