"""A registered model's spec (SPEC.json): what it expects (grid, intensities, windows) and what it
produces (its `kind`: a label map, named scalars with units, or class probabilities).

Users write SPEC.json by hand, so every field is checked with a message that names it; see
docs/models.md for the format. Importing this module needs pydantic only (the API uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from voxelpipe.wiring import Runtime

ModelFormat = Literal["torchscript", "onnx"]
ModelKind = Literal["segmentation", "regression", "classification"]
PositiveMm = Annotated[float, Field(gt=0, le=100)]
PatchEdge = Annotated[int, Field(ge=1, le=1024)]

# The file name of a model of each format, under models/{owner}/{name}/{version}/.
MODEL_FILES: dict[str, str] = {"torchscript": "model.pt", "onnx": "model.onnx"}
LABELS_FILE = "labels.nii.gz"  # a segmentation model's label map, under derived/{study_id}/model:NAME/
Shape3 = tuple[int, int, int]
_AXES = ({"R", "L"}, {"A", "P"}, {"S", "I"})
MAX_LABELS = 32767  # label maps are int16 above 255 labels
MAX_SCALARS = 1024  # a regression model's outputs, a classification model's classes
# The largest model file that may run on the Lambda runtime (RunAnalysis, 10240 MB). Loading a
# TorchScript file from its bytes peaks at about 4x its size (measured: +350 MB of RSS for 100 MB,
# +1550 MB for 400 MB), so 256 MiB costs ~1 GB, a tenth of the function's memory: the rest is left
# for the volume, its preprocessing and the network's activations on a whole volume.
MAX_LAMBDA_MODEL_BYTES = 256 * 1024**2
# A regression output's name (and its gap's): a key of results.json, snake_case.
SCALAR_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
# The brain-age convention: an output of this name compares to the subject's age by default, and its
# gap keeps the literature's name (the "brain age gap", predicted minus chronological age).
BRAIN_AGE_OUTPUT = "brain_age_years"
BRAIN_AGE_GAP = "brain_age_gap"
# What `compare_to` may name: a field of the study's subject, with the unit its values are in.
SUBJECT_FIELD_UNITS: dict[str, str] = {"age": "years"}
# The fields each kind does not use: refused when given, left out of the spec's JSON.
_SEGMENTATION_ONLY = ("patch_size", "overlap", "blend", "sw_batch_size", "labels")
_NOT_FOR_KIND: dict[str, tuple[str, ...]] = {
    "segmentation": ("input_shape", "outputs", "classes", "scores"),
    "regression": (*_SEGMENTATION_ONLY, "classes", "scores"),
    "classification": (*_SEGMENTATION_ONLY, "outputs"),
}


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


class RegressionOutput(BaseModel):
    """One scalar a regression model outputs: its name and unit, and optionally the subject field
    it is compared to (`compare_to`), whose difference the result carries as `gap_name`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=SCALAR_NAME_PATTERN, description="snake_case, e.g. brain_age_years")
    unit: str = Field(min_length=1, max_length=32, description="e.g. years, mL, mm")
    compare_to: Literal["age"] | None = Field(
        default=None,
        description="a field of the study's subject, in this output's unit: when the study declares "
        "it, the result also carries gap_name = predicted - that value",
    )
    gap_name: str | None = Field(
        default=None, pattern=SCALAR_NAME_PATTERN, description="default: NAME_gap (brain_age_gap)"
    )

    @model_validator(mode="before")
    @classmethod
    def _brain_age_convention(cls, data: Any) -> Any:
        # brain_age_years compares to the subject's age unless the spec says otherwise
        # (`"compare_to": null` turns it off); its gap is the brain age gap.
        if isinstance(data, dict) and data.get("name") == BRAIN_AGE_OUTPUT and "compare_to" not in data:
            data = {**data, "compare_to": "age"}
        return data

    @field_validator("unit")
    @classmethod
    def _unit(cls, unit: str) -> str:
        if not unit.strip():
            raise ValueError("unit must not be blank")
        return unit.strip()

    @model_validator(mode="after")
    def _consistent(self) -> RegressionOutput:
        if self.compare_to is None:
            if self.gap_name is not None:
                raise ValueError("gap_name needs compare_to")
            return self
        expected = SUBJECT_FIELD_UNITS[self.compare_to]
        if self.unit != expected:
            raise ValueError(
                f"{self.name} is compared to the subject's {self.compare_to}, which is in {expected}; "
                f"its unit is {self.unit!r}"
            )
        return self

    @property
    def gap(self) -> str | None:
        """The name of this output's gap in results, None if it is compared to nothing."""
        if self.compare_to is None:
            return None
        if self.gap_name is not None:
            return self.gap_name
        return BRAIN_AGE_GAP if self.name == BRAIN_AGE_OUTPUT else f"{self.name}_gap"

    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


def _kind(info: ValidationInfo) -> str | None:
    """The spec's kind, to a field validator (None when the kind itself was invalid)."""
    kind = info.data.get("kind")
    return kind if isinstance(kind, str) else None


class ModelSpec(BaseModel):
    """What a model expects and produces. `format` and `spacing_mm` are always required; a
    segmentation model (the default kind) also needs `patch_size` and `labels`, a regression model
    `outputs`, a classification model `classes`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: ModelFormat
    # Declared before the fields that depend on it: their validators read it.
    kind: ModelKind = Field(
        default="segmentation",
        description="segmentation: a label map; regression: named scalars with units; "
        "classification: class probabilities",
    )
    runtime: Runtime = Field(
        default=Runtime.GPU,
        description="gpu: the GPU workers; lambda: the RunAnalysis Lambda, on its CPUs (small models only)",
    )
    spacing_mm: tuple[PositiveMm, PositiveMm, PositiveMm] = Field(
        description="voxel size (mm) of the grid the network expects, along its voxel axes"
    )
    orientation: str = Field(
        default="RAS", description="axis codes the voxel axes point towards, e.g. RAS or LPS"
    )
    normalization: Normalization = Field(default_factory=Normalization)
    patch_size: tuple[PatchEdge, PatchEdge, PatchEdge] | None = Field(
        default=None, validate_default=True, description="segmentation: the sliding window's edges"
    )
    overlap: float = Field(default=0.25, ge=0, lt=1, description="fraction of a window shared with the next")
    labels: dict[int, str] = Field(
        default_factory=dict,
        validate_default=True,
        description="segmentation: output channel -> label name; 0 is the background",
    )
    in_channels: Literal[1] = 1
    precision: Literal["float32", "bfloat16"] = Field(
        default="float32", description="bfloat16 allows bf16 autocast on CUDA (never on the CPU)"
    )
    blend: Literal["gaussian", "constant"] = "gaussian"
    sw_batch_size: int = Field(default=4, ge=1, le=512, description="windows per forward pass")
    input_shape: tuple[PatchEdge, PatchEdge, PatchEdge] | None = Field(
        default=None,
        description="regression, classification: the volume on the model's grid is centre-cropped or "
        "zero-padded to this shape; without it the network takes the volume's own shape",
    )
    outputs: tuple[RegressionOutput, ...] | None = Field(
        default=None, validate_default=True, description="regression: one per value the network outputs"
    )
    classes: tuple[str, ...] | None = Field(
        default=None, validate_default=True, description="classification: one name per network output"
    )
    scores: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="classification: what the network outputs (logits are turned into probabilities "
        "by a softmax)",
    )

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

    @field_validator("patch_size")
    @classmethod
    def _patch_for_kind(cls, value: Shape3 | None, info: ValidationInfo) -> Shape3 | None:
        kind = _kind(info)
        if kind == "segmentation" and value is None:
            raise ValueError("a segmentation model needs patch_size: the sliding window's three edges")
        if kind not in (None, "segmentation") and value is not None:
            raise ValueError(_segmentation_only("patch_size", kind))
        return value

    @field_validator("overlap", "blend", "sw_batch_size")
    @classmethod
    def _windows_only(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for a field the spec gives (these have defaults and no validate_default).
        kind = _kind(info)
        if kind not in (None, "segmentation"):
            raise ValueError(_segmentation_only(str(info.field_name), kind))
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[int, str], info: ValidationInfo) -> dict[int, str]:
        kind = _kind(info)
        if kind is None:
            return labels
        if kind != "segmentation":
            if labels:
                raise ValueError(_segmentation_only("labels", kind))
            return labels
        if not labels:
            raise ValueError("a segmentation model needs labels: output channel -> name, 0 the background")
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

    @field_validator("input_shape")
    @classmethod
    def _whole_volume_only(cls, value: Shape3 | None, info: ValidationInfo) -> Shape3 | None:
        if value is not None and _kind(info) == "segmentation":
            raise ValueError(
                "input_shape applies to whole-volume models (regression, classification); "
                "a segmentation model runs windows of patch_size"
            )
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs(
        cls, outputs: tuple[RegressionOutput, ...] | None, info: ValidationInfo
    ) -> tuple[RegressionOutput, ...] | None:
        kind = _kind(info)
        if kind is None:
            return outputs
        if kind != "regression":
            if outputs is not None:
                raise ValueError(f"outputs are a regression model's; this one is a {kind} model")
            return outputs
        if not outputs:
            raise ValueError(
                'a regression model needs outputs: [{"name": ..., "unit": ...}], one per value the '
                "network outputs"
            )
        if len(outputs) > MAX_SCALARS:
            raise ValueError(f"at most {MAX_SCALARS} outputs")
        names = [output.name for output in outputs] + [o.gap for o in outputs if o.gap is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"output names (and their gaps' names) must be unique: {', '.join(duplicates)}")
        return outputs

    @field_validator("classes")
    @classmethod
    def _classes(cls, classes: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        kind = _kind(info)
        if kind is None:
            return classes
        if kind != "classification":
            if classes is not None:
                raise ValueError(f"classes are a classification model's; this one is a {kind} model")
            return classes
        if classes is None or len(classes) < 2:
            raise ValueError("a classification model needs classes: at least two names, one per output")
        if len(classes) > MAX_SCALARS:
            raise ValueError(f"at most {MAX_SCALARS} classes")
        names = tuple(name.strip() for name in classes)
        if any(not name for name in names):
            raise ValueError("every class needs a name")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique: {', '.join(duplicates)}")
        return names

    @field_validator("scores")
    @classmethod
    def _scores(cls, value: str, info: ValidationInfo) -> str:
        kind = _kind(info)
        if kind not in (None, "classification"):
            raise ValueError(f"scores applies to classification models; this one is a {kind} model")
        return value

    @model_serializer(mode="wrap")
    def _what_applies(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The fields of its kind only: a segmentation spec's JSON is what it was before kinds,
        plus `kind` and `runtime`."""
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if key not in _NOT_FOR_KIND[self.kind]}

    @property
    def out_channels(self) -> int:
        """Values the network outputs: per voxel, one per label (segmentation); per volume, one per
        output (regression) or class (classification)."""
        if self.kind == "regression":
            assert self.outputs is not None
            return len(self.outputs)
        if self.kind == "classification":
            assert self.classes is not None
            return len(self.classes)
        return len(self.labels)

    @property
    def window(self) -> Shape3:
        """A segmentation model's sliding window (patch_size)."""
        if self.patch_size is None:
            raise ValueError(f"a {self.kind} model has no sliding window")
        return self.patch_size

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.format]


def _segmentation_only(field: str, kind: str) -> str:
    declares = "outputs" if kind == "regression" else "classes"
    return (
        f"{field} applies to segmentation models only; a {kind} model takes the whole volume "
        f"(see input_shape) and declares {declares}"
    )


def lambda_size_problem(spec: ModelSpec, size: int) -> str | None:
    """Why a model file of `size` bytes cannot run as the spec says, or None if it can."""
    if spec.runtime == Runtime.LAMBDA and size > MAX_LAMBDA_MODEL_BYTES:
        return (
            f"runtime lambda takes model files up to {MAX_LAMBDA_MODEL_BYTES // 1024**2} MiB; this one is "
            f"{size / 1024**2:.1f} MiB: register it with runtime gpu"
        )
    return None


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
