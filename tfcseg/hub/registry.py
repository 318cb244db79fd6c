"""Named checkpoints, as data: `--model NAME` looks its source up here.

Each entry names where the weights live (the `weights/` folder shipped with tfcseg, or a
Hugging Face Hub repo id), their format, and what a user needs to pick one: classes,
training data, MiT variant, licence. `tfcseg models` prints this table.

Formats:
- `tfcseg`: a tfcseg checkpoint (`config.json` + `model.safetensors`), loaded as it is.
  tfcseg's own VSPW checkpoints are published this way (`tfcseg export --push-to-hub`);
  add an entry per variant here once its repo is public.
- `transformers`: a Hugging Face `transformers` SegFormer repo, converted once with the
  `convert` machinery into tfcseg's cache and reused from there. Such checkpoints have no
  trained TFC modules (`config.tfc_trained` is False).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import TfcsegError

SHIPPED = "shipped"  # `source` of the entry for the model in `weights/`
FORMATS = ("tfcseg", "transformers")

# SegFormer weights carry NVIDIA's own licence: research or evaluation use only.
NVIDIA_LICENCE = "NVIDIA (non-commercial)"
NVIDIA_LICENCE_NOTE = ("NVIDIA Source Code License for SegFormer: non-commercial, research or "
                       "evaluation use only")
NVIDIA_LICENCE_URL = "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"


@dataclass(frozen=True)
class ModelEntry:
    """One named checkpoint.

    `source` is `SHIPPED` (the `weights/` folder) or a Hub repo id; `revision` pins a branch,
    tag or commit of that repo (None = `main`). `num_classes` and `variant` describe the
    published checkpoint (for the shipped one, its `config.json` wins when present).
    """

    name: str
    source: str
    format: str
    dataset: str
    num_classes: int
    variant: str
    licence: str
    revision: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"{self.name}: format must be one of {FORMATS}, not {self.format!r}")
        if self.source != SHIPPED and self.source.count("/") != 1:
            raise ValueError(f"{self.name}: source must be {SHIPPED!r} or a Hub repo id user/repo")

    @property
    def shipped(self) -> bool:
        return self.source == SHIPPED

    @property
    def tfc_trained(self) -> bool:
        """Whether the checkpoint carries trained TFC modules (official SegFormer ones do not)."""
        return self.format == "tfcseg"


def _segformer_entries() -> list[ModelEntry]:
    """NVIDIA's SegFormer B0-B5 fine-tuned on ADE20K (150 classes) and Cityscapes (19)."""
    out = []
    for b in range(6):
        ade_size = "640-640" if b == 5 else "512-512"
        out.append(ModelEntry(
            name=f"segformer-b{b}-ade", source=f"nvidia/segformer-b{b}-finetuned-ade-{ade_size}",
            format="transformers", dataset="ADE20K", num_classes=150, variant=f"b{b}",
            licence=NVIDIA_LICENCE,
            description=f"official SegFormer-B{b}, ADE20K {ade_size.replace('-', 'x')} crops; "
                        "no trained TFC modules",
        ))
    for b in range(6):
        out.append(ModelEntry(
            name=f"segformer-b{b}-cityscapes",
            source=f"nvidia/segformer-b{b}-finetuned-cityscapes-1024-1024",
            format="transformers", dataset="Cityscapes", num_classes=19, variant=f"b{b}",
            licence=NVIDIA_LICENCE,
            description=f"official SegFormer-B{b}, Cityscapes 1024x1024 crops; no trained TFC modules",
        ))
    return out


# The table, in the order `tfcseg models` lists it. tfcseg's VSPW checkpoints join it as
# `ModelEntry(name="tfcseg-vspw-b0", source="<org>/tfcseg-vspw-b0", format="tfcseg",
# dataset="VSPW", num_classes=124, variant="b0", licence=...)` once they are published.
REGISTRY: dict[str, ModelEntry] = {
    e.name: e for e in [
        ModelEntry(
            name="tfcseg-camvid-b0", source=SHIPPED, format="tfcseg", dataset="CamVid",
            num_classes=11, variant="b0", licence="Apache-2.0",
            description="the default model shipped in weights/ (TFC trained on CamVid street video)",
        ),
        *_segformer_entries(),
    ]
}
DEFAULT_NAME = "tfcseg-camvid-b0"


def list_models() -> list[ModelEntry]:
    """All registered checkpoints, in table order."""
    return list(REGISTRY.values())


def get_model_entry(name: str) -> ModelEntry | None:
    """The entry called `name` (case-insensitive), or None."""
    entry = REGISTRY.get(name)
    if entry is None:
        entry = next((e for e in REGISTRY.values() if e.name.lower() == name.lower()), None)
    return entry


def register_model(entry: ModelEntry, *, replace: bool = False) -> None:
    """Add a named checkpoint (e.g. a team's own Hub repo) for this process."""
    if entry.name in REGISTRY and not replace:
        raise TfcsegError(f"{entry.name}: a model of that name is registered already")
    REGISTRY[entry.name] = entry


def unregister_model(name: str) -> None:
    REGISTRY.pop(name, None)


def entry_to_dict(entry: ModelEntry) -> dict:
    return dataclasses.asdict(entry)
