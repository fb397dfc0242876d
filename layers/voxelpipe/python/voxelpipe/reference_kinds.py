"""The kinds of registered reference data, what each is made of, and how each is checked.

Domain rules only (no AWS): the registry (voxelpipe.references) stores versions and files; this
module says which files a kind has, which facts it must declare, checks uploaded files before a
version becomes READY, and turns stored files into what an analysis gets
(`AnalysisInput.references`).

* `atlas`: a label map (NIfTI, 3-D, integer labels) in a template's space and its label table
  (voxelpipe.atlases.parse_label_table); every value of the map must be in the table. Loaded as a
  voxelpipe.atlases.Atlas. Tenants' admins register their own; operators deployment-wide ones.
* `norms`: a norms table (voxelpipe.analyses.norms.parse_norms_table). Loaded as a
  voxelpipe.analyses.norms.NormsTable.
  Deployment-wide only (operators): a tenant brings its own per study (normative's reference_table).
* `rates`: a healthy-ageing rates table (voxelpipe.ageing_rates.parse_rates_table), for the
  z-scores of a subject's annual change on its timeline. Loaded as a
  voxelpipe.ageing_rates.RatesTable. Deployment-wide only (operators), as norms tables are.

Every kind declares its licence, its citation and whether its licence allows commercial use;
results name them with the version used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from voxelpipe.ageing_rates import RatesError, RatesTable, parse_rates_table
from voxelpipe.analyses.norms import MAX_TABLE_BYTES, NormsError, NormsTable, parse_norms_table
from voxelpipe.atlases.atlas import (
    MAX_LABEL,
    REGIONS,
    Atlas,
    AtlasError,
    AtlasLabel,
    atlas_from_files,
    parse_label_table,
)

__all__ = [
    "KINDS",
    "FileSpec",
    "KindSpec",
    "ReferenceInvalid",
    "ReferenceKind",
    "ReferenceMetadata",
    "check_metadata",
    "materialise",
    "verify_files",
]

MAX_LABEL_MAP_BYTES: Final = 512 * 1024**2  # a 1 mm int16 map is ~14 MB; 0.5 mm float32 ~230 MB
_MAX_LISTED = 20  # values named in an error, at most


class ReferenceKind(StrEnum):
    ATLAS = "atlas"
    NORMS = "norms"
    RATES = "rates"


class ReferenceInvalid(ValueError):
    """Uploaded reference data, or what was declared of it, that cannot be used; the message says
    what and where."""


@dataclass(frozen=True)
class FileSpec:
    filename: str  # the name it is stored under
    max_bytes: int
    description: str


@dataclass(frozen=True)
class KindSpec:
    kind: ReferenceKind
    files: Mapping[str, FileSpec]  # by role
    tenant_owned: bool  # whether a tenant's admin may register one for the tenant
    needs_space: bool  # whether `space` must be declared


KINDS: Final[Mapping[ReferenceKind, KindSpec]] = {
    ReferenceKind.ATLAS: KindSpec(
        ReferenceKind.ATLAS,
        files={
            "label_map": FileSpec(
                "label_map.nii.gz",
                MAX_LABEL_MAP_BYTES,
                "the label map: NIfTI, 3-D, integers",
            ),
            "labels": FileSpec("labels.csv", MAX_TABLE_BYTES, "the label table: CSV index,name[,region]"),
        },
        tenant_owned=True,
        needs_space=True,
    ),
    ReferenceKind.NORMS: KindSpec(
        ReferenceKind.NORMS,
        files={"table": FileSpec("norms.csv", MAX_TABLE_BYTES, "the norms table (voxelpipe.analyses.norms)")},
        tenant_owned=False,
        needs_space=False,
    ),
    ReferenceKind.RATES: KindSpec(
        ReferenceKind.RATES,
        files={"table": FileSpec("rates.csv", MAX_TABLE_BYTES, "the rates table (voxelpipe.ageing_rates)")},
        tenant_owned=False,
        needs_space=False,
    ),
}


class ReferenceMetadata(BaseModel):
    """What every registered reference declares of itself (results carry it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    licence: str = Field(min_length=1, max_length=2000, description="the licence it is used under")
    citation: str = Field(min_length=1, max_length=2000, description="what to cite for it")
    commercial_use: bool = Field(description="whether its licence allows use in a commercial service")
    space: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="atlas: the template space its label map lies in, e.g. MNI152NLin2009aSym",
    )
    description: str | None = Field(default=None, max_length=2000)


def check_metadata(kind: ReferenceKind, metadata: ReferenceMetadata) -> None:
    """ReferenceInvalid when the kind needs a field the metadata lacks, or refuses one it has."""
    spec = KINDS[kind]
    if spec.needs_space and not (metadata.space and metadata.space.strip()):
        raise ReferenceInvalid(f"an {kind} must declare its space (the template its label map lies in)")
    if not spec.needs_space and metadata.space is not None:
        raise ReferenceInvalid(f"a {kind} table has no space")
    if not metadata.licence.strip() or not metadata.citation.strip():
        raise ReferenceInvalid("licence and citation must not be blank")


def _text(data: bytes, role: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReferenceInvalid(f"{role}: not UTF-8 text ({error})") from None


def _listed(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else "")


def check_label_map(data: bytes, labels: Mapping[int, AtlasLabel]) -> dict[str, Any]:
    """What the label map holds; ReferenceInvalid unless nibabel reads it as a 3-D map of integer
    labels (0 the background) whose every value is in `labels`."""
    import numpy as np

    from voxelpipe.nifti import NiftiError, load_nifti
    from voxelpipe.volume import voxel_sizes

    try:
        image = load_nifti(data)
        values = np.asarray(image.dataobj)
    except (NiftiError, ValueError, OSError) as error:
        raise ReferenceInvalid(f"label_map: not a NIfTI image nibabel reads ({error})") from None
    shape = tuple(int(n) for n in image.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise ReferenceInvalid(f"label_map: a 3-D map is needed, this one is {'x'.join(map(str, shape))}")
    zooms = [float(z) for z in voxel_sizes(image.affine)]
    if abs(float(np.linalg.det(np.asarray(image.affine)[:3, :3]))) <= 0:
        raise ReferenceInvalid("label_map: its affine is singular (no voxel size)")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise ReferenceInvalid("label_map: NaN or infinite values")
        if not np.array_equal(values, np.round(values)):
            raise ReferenceInvalid("label_map: not integer labels (fractional values: a probability map?)")
    elif values.dtype.kind not in "iub":
        raise ReferenceInvalid(f"label_map: data type {values.dtype} is not integer labels")
    present = [int(v) for v in np.unique(values)]
    if present and (present[0] < 0 or present[-1] > MAX_LABEL):
        raise ReferenceInvalid(f"label_map: labels must lie in 0..{MAX_LABEL} (0 the background)")
    in_map = [v for v in present if v != 0]
    missing = [v for v in in_map if v not in labels]
    if missing:
        raise ReferenceInvalid(f"label_map: values not in the label table: {_listed(missing)}")
    absent = sorted(set(labels) - set(in_map))
    mapped = {label.region for index, label in labels.items() if label.region and index in in_map}
    return {
        "shape": list(shape[:3]),
        "voxel_size_mm": [round(z, 4) for z in zooms],
        "labels": len(labels),
        "labels_in_map": len(in_map),
        "labels_not_in_map": absent[:_MAX_LISTED],
        "regions": [key for key in REGIONS if key in mapped],
        "regions_missing": [key for key in REGIONS if key not in mapped],
    }


def verify_files(kind: ReferenceKind, files: Mapping[str, bytes]) -> dict[str, Any]:
    """Check a version's uploaded files (by role); what they hold, for the record, or
    ReferenceInvalid saying what is wrong."""
    expected = set(KINDS[kind].files)
    if set(files) != expected:
        raise ReferenceInvalid(f"a {kind} has the files {', '.join(sorted(expected))}")
    if kind == ReferenceKind.ATLAS:
        try:
            labels = parse_label_table(_text(files["labels"], "labels"))
        except AtlasError as error:
            raise ReferenceInvalid(f"labels: {error}") from None
        return check_label_map(files["label_map"], labels)
    if kind == ReferenceKind.RATES:
        try:
            rates = parse_rates_table(_text(files["table"], "table"))
        except RatesError as error:
            raise ReferenceInvalid(f"table: {error}") from None
        return {"rows": len(rates.rows), "measures": list(rates.measures), "sources": list(rates.sources)}
    try:
        table = parse_norms_table(_text(files["table"], "table"))
    except NormsError as error:
        raise ReferenceInvalid(f"table: {error}") from None
    return {"rows": len(table.rows), "measures": list(table.measures), "sources": list(table.sources)}


def materialise(
    kind: ReferenceKind,
    files: Mapping[str, bytes],
    *,
    name: str,
    version: int,
    metadata: ReferenceMetadata,
    provenance: Mapping[str, Any],
) -> Atlas | NormsTable | RatesTable:
    """What an analysis gets of a verified version: an Atlas, or a NormsTable (a RatesTable)
    carrying `provenance` (name, version, scope, licence, citation, ...)."""
    if kind == ReferenceKind.ATLAS:
        assert metadata.space is not None, "an atlas declares its space (check_metadata)"
        return atlas_from_files(
            files["label_map"],
            _text(files["labels"], "labels"),
            name=name,
            version=str(version),
            space=metadata.space,
            licence=metadata.licence,
            citation=metadata.citation,
            commercial_use=metadata.commercial_use,
        )
    if kind == ReferenceKind.RATES:
        rates = parse_rates_table(_text(files["table"], "table"))
        return RatesTable(rows=rates.rows, provenance=dict(provenance))
    table = parse_norms_table(_text(files["table"], "table"))
    return NormsTable(rows=table.rows, provenance=dict(provenance))
