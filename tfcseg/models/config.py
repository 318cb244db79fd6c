"""Model configuration as data: the MiT variant table, TFC options, and their JSON form.

A checkpoint folder holds `config.json` (this dataclass, serialised) beside
`model.safetensors`. Every field has a default, so a config written by an older tfcseg
still loads; unknown fields are an error, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, is_margin, is_power

# The published Mix Transformer configurations (SegFormer, Xie et al. 2021).
# Common to all: patch sizes 7,3,3,3; strides 4,2,2,2; heads 1,2,5,8; sr 8,4,2,1; mlp ratio 4.
VARIANTS: dict[str, dict[str, Any]] = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_dim": 256},
    "b1": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "decoder_dim": 256},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_dim": 768},
    "b3": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "decoder_dim": 768},
    "b4": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 8, 27, 3], "decoder_dim": 768},
    "b5": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3], "decoder_dim": 768},
}

# A checkpoint folder: this config (JSON) and the weights (safetensors).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

INTERPOLATIONS = ("soft", "hard", "fixed", "none")


@dataclass
class TFCOptions:
    """How a non-keyframe is computed (the paper's section 3 and its Table 2 ablations).

    - similarity_level: which projected level x̂^l the cosine similarity uses (2, or 1).
    - interpolation: `soft` ŵ = clamp(w, 0, 1)^interpolation_power; `hard`
      ŵ = 1[w >= msda_threshold]; `fixed` ŵ = fixed_weight everywhere; `none` z'_t = z_t
      (feature reuse only).
    - interpolation_power: p >= 1 of the soft weight (1: the paper's ŵ = clamp(w, 0, 1)).
      p > 1 keeps less of the stale keyframe where the similarity is not near 1 (cosines of
      decoded features are high even where content moved). tfcseg's addition.
    - msda: whether sparse MSDA repairs the points with w < msda_threshold
      (msda_threshold = 1.0 selects every point whose similarity is below 1).
    - msda_gate: a point whose label MSDA changes (against the same point without MSDA, both
      after the interpolation) keeps the change only where the corrected logits' top class
      leads its runner-up by at least msda_gate; elsewhere it keeps the label it has without
      MSDA. 0 keeps every change (the paper's rule). tfcseg's addition: undecided repairs are
      what made MSDA flicker (see weights/README.md).
    - msda_heads / msda_points / msda_levels: Deformable DETR's M, P and L.
    """

    similarity_level: int = 2
    interpolation: str = "soft"
    fixed_weight: float = 0.1
    interpolation_power: float = 1.0
    msda: bool = True
    msda_threshold: float = 0.8
    msda_gate: float = 0.0
    msda_heads: int = 8
    msda_points: int = 4
    msda_levels: int = 4

    def validate(self) -> None:
        if self.similarity_level not in (1, 2):
            raise ValueError(f"similarity_level must be 1 or 2, not {self.similarity_level}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if not 1 <= self.msda_levels <= 4:
            raise ValueError(f"msda_levels must be 1..4, not {self.msda_levels}")
        if not 0.0 <= self.fixed_weight <= 1.0:
            raise ValueError(f"fixed_weight must be in 0..1, not {self.fixed_weight}")
        if not is_power(self.interpolation_power):
            raise ValueError(f"interpolation_power must be a finite number >= 1, not {self.interpolation_power}")
        if not math.isfinite(self.msda_threshold):  # w < threshold: any finite value is usable
            raise ValueError(f"msda_threshold must be a finite number, not {self.msda_threshold}")
        if not is_margin(self.msda_gate):
            raise ValueError(f"msda_gate must be a finite number >= 0 (a logit margin), not {self.msda_gate}")
        if self.msda_heads < 1 or self.msda_points < 1:
            raise ValueError("msda_heads and msda_points must be >= 1")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: architecture, classes, TFC options.

    The architecture fields default to the variant's published values (see `VARIANTS`);
    tests shrink `depths` or `hidden_sizes` to get tiny models of the same structure.
    """

    variant: str = "b0"
    num_classes: int = 150
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] | None = None
    hidden_sizes: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    num_heads: list[int] = field(default_factory=lambda: [1, 2, 5, 8])
    sr_ratios: list[int] = field(default_factory=lambda: [8, 4, 2, 1])
    patch_sizes: list[int] = field(default_factory=lambda: [7, 3, 3, 3])
    strides: list[int] = field(default_factory=lambda: [4, 2, 2, 2])
    mlp_ratio: int = 4
    decoder_dim: int = 0
    # LayerNorm eps inside the transformer blocks and after each stage. The original
    # NVlabs/mmseg MiT uses 1e-6; Hugging Face `transformers` uses PyTorch's default 1e-5,
    # so checkpoints converted from `transformers` keep 1e-5 for exact parity.
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.1
    classifier_dropout: float = 0.1
    # TFC modules present and trained. Official SegFormer checkpoints have none: they run
    # with similarity + interpolation (training-free) and MSDA off.
    tfc_trained: bool = False
    tfc: TFCOptions = field(default_factory=TFCOptions)
    dataset: str | None = None
    # Inference size: frames are resized so their short side is this (aspect kept).
    inference_short_side: int = 480
    # Video sessions' label hysteresis (a logit margin, 0 = off; postprocess.LabelHysteresis):
    # a pixel keeps its previous label unless another class leads it by more. Chosen per model.
    label_hysteresis: float = 0.0
    # Motion-aware hysteresis (tfcseg's addition; 0 = the same margin everywhere): the margin
    # at a point is label_hysteresis * clamp(s, 0, 1)^label_hysteresis_power, s the cosine
    # similarity of the frame's features to the previous frame's there (TFC's similarity,
    # frame to frame): labels are held where the picture stayed, and free where it changed.
    label_hysteresis_power: float = 0.0

    def __post_init__(self) -> None:
        self.variant = self.variant.lower()
        base = VARIANTS.get(self.variant)
        if base is None and not (self.hidden_sizes and self.depths and self.decoder_dim):
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if base is not None:
            self.hidden_sizes = list(self.hidden_sizes or base["hidden_sizes"])
            self.depths = list(self.depths or base["depths"])
            self.decoder_dim = int(self.decoder_dim or base["decoder_dim"])
        if isinstance(self.tfc, dict):
            self.tfc = TFCOptions(**self.tfc)
        self.tfc.validate()
        if not is_margin(self.label_hysteresis):
            raise ValueError(f"label_hysteresis must be a logit margin >= 0, not {self.label_hysteresis}")
        if not is_margin(self.label_hysteresis_power):
            raise ValueError(f"label_hysteresis_power must be a number >= 0, not {self.label_hysteresis_power}")
        self._validate_architecture()
        if not self.class_names:
            self.class_names = [f"class_{i}" for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names given for num_classes={self.num_classes}"
            )
        if self.palette is None:
            from ..io.palette import default_palette

            self.palette = default_palette(self.num_classes)
        if len(self.palette) != self.num_classes:
            raise ValueError(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        self.palette = [[int(c) for c in rgb] for rgb in self.palette]

    def _validate_architecture(self) -> None:
        for name in ("hidden_sizes", "depths", "num_heads", "sr_ratios", "patch_sizes", "strides"):
            values = getattr(self, name)
            if len(values) != 4 or any(int(v) < 1 for v in values):
                raise ValueError(f"{name} must be 4 positive numbers (one per stage), not {values}")
        for i, (dim, heads) in enumerate(zip(self.hidden_sizes, self.num_heads)):
            if dim % heads:
                raise ValueError(f"stage {i + 1}: width {dim} is not divisible by {heads} heads")
        if self.decoder_dim < 1 or self.decoder_dim % self.tfc.msda_heads:
            raise ValueError(f"decoder_dim {self.decoder_dim} is not divisible by "
                             f"msda_heads {self.tfc.msda_heads}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {self.num_classes}")

    # ---- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        # "onnx": what an ONNX export adds beside the config (read by tfcseg.backends)
        unknown = sorted(set(data) - known - {"format", "tfcseg_version", "onnx"})
        if unknown:
            raise CheckpointError(f"{source}: unknown config field(s): {', '.join(unknown)}")
        tfc = data.get("tfc", {})
        tfc_known = {f.name for f in dataclasses.fields(TFCOptions)}
        bad_tfc = sorted(set(tfc) - tfc_known)
        if bad_tfc:
            raise CheckpointError(f"{source}: unknown tfc option(s): {', '.join(bad_tfc)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["tfc"] = TFCOptions(**tfc)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: invalid config: {exc}") from None

    def dumps(self) -> str:
        """The text of `config.json`."""
        from .. import __version__

        data = {"format": "tfcseg", "tfcseg_version": __version__, **self.to_dict()}
        return json.dumps(data, indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        from ..io.atomic import atomic_write_text

        atomic_write_text(Path(path), self.dumps())

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: config.json not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=path)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (`tfc` may be given as a dict of changed options)."""
        tfc = changes.pop("tfc", None)
        new = dataclasses.replace(self, **changes)
        if tfc is not None:
            new.tfc = dataclasses.replace(self.tfc, **tfc) if isinstance(tfc, dict) else tfc
            new.tfc.validate()
            new._validate_architecture()
        return new


def smallest_input(config: ModelConfig) -> int:
    """The smallest input side the encoder accepts: each stage's map must be at least as
    large as its attention reduction (`sr_ratios`). 29 for the published MiT variants."""
    side = 1
    while True:
        h, ok = side, True
        for patch, stride, sr in zip(config.patch_sizes, config.strides, config.sr_ratios):
            h = (h + 2 * (patch // 2) - patch) // stride + 1
            ok = ok and h >= sr
        if ok:
            return side
        side += 1
