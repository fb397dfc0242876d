"""A Comprehensive 3D SR (highdicom) with a TID 1500 Measurement Report of a study's results.

Every volume, z-score and centile in results.json becomes a numeric measurement (TID 300):

* volumetrics' gm_ml, wm_ml, csf_ml: a Volume (SCT 118565006) in ml (UCUM), in a volumetric ROI
  group (TID 1411) referencing the tissue SEG's segment; tiv_ml in a group of its own (TID 1501:
  the brain mask is the union of the three segments, no one segment);
* regional's regions: volume_ml (Volume) and label_ml (Volume, method "Sum of segmented voxel
  method for volume", DCM 126030) in a group referencing the region SEG's segment; each
  structure's left + right total_ml in a TID 1501 group typed by the structure;
* normative's scores: the z-score (DCM 121416 "Z-Score of measurement", unit "1") and the centile
  (DCM 121415 "Percentile Ranking of measurement", unit "%") in the group of the volume they
  score (a region's scores are of its volume_ml).

Each measurement names the analysis (and version) that produced it (TID 4019 algorithm
identification); the observer is the voxelpipe device. A group whose segment is not in a SEG (no
SEG could be made) is a TID 1501 group typed by the structure instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from voxelpipe.atlases import REGIONS
from voxelpipe.dicom_outputs.common import MANUFACTURER, MODEL, Analysis, on_source_timeline
from voxelpipe.dicom_outputs.seg import Segment, region_segments, structure_code, tissue_segments

MILLILITRE: Final = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
NO_UNITS: Final = hd.sr.CodedConcept("1", "UCUM", "no units")
PERCENT: Final = hd.sr.CodedConcept("%", "UCUM", "percent")
# The device observer: one UID for voxelpipe wherever it runs (no deployment is identified).
DEVICE_OBSERVER_UID: Final = generate_uid(entropy_srcs=["voxelpipe device observer"])
TIV_GROUP: Final = "tiv"


@dataclass(frozen=True)
class SegmentReferences:
    """A SEG written for the study and the segments it holds, by results.json's key."""

    segmentation: Dataset
    segments: Mapping[str, Segment] = field(default_factory=dict)

    @classmethod
    def of(cls, segmentation: Dataset, segments: Sequence[Segment]) -> SegmentReferences:
        return cls(segmentation, {s.key: s for s in segments})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _analysis(document: Mapping[str, Any], name: str) -> tuple[Analysis, Mapping[str, Any]] | None:
    result = document.get("analyses", {}).get(name)
    if not isinstance(result, Mapping):
        return None
    return Analysis(name, str(result.get("version", ""))), result.get("measures") or {}


class _Groups:
    """Measurements collected per group key, with what each group is about."""

    def __init__(self) -> None:
        self.measurements: dict[str, list[hd.sr.Measurement]] = {}
        self.types: dict[str, tuple[str, Code]] = {}  # key -> (tracking identifier text, finding type)

    def add(self, key: str, label: str, finding: Code, measurement: hd.sr.Measurement) -> None:
        self.types.setdefault(key, (label, finding))
        self.measurements.setdefault(key, []).append(measurement)


def _volume(value: float, analysis: Analysis, method: Code | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=codes.SCT.Volume,
        value=value,
        unit=MILLILITRE,
        method=method,
        algorithm_id=analysis.sr_algorithm(),
    )


def _scores(groups: _Groups, key: str, label: str, finding: Code, score: Any, analysis: Analysis) -> None:
    if not isinstance(score, Mapping) or score.get("status") != "ok":
        return
    z, centile = _number(score.get("z")), _number(score.get("percentile"))
    if z is not None:
        groups.add(
            key,
            label,
            finding,
            hd.sr.Measurement(
                name=codes.DCM.ZScoreOfMeasurement,
                value=z,
                unit=NO_UNITS,
                algorithm_id=analysis.sr_algorithm(),
            ),
        )
    if centile is not None:
        groups.add(
            key,
            label,
            finding,
            hd.sr.Measurement(
                name=codes.DCM.PercentileRankingOfMeasurement,
                value=centile,
                unit=PERCENT,
                algorithm_id=analysis.sr_algorithm(),
            ),
        )


def collect_measurements(document: Mapping[str, Any]) -> _Groups:
    """Every volume, z-score and centile of results.json, grouped by what they measure."""
    groups = _Groups()
    tissues = {s.key: s for s in tissue_segments()}
    regions = {s.key: s for s in region_segments()}
    normative = _analysis(document, "normative")
    scores: Mapping[str, Any] = (normative[1].get("scores") or {}) if normative else {}

    volumetrics = _analysis(document, "volumetrics")
    if volumetrics is not None:
        analysis, measures = volumetrics
        for key, segment in tissues.items():
            value = _number(measures.get(f"{key}_ml"))
            if value is not None:
                groups.add(key, segment.name, segment.property_type, _volume(value, analysis))
        tiv = _number(measures.get("tiv_ml"))
        if tiv is not None:
            groups.add(TIV_GROUP, "Total intracranial volume", codes.SCT.Brain, _volume(tiv, analysis))
    regional = _analysis(document, "regional")
    if regional is not None:
        analysis, measures = regional
        for key, row in (measures.get("regions") or {}).items():
            region = regions.get(key)
            if region is None or not isinstance(row, Mapping):
                continue
            volume, label_ml = _number(row.get("volume_ml")), _number(row.get("label_ml"))
            if volume is not None:
                groups.add(key, region.name, region.property_type, _volume(volume, analysis))
            if label_ml is not None:
                method = codes.DCM.SumOfSegmentedVoxelMethodForVolume
                groups.add(key, region.name, region.property_type, _volume(label_ml, analysis, method))
        for structure, row in (measures.get("structures") or {}).items():
            total = _number(row.get("total_ml")) if isinstance(row, Mapping) else None
            if total is not None:
                name = structure.replace("_", " ")
                groups.add(
                    f"{structure}_total",
                    f"{name} (left + right)",
                    structure_code(structure),
                    _volume(total, analysis),
                )
    if normative is not None:
        analysis = normative[0]
        for measure, score in scores.items():
            key = (
                measure.removesuffix("_ml")
                if measure.removesuffix("_ml") in (*tissues, TIV_GROUP)
                else measure
            )
            label: str
            finding: Code
            if key in tissues:
                label, finding = tissues[key].name, tissues[key].property_type
            elif key == TIV_GROUP:
                label, finding = "Total intracranial volume", codes.SCT.Brain
            elif key in REGIONS:
                label, finding = regions[key].name, regions[key].property_type
            else:
                continue
            _scores(groups, key, label, finding, score, analysis)
    return groups


def _referenced_segment(segmentation: Dataset, number: int) -> hd.sr.ReferencedSegment:
    """The segment, with the series it was drawn on (highdicom's from_segmentation reads per-frame
    segment numbers, which a LABELMAP SEG does not have)."""
    source_series = segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series),
    )


def _group(
    key: str, groups: _Groups, references: Sequence[SegmentReferences]
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations:
    label, finding = groups.types[key]
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{label} ({key})"[:64])
    for reference in references:
        segment = reference.segments.get(key)
        if segment is not None:
            return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_segment=_referenced_segment(reference.segmentation, segment.number),
                finding_type=finding,
                measurements=groups.measurements[key],
            )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=finding, measurements=groups.measurements[key]
    )


def build_measurement_report(
    document: Mapping[str, Any],
    evidence: Sequence[Dataset],
    references: Sequence[SegmentReferences],
    *,
    series_number: int,
) -> hd.sr.Comprehensive3DSR:
    """The SR of results.json `document`; `evidence`: the objects it refers to (the SEGs, the
    source images: the patient and study modules are copied from the first), `references`: the
    SEGs whose segments the measurement groups reference."""
    groups = collect_measurements(document)
    if not groups.measurements:
        raise ValueError("results.json holds no volume, z-score or centile")
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID, name="voxelpipe", manufacturer_name=MANUFACTURER, model_name=MODEL
        ),
    )
    modality = str(evidence[0].get("Modality", "MR")) if evidence else "MR"
    sources = [ds for ds in evidence if ds.get("Modality") not in ("SEG", "SR", "DOC")]
    if sources:
        modality = str(sources[0].get("Modality", modality))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.HeadCT if modality == "CT" else codes.LN.BrainMRI,
        imaging_measurements=[_group(key, groups, references) for key in groups.measurements],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    on_source_timeline(sr, evidence[0])
    return sr
