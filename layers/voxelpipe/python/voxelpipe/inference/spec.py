"""A registered model's input spec (SPEC.json): what grid, intensities and windows it expects.

Users write SPEC.json by hand, so every field is checked with a message that names it; see
docs/models.md for the format. Importing this module needs pydantic only (the API uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ModelFormat = Literal["torchscript", "onnx"]
PositiveMm = Annotated[float, Field(gt=0, le=100)]
PatchEdge = Annotated[int, Field(ge=1, le=1024)]

# The file name of a model of each format, under models/{owner}/{name}/{version}/.
MODEL_FILES: dict[str, str] = {"torchscript": "model.pt", "onnx": "model.onnx"}
_AXES = ({"R", "L"}, {"A", "P"}, {"S", "I"})
MAX_LABELS = 32767  # label maps are int16 above 255 labels


class Normalization(BaseModel):
    """How intensities are scaled before the network sees them.

    * `zscore`: (x - mean) / std, the statistics over the foreground (voxels != 0) when
      `nonzero` is true (background stays 0), else over the whole volume;
    * `minmax`: linearly to [0, 1] between the volume's minimum and maximum;
    * `window`: clipped to `window` = [low, high] (e.g. CT Hounsfield units), then to [0, 1];
    * `none`: as stored.

    `clip_percentiles` = [low, high] (0-100) clips intensities to those percentiles first (of the
    foreground when `nonzero`), for zscore and minmax.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["zscore", "minmax", "window", "none"] = "zscore"
    nonzero: bool = True
    clip_percentiles: tuple[float, float] | None = None
    window: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Normalization:
        if self.method == "window":
            if self.window is None:
                raise ValueError("method 'window' needs window: [low, high]")
            if not self.window[0] < self.window[1]:
                raise ValueError("window must be [low, high] with low < high")
        elif self.window is not None:
            raise ValueError(f"window applies to method 'window' only, not {self.method!r}")
        if self.clip_percentiles is not None:
            if self.method not in ("zscore", "minmax"):
                raise ValueError("clip_percentiles applies to methods 'zscore' and 'minmax' only")
            low, high = self.clip_percentiles
            if not 0 <= low < high <= 100:
                raise ValueError("clip_percentiles must be [low, high] with 0 <= low < high <= 100")
        return self


class ModelSpec(BaseModel):
    """What a model expects and produces; every field but `format`, `spacing_mm`, `patch_size` and
    `labels` has a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: ModelFormat
    spacing_mm: tuple[PositiveMm, PositiveMm, PositiveMm] = Field(
        description="voxel size (mm) of the grid the network expects, along its voxel axes"
    )
    orientation: str = Field(
        default="RAS", description="axis codes the voxel axes point towards, e.g. RAS or LPS"
    )
    normalization: Normalization = Field(default_factory=Normalization)
    patch_size: tuple[PatchEdge, PatchEdge, PatchEdge]
    overlap: float = Field(default=0.25, ge=0, lt=1, description="fraction of a window shared with the next")
    labels: dict[int, str] = Field(description="output channel -> label name; 0 is the background")
    in_channels: Literal[1] = 1
    precision: Literal["float32", "bfloat16"] = Field(
        default="float32", description="bfloat16 allows bf16 autocast on CUDA (never on the CPU)"
    )
    blend: Literal["gaussian", "constant"] = "gaussian"
    sw_batch_size: int = Field(default=4, ge=1, le=512, description="windows per forward pass")

    @field_validator("spacing_mm", "patch_size", mode="before")
    @classmethod
    def _three_values(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) != 3:
            raise ValueError(f"needs 3 values, one per voxel axis; got {len(value)}")
        return value

    @field_validator("orientation")
    @classmethod
    def _orientation(cls, value: str) -> str:
        codes = value.upper()
        if len(codes) != 3 or any(sum(code in axis for code in codes) != 1 for axis in _AXES):
            raise ValueError(
                f"{value!r} is not three axis codes naming each axis once (R/L, A/P, S/I), e.g. 'RAS'"
            )
        return codes

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[int, str]) -> dict[int, str]:
        if sorted(labels) != list(range(len(labels))):
            raise ValueError(
                "labels must be numbered 0, 1, ..., n-1 (one per output channel), 0 the background"
            )
        if len(labels) < 2:
            raise ValueError("labels need the background (0) and at least one more")
        if len(labels) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        names = [name.strip() for name in labels.values()]
        if any(not name for name in names):
            raise ValueError("every label needs a name")
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        return {index: labels[index].strip() for index in sorted(labels)}

    @property
    def out_channels(self) -> int:
        return len(self.labels)

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.format]


class InvalidSpec(ValueError):
    """A SPEC.json that is not a valid ModelSpec; `errors` name each field and what is wrong."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field'] or 'spec'}: {e['message']}" for e in errors))
        self.errors = errors


def parse_spec(data: str | bytes | dict[str, Any]) -> ModelSpec:
    """A ModelSpec from JSON text or a dict; InvalidSpec lists what is wrong, field by field."""
    try:
        if isinstance(data, dict):
            return ModelSpec.model_validate(data)
        return ModelSpec.model_validate_json(data)
    except ValidationError as error:
        raise InvalidSpec(
            [
                {
                    "field": ".".join(str(p) for p in e["loc"]),
                    "message": e["msg"].removeprefix("Value error, "),
                }
                for e in error.errors()
            ]
        ) from error


MANIFEST_FILE = "model.json"  # beside the model file; written when the upload is verified


class ModelManifest(BaseModel):
    """What the workers read to load a model version: written once its upload is verified, so
    its presence means the version is READY (workers need the bucket only, not the registry)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    name: str
    version: str
    spec: ModelSpec
    sha256: str
    size: int

    @property
    def analysis(self) -> str:
        return analysis_name(self.name)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.owner, self.name, self.version)


@dataclass(frozen=True)
class ModelRef:
    """One version of one owner's model: what dispatch chose and a worker loads, exactly."""

    owner: str  # the tenant that registered it, or keys.DEPLOYMENT_OWNER
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} version {self.version} of {self.owner}"


ANALYSIS_PREFIX = "model:"


def analysis_name(model: str) -> str:
    """The analysis that runs a registered model: `model:NAME`."""
    return ANALYSIS_PREFIX + model


def model_name(analysis: str) -> str | None:
    """NAME of a `model:NAME` analysis; None for any other analysis name."""
    return analysis.removeprefix(ANALYSIS_PREFIX) if analysis.startswith(ANALYSIS_PREFIX) else None
