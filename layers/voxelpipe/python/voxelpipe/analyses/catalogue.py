"""The analysis catalogue: what can be requested for a study, and how each one runs.

Plain data only: dispatch, the API and the reaper name and resolve analyses without loading
numpy or nibabel (their Lambdas don't ship them). Each analysis's code is imported on its first
run (`Implementation`); its parameters' defaults and outputs are here, and its module reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from voxelpipe.tissues import DEFAULT_MRF_BETA, TISSUES
from voxelpipe.wiring import Runtime

if TYPE_CHECKING:
    import nibabel as nib
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True)
class AnalysisOutput:
    """What an analysis produced.

    `measures` go into results.json; `artifacts` (file name -> bytes) are user-facing, under
    derived/{study_id}/{analysis}/; `intermediates` are for the analyses that require this one
    only (under work/, short-lived), e.g. maps in the canonical grid.
    """

    measures: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)
    intermediates: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisInput:
    """What an analysis sees: the study's volume in canonical RAS orientation, and its context.

    `original_affine` and `original_shape` describe the upload's own grid, for outputs that go
    back to it; `subject` is the pseudonymous subject (age, sex) the uploader declared;
    `requirements` holds the output of every analysis this one requires, by name; `references`
    the registered reference data its parameters name, loaded (e.g. "atlas": a
    voxelpipe.atlases.Atlas).
    """

    image: nib.Nifti1Image | nib.Nifti2Image
    original_orientation: tuple[str, str, str]
    parameters: Mapping[str, Any]
    original_affine: npt.NDArray[np.float64] | None = None
    original_shape: tuple[int, ...] | None = None
    subject: Mapping[str, Any] = field(default_factory=dict)
    requirements: Mapping[str, AnalysisOutput] = field(default_factory=dict)
    references: Mapping[str, Any] = field(default_factory=dict)
    # longitudinal: the subject's earlier study it is compared with (pinned at dispatch).
    prior: PriorStudy | None = None


@dataclass(frozen=True)
class PriorStudy:
    """The subject's earlier study that a `longitudinal` analysis compares this one with.

    Dispatch pins it (the subject's newest earlier COMPLETED study that ran tissue-seg); RunAnalysis
    loads it. `image` is its input volume in canonical RAS orientation (as its own analyses saw
    it), `brain_mask` its tissue-seg brain mask and `regions` its regional label map (None when it
    did not run regional), both in that image's grid; `region_names` maps each label to its name.
    `interval_years` is the time between the two scans from their (shifted) scan dates, None when
    either study has no date.
    """

    study_id: str
    image: nib.Nifti1Image | nib.Nifti2Image
    brain_mask: npt.NDArray[np.bool_]
    regions: npt.NDArray[np.integer[Any]] | None = None
    region_names: Mapping[int, str] = field(default_factory=dict)
    interval_years: float | None = None


@dataclass(frozen=True)
class ReferenceParameter:
    """A parameter of an analysis that names registered reference data (docs/reference-data.md).

    A study gives the data's name as `parameters[analysis][parameter]` (and optionally a version
    as `parameters[analysis][version_parameter]`); registration checks it, dispatch fixes the
    version (messages.ReferencePin), and RunAnalysis loads the files into
    `AnalysisInput.references[parameter]` before the analysis runs. `kind` is one of
    voxelpipe.reference_kinds.ReferenceKind ("atlas", "norms").
    """

    parameter: str
    kind: str
    version_parameter: str


# The reference parameters the catalogue's analyses take: `regional` names an atlas, `normative`
# a norms table. Each analysis's parameters hold both names with None as the default.
ATLAS_REFERENCE = ReferenceParameter("atlas", "atlas", "atlas_version")
NORMS_REFERENCE = ReferenceParameter("norms", "norms", "norms_version")


@dataclass(frozen=True)
class Analysis:
    name: str
    version: str
    runtime: Runtime
    description: str
    run: Callable[[AnalysisInput], AnalysisOutput]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    # A registered model's owner (its tenant, or keys.DEPLOYMENT_OWNER); None for the catalogue's.
    owner: str | None = None
    # Analyses whose output this one reads when the study runs them too: it then runs after them
    # and is given their output among its requirements, but does not make the study run them.
    uses: tuple[str, ...] = ()
    # Parameters that name registered reference data (an atlas, a norms table).
    references: tuple[ReferenceParameter, ...] = ()

    def deployed_runtime(self, gpu_analyses: Collection[str] = ()) -> Runtime:
        """Where a deployment runs it: its own runtime, unless the deployment moved it to the GPU
        workers (CDK context voxelpipe:gpu:gpu_analyses)."""
        return Runtime.GPU if self.name in gpu_analyses else self.runtime

    def describe(self, gpu_analyses: Collection[str] = ()) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.deployed_runtime(gpu_analyses).value,
            "description": self.description,
            "parameters": dict(self.parameters),
            "requires": list(self.requires),
            "uses": list(self.uses),
            "references": [
                {"parameter": r.parameter, "kind": r.kind, "version_parameter": r.version_parameter}
                for r in self.references
            ],
            "outputs": list(self.outputs),
        }


def merged_parameters(analysis: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` overlaid with `given`; a name that is not among the defaults raises ValueError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {analysis} parameters: {', '.join(unknown)}")
    return {**defaults, **given}


@dataclass(frozen=True)
class Implementation:
    """An analysis's run function by module and name, imported on its first call."""

    module: str
    function: str

    def __call__(self, inp: AnalysisInput) -> AnalysisOutput:
        run: Callable[[AnalysisInput], AnalysisOutput] = getattr(import_module(self.module), self.function)
        return run(inp)


# qc (voxelpipe.analyses.qc)
QC_PREVIEWS: tuple[str, ...] = ("preview_axial.png", "preview_coronal.png", "preview_sagittal.png")
QC_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {
        "percentiles": (1, 5, 50, 95, 99),
        "preview_max_px": 512,  # longest side of the largest preview; all three share one mm/pixel
        "display_convention": "radiological",  # or "neurological"
        "background_margin_mm": 10.0,  # gap between the foreground's bounding box and the noise region
    }
)
QC = Analysis(
    name="qc",
    version="1.0.0",
    runtime=Runtime.LAMBDA,
    description=(
        "Header sanity (dimensions, voxel size, field of view, orientation, obliquity, datatype), "
        "intensity statistics, an Otsu foreground mask, SNR and CNR estimates, and three "
        "orthogonal preview PNGs"
    ),
    run=Implementation("voxelpipe.analyses.qc", "run_qc"),
    parameters=QC_PARAMETERS,
    outputs=QC_PREVIEWS,
)

# tissue-seg (voxelpipe.analyses.tissue_seg)
TISSUE_SEG_LABELS_FILE = "labels.nii.gz"
TISSUE_SEG_MASK_FILE = "brain_mask.nii.gz"
# An intermediate (for the analyses that require tissue-seg): the bias-corrected brain, canonical grid.
TISSUE_SEG_BRAIN_T1_FILE = "brain_t1.nii.gz"
TISSUE_SEG_PROBABILITY_FILES: dict[str, str] = {tissue: f"prob_{tissue}.nii.gz" for tissue in TISSUES}
TISSUE_SEG_OVERLAYS: tuple[str, ...] = ("overlay_axial.png", "overlay_coronal.png", "overlay_sagittal.png")
TISSUE_SEG_OUTPUTS: tuple[str, ...] = (
    TISSUE_SEG_LABELS_FILE,
    *TISSUE_SEG_PROBABILITY_FILES.values(),
    TISSUE_SEG_MASK_FILE,
    *TISSUE_SEG_OVERLAYS,
)
TISSUE_SEG_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {
        "skull_stripped": "auto",  # "auto" (detect), true (keep the input's foreground), false (extract)
        "bias_correction": "auto",  # N4: "auto" (apply a field spanning >= min_span: 0), "on", "off"
        "mrf_beta": DEFAULT_MRF_BETA,  # spatial prior strength; 0 turns it off
        "device": "auto",  # "auto" (CUDA when present), "cpu", "cuda"
        "preview_max_px": 512,
        "display_convention": "radiological",  # or "neurological"
    }
)
TISSUE_SEG = Analysis(
    name="tissue-seg",
    version="1.1.0",  # 1.1: N4 (SimpleITK) bias correction instead of the N3-style estimate
    runtime=Runtime.LAMBDA,
    description=(
        "Brain mask (kept when the input is already skull-stripped, else extracted) and GM/WM/CSF "
        "segmentation of a T1-weighted volume: N4 bias correction (SimpleITK), an EM Gaussian mixture "
        "with a mean-field MRF prior; label map, probability maps and brain mask as NIfTI, "
        "overlay previews as PNG"
    ),
    run=Implementation("voxelpipe.analyses.tissue_seg", "run_tissue_seg"),
    parameters=TISSUE_SEG_PARAMETERS,
    outputs=TISSUE_SEG_OUTPUTS,
)

# volumetrics (voxelpipe.analyses.volumetrics)
VOLUMETRICS_MEASURES: tuple[str, ...] = ("gm_ml", "wm_ml", "csf_ml", "tiv_ml", "bpf")
VOLUMETRICS = Analysis(
    name="volumetrics",
    version="1.0.0",
    runtime=Runtime.LAMBDA,
    description=(
        "GM, WM and CSF volumes in mL from tissue-seg's probability maps (partial volume counts), "
        "total intracranial volume estimate and brain parenchymal fraction"
    ),
    run=Implementation("voxelpipe.analyses.volumetrics", "run_volumetrics"),
    parameters={},
    requires=("tissue-seg",),
    outputs=(),
)

# registration (voxelpipe.analyses.registration)
REGISTRATION_FILES: tuple[str, ...] = (
    "affine.tfm",
    "forward_displacement.nii.gz",
    "inverse_displacement.nii.gz",
)  # voxelpipe.registration.TRANSFORM_FILES (checked by a test): SimpleITK loads only where it runs
REGISTRATION_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {"method": "demons"}  # "demons" (diffeomorphic), "bspline" or "affine"
)
REGISTRATION = Analysis(
    name="registration",
    version="1.0.0",
    runtime=Runtime.LAMBDA,
    description=(
        "The MNI ICBM 2009a template registered to the subject's bias-corrected brain (SimpleITK: "
        "affine on mutual information, then diffeomorphic demons): the affine as an ITK transform "
        "and the forward and inverse displacement fields as NIfTI, with the template's GM/WM "
        "overlap with the subject's segmentation as a check"
    ),
    run=Implementation("voxelpipe.analyses.registration", "run_registration"),
    parameters=REGISTRATION_PARAMETERS,
    requires=("tissue-seg",),
    outputs=REGISTRATION_FILES,
)

# regional (voxelpipe.analyses.regional)
REGIONAL_LABELS_FILE = "regions.nii.gz"
REGIONAL_TABLE_FILE = "regions.csv"
REGIONAL_OVERLAYS: tuple[str, ...] = (
    "regions_axial.png",
    "regions_coronal.png",
    "regions_sagittal.png",
)
REGIONAL_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {
        ATLAS_REFERENCE.parameter: None,  # a registered atlas, by name; None: the bundled one
        ATLAS_REFERENCE.version_parameter: None,  # default: its newest READY version at dispatch
        "local_refinement": True,  # hippocampus and amygdala registered again at 1 mm in a box
        "preview_max_px": 512,
        "display_convention": "radiological",  # or "neurological"
    }
)
REGIONAL = Analysis(
    name="regional",
    version="1.0.0",
    runtime=Runtime.LAMBDA,
    description=(
        "Regional volumes in mL (hippocampus, amygdala, thalamus, caudate, putamen, pallidum, "
        "lateral ventricles, frontal/temporal/parietal/occipital grey matter, left and right): an "
        "atlas carried onto the subject by the registration, intersected with tissue-seg's "
        "probabilities; left/right asymmetry, fractions of TIV, the region label map and overlays"
    ),
    run=Implementation("voxelpipe.analyses.regional", "run_regional"),
    parameters=REGIONAL_PARAMETERS,
    requires=("tissue-seg", "registration"),
    outputs=(REGIONAL_LABELS_FILE, REGIONAL_TABLE_FILE, *REGIONAL_OVERLAYS),
    references=(ATLAS_REFERENCE,),
)

# normative (voxelpipe.analyses.normative)
NORMATIVE_PARAMETERS: Mapping[str, Any] = MappingProxyType(
    {
        "reference_table": None,  # a per-study table (CSV text, age bands)
        NORMS_REFERENCE.parameter: None,  # a registered norms table (equations), by name
        NORMS_REFERENCE.version_parameter: None,  # default: its newest READY version at dispatch
        "field_strength_t": None,  # 1.5 or 3: for equations with a field-strength term
        "age": None,
        "sex": None,
    }
)
NORMATIVE = Analysis(
    name="normative",
    version="2.0.0",  # 2.0: registered norms tables (equations with age, sex, TIV, field); regions
    runtime=Runtime.LAMBDA,
    description=(
        "z-scores and percentiles of the tissue volumes (and of regional's region volumes when the "
        "study runs regional) for the subject's age, sex and TIV, against a registered norms table "
        "(parameters.norms; equations, docs/reference-data.md) or a per-study reference table "
        "(parameters.reference_table; CSV: measure,sex,age_min,age_max,mean,sd,source); none is "
        "bundled"
    ),
    run=Implementation("voxelpipe.analyses.normative", "run_normative"),
    parameters=NORMATIVE_PARAMETERS,
    requires=("volumetrics",),
    uses=("regional",),
    references=(NORMS_REFERENCE,),
    outputs=(),
)

# longitudinal (voxelpipe.analyses.longitudinal): the change since the subject's earlier study.
LONGITUDINAL = Analysis(
    name="longitudinal",
    version="1.0.0",
    runtime=Runtime.LAMBDA,
    description=(
        "Change since the subject's earlier study: the two scans registered to each other in a "
        "halfway space, whole-brain and regional change by Jacobian integration (percent and "
        "annualized), with the difference of cross-sectional volumes beside it"
    ),
    run=Implementation("voxelpipe.analyses.longitudinal", "run_longitudinal"),
    parameters={},
    requires=("tissue-seg",),
    uses=("regional",),
    outputs=(),
)
