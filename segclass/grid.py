"""The experimental grid of paper 3.3 (Figs. 5-6, Tables 1, D.4, D.5): the one definition.

The sweep, the analysis and the tests all take grid points from here. A grid
point is one trial: (study, dataset, mode, s, c, seed, variant, budget). Its
`key` is deterministic, so a resumed or grown sweep can tell which points
already have a finished run whatever Ray called the trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from segclass.config import BUDGETS, CLASSIFICATION_MODES, SEGMENTATION_MODES, VARIANTS, TrainConfig, study_of
from segclass.errors import ConfigError

#: s values of the segmentation study, as fractions (paper 3.3).
SEG_FRACTIONS = (0.0, 0.01, 0.025, 0.05, 0.075, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50, 0.75, 1.0)
#: c values of the classification study, as fractions (paper 3.3).
CLS_FRACTIONS = (0.0, 0.01, 0.025, 0.05, 0.075, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)
SEEDS = (1, 2, 3, 4, 5)
STUDIES = ("segmentation", "classification")


def percent(fraction: float) -> str:
    """0.025 -> '2.5', 0.05 -> '5', 1.0 -> '100': how the paper writes s and c."""
    return f"{fraction * 100:.4g}"


@dataclass(frozen=True, order=True)
class GridPoint:
    study: str
    dataset: str
    mode: str
    swept_fraction: float  # what the study sweeps: s in the segmentation study, c in the classification study
    seed: int
    variant: str = "paper"
    budget: str = "paper"

    @property
    def seg_fraction(self) -> float:
        return self.swept_fraction if self.study == "segmentation" else 0.0

    @property
    def cls_fraction(self) -> float:
        return self.swept_fraction if self.study == "classification" else 0.0

    @property
    def key(self) -> str:
        """Stable identity of the grid point (an MLflow tag, a folder name)."""
        letter = "s" if self.study == "segmentation" else "c"
        return (f"{self.study}|{self.dataset}|{self.mode}|{letter}={percent(self.swept_fraction)}|seed={self.seed}"
                f"|{self.variant}|{self.budget}")

    @property
    def run_name(self) -> str:
        """Readable name, e.g. 'S+C s=5 seed=2', with variant/budget when not the paper's."""
        letter = "s" if self.study == "segmentation" else "c"
        parts = [f"{self.mode} {letter}={percent(self.swept_fraction)} seed={self.seed}"]
        if self.variant != "paper":
            parts.append(f"variant={self.variant}")
        if self.budget != "paper":
            parts.append(f"budget={self.budget}")
        return " ".join(parts)

    def train_config(self, epochs: int, **overrides) -> TrainConfig:
        return TrainConfig(dataset=self.dataset, mode=self.mode, seg_fraction=self.seg_fraction,
                           cls_fraction=self.cls_fraction, seed=self.seed, variant=self.variant,
                           budget=self.budget, epochs=epochs, **overrides)

    @classmethod
    def from_key(cls, key: str) -> "GridPoint":
        study, dataset, mode, fraction, seed, variant, budget = key.split("|")
        return cls(study, dataset, mode, float(fraction.split("=")[1]) / 100, int(seed.split("=")[1]), variant, budget)


@dataclass(frozen=True)
class Preset:
    """A named grid plus training length; CLI flags override its parts."""

    name: str
    description: str
    epochs: int
    dataset: str = "synthetic"
    studies: tuple[str, ...] = ("segmentation",)
    seg_modes: tuple[str, ...] = SEGMENTATION_MODES
    cls_modes: tuple[str, ...] = CLASSIFICATION_MODES
    seg_fractions: tuple[float, ...] = SEG_FRACTIONS
    cls_fractions: tuple[float, ...] = CLS_FRACTIONS
    seeds: tuple[int, ...] = SEEDS
    variants: tuple[str, ...] = ("paper",)
    budgets: tuple[str, ...] = ("paper",)
    #: extra arms (other variants or budgets at a few s values, or single reference points), as
    #: (mode, fraction, variant, budget); they use the preset's seeds
    extra_arms: tuple[tuple[str, float, str, str], ...] = field(default_factory=tuple)
    #: epochs between trial checkpoints: each one is ~34 MB (weights + Adam state),
    #: so the paper grid (1,170 trials x 100 epochs) checkpoints every 5th epoch
    checkpoint_every: int = 1
    #: epochs between validations (the last is always validated); the paper validates every epoch
    validate_every: int = 1
    #: encoder init, a `--pretrained` value: "imagenet" (the paper's; downloaded once, see docs/sweep.md) or "none"
    #: (random init, so the preset runs offline)
    pretrained: str = "none"

    def points(self) -> list[GridPoint]:
        return expand(self)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description="the paper's full grids (both studies, 14 s and 12 c values, 5 seeds), 100 epochs, encoder "
                    "initialised with torchvision's ImageNet weights as in the paper (downloaded once; offline, "
                    "the error says where to put the file); for a GPU cluster",
        epochs=100, studies=STUDIES, checkpoint_every=5, pretrained="imagenet",
    ),
    "quick": Preset(
        name="quick",
        description="synthetic data at the equal budget (every trial 12 epochs of the same 12 iterations: equal "
                    "optimizer steps, though an S+C step trains on twice the images of an S step; --budgets "
                    "equal-images --modes S adds the image-matched S): S at s = 5 and 100%, S+C and S+C* at s = 5% with the "
                    "paper's head, S+C at s = 5% with the mean-softmax head, 2 seeds (10 trials), validated every "
                    "4th epoch; random init (runs offline); 2 trials at a time on 2 cores (10-23 minutes measured, "
                    "README): give more cores and it runs more at once",
        epochs=12, seg_modes=("S", "S+C", "S+C*"), seg_fractions=(0.05,), seeds=(1, 2), budgets=("equal",),
        extra_arms=(("S", 1.0, "paper", "equal"), ("S+C", 0.05, "mean-softmax", "equal")),
        checkpoint_every=4, validate_every=4,
    ),
    "smoke": Preset(
        name="smoke",
        description="4 trials (S and S+C at s = 25 and 100%, seed 1) of 1 epoch, random init, for tests and a "
                    "first try (a few minutes)",
        epochs=1, seg_modes=("S", "S+C"), seg_fractions=(0.25, 1.0), seeds=(1,),
    ),
}


def expand(preset: Preset) -> list[GridPoint]:
    """All grid points of a preset, in a stable order, without duplicates."""
    points: list[GridPoint] = []
    for study in preset.studies:
        modes = preset.seg_modes if study == "segmentation" else preset.cls_modes
        fractions = preset.seg_fractions if study == "segmentation" else preset.cls_fractions
        for variant in preset.variants:
            for budget in preset.budgets:
                for mode in modes:
                    for fraction in fractions:
                        for seed in preset.seeds:
                            points.append(GridPoint(study, preset.dataset, mode, fraction, seed, variant, budget))
    for mode, fraction, variant, budget in preset.extra_arms:
        study = study_of(mode)
        if study in preset.studies:
            points.extend(GridPoint(study, preset.dataset, mode, fraction, seed, variant, budget)
                          for seed in preset.seeds)
    return list(dict.fromkeys(points))


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def customise(preset: Preset, **changes) -> Preset:
    """A preset with some parts replaced (None leaves a part as it is)."""
    return replace(preset, **{k: v for k, v in changes.items() if v is not None})


def narrow(preset: Preset, *, dataset: str | None = None, studies: tuple[str, ...] | None = None,
           modes: tuple[str, ...] | None = None, fractions: tuple[float, ...] | None = None,
           seeds: tuple[int, ...] | None = None, variants: tuple[str, ...] | None = None,
           budgets: tuple[str, ...] | None = None, epochs: int | None = None,
           validate_every: int | None = None) -> Preset:
    """The preset with the CLI's grid flags applied to the whole grid, extra arms included.

    A flag given means "only these": `--modes S` keeps no S+C arm, `--fractions 100`
    no arm at s = 5%, `--variants paper` no released-code arm. Values are checked
    here, before any Ray or MLflow work, so a typo costs one line, not a sweep.
    """
    _check_values(modes, fractions, seeds, epochs, variants, budgets)
    if validate_every is not None and validate_every < 1:
        raise ConfigError(f"--validate-every must be >= 1, got {validate_every}")
    arms = preset.extra_arms
    if modes is not None:
        arms = tuple(a for a in arms if a[0] in modes)
    if fractions is not None:
        arms = tuple(a for a in arms if any(abs(a[1] - f) < 1e-9 for f in fractions))
    if variants is not None:
        arms = tuple(a for a in arms if a[2] in variants)
    if budgets is not None:
        arms = tuple(a for a in arms if a[3] in budgets)
    seg_modes = tuple(m for m in modes if m in SEGMENTATION_MODES) if modes is not None else None
    cls_modes = tuple(m for m in modes if m in CLASSIFICATION_MODES) if modes is not None else None
    if modes is not None and studies is None:  # modes of one study only: run that study only
        studies = tuple(s for s, ms in (("segmentation", seg_modes), ("classification", cls_modes)) if ms)
    if fractions is not None and any(f > 0.5 for f in fractions) and "classification" in (studies or preset.studies):
        raise ConfigError(f"--fractions {' '.join(percent(f) for f in fractions)}: c is at most 50 in the "
                          "classification study (half the classification patches are held out); run the studies "
                          "separately with --study")
    narrowed = customise(preset, dataset=dataset, studies=studies, seg_modes=seg_modes, cls_modes=cls_modes,
                         seg_fractions=fractions, cls_fractions=fractions, seeds=seeds, variants=variants,
                         budgets=budgets, epochs=epochs, validate_every=validate_every)
    narrowed = replace(narrowed, extra_arms=arms)
    if not expand(narrowed):
        raise ConfigError("the grid flags leave no grid point to run; check --study against --modes")
    return narrowed


def _check_values(modes, fractions, seeds, epochs, variants=None, budgets=None) -> None:
    if modes is not None and not modes:
        raise ConfigError("--modes needs at least one mode")
    for flag, values, known in (("--variants", variants, VARIANTS), ("--budgets", budgets, BUDGETS)):
        for value in values or ():
            if value not in known:
                raise ConfigError(f"{flag} {value}: choose from {', '.join(known)}")
    for fraction in fractions or ():
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"--fractions {percent(fraction)}: s and c are percentages from 0 to 100")
    for seed in seeds or ():
        if seed < 0:
            raise ConfigError(f"--seeds {seed}: seeds are non-negative integers")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs {epochs}: a trial trains at least 1 epoch")

