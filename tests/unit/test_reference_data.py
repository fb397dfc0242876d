"""Reference data without AWS: each kind's checks (an atlas's label map against its table, a norms
table), analyses that use others (normative after regional when both run, without requiring it),
and RunAnalysis loading the version dispatch fixed, on in-memory adapters."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest

from tests.fakes import InMemoryStorage, InMemoryStudyStore
from tests.fixtures.reference_data import LABELS, METADATA, NORMS, label_map, tiny_map
from voxelpipe.analyses import CATALOGUE, AnalysisOutput, resolve, stages
from voxelpipe.analyses.catalogue import ATLAS_REFERENCE, NORMS_REFERENCE, Analysis
from voxelpipe.analyses.norms import NormsTable
from voxelpipe.analysis_outputs import store_output
from voxelpipe.atlases import Atlas
from voxelpipe.keys import DEPLOYMENT_OWNER, reference_key, work_key
from voxelpipe.messages import AnalysisRequest, AnalysisTask, PreparedVolume, ReferencePin
from voxelpipe.nifti import to_nifti_bytes
from voxelpipe.pipeline.analysis import run_analysis
from voxelpipe.pipeline.register import RegistrationRefused, register_study
from voxelpipe.reference_kinds import (
    KINDS,
    ReferenceInvalid,
    ReferenceKind,
    ReferenceMetadata,
    check_metadata,
    materialise,
    verify_files,
)
from voxelpipe.references import (
    MANIFEST_FILE,
    ReferenceFile,
    ReferenceManifest,
    ReferenceUnavailable,
    load_references,
)
from voxelpipe.wiring import Runtime


def test_an_atlas_whose_map_and_table_agree_is_verified():
    summary = verify_files(
        ReferenceKind.ATLAS, {"label_map": label_map(tiny_map()), "labels": LABELS.encode()}
    )
    assert summary["shape"] == [4, 4, 4] and summary["voxel_size_mm"] == [2.0, 2.0, 2.0]
    assert (summary["labels"], summary["labels_in_map"], summary["labels_not_in_map"]) == (3, 2, [3])
    assert summary["regions"] == ["hippocampus_left", "hippocampus_right"]
    assert "thalamus_left" in summary["regions_missing"]
    # A float map of whole numbers (as SPM stores its atlases), uncompressed, is as good.
    whole = label_map(tiny_map(np.float32), compress=False)
    assert (
        verify_files(ReferenceKind.ATLAS, {"label_map": whole, "labels": LABELS.encode()})["labels_in_map"]
        == 2
    )


@pytest.mark.parametrize(
    ("label_map_bytes", "labels", "message"),
    [
        (
            label_map(np.arange(64, dtype=np.int16).reshape(4, 4, 4) % 6),
            LABELS,
            "not in the label table: 4, 5",
        ),
        (label_map(tiny_map(np.float32) * 0.5), LABELS, "not integer labels"),
        (label_map(np.zeros((4, 4, 4, 2), np.int16)), LABELS, "a 3-D map is needed"),
        (label_map(-tiny_map()), LABELS, "0..32767"),
        (b"not a nifti at all", LABELS, "not a NIfTI image"),
        (label_map(tiny_map()), "index,name\n1,a\n1,b\n", "labels: line 3: index 1 appears twice"),
        (label_map(tiny_map()), "index,name,region\n1,a,hippocampus\n", "region 'hippocampus'"),
    ],
)
def test_an_atlas_that_cannot_be_used_is_refused_saying_why(
    label_map_bytes: bytes, labels: str, message: str
):
    with pytest.raises(ReferenceInvalid, match=message):
        verify_files(ReferenceKind.ATLAS, {"label_map": label_map_bytes, "labels": labels.encode()})


def test_a_norms_table_is_verified_and_a_bad_one_refused_with_its_line():
    summary = verify_files(ReferenceKind.NORMS, {"table": NORMS.encode()})
    assert summary == {"rows": 1, "measures": ["gm_ml"], "sources": ["test: arbitrary numbers"]}
    with pytest.raises(ReferenceInvalid, match="table: line 2: sd must be > 0"):
        verify_files(ReferenceKind.NORMS, {"table": NORMS.replace(",50,", ",0,").encode()})
    with pytest.raises(ReferenceInvalid, match="not UTF-8"):
        verify_files(ReferenceKind.NORMS, {"table": b"\xff\xfe\x00"})


def test_what_each_kind_must_declare():
    assert (
        set(KINDS[ReferenceKind.ATLAS].files) == {"label_map", "labels"}
        and KINDS[ReferenceKind.ATLAS].tenant_owned
    )
    assert set(KINDS[ReferenceKind.NORMS].files) == {"table"} and not KINDS[ReferenceKind.NORMS].tenant_owned
    assert set(KINDS[ReferenceKind.RATES].files) == {"table"} and not KINDS[ReferenceKind.RATES].tenant_owned
    check_metadata(ReferenceKind.ATLAS, METADATA)
    with pytest.raises(ReferenceInvalid, match="must declare its space"):
        check_metadata(ReferenceKind.ATLAS, METADATA.model_copy(update={"space": None}))
    with pytest.raises(ReferenceInvalid, match="has no space"):
        check_metadata(ReferenceKind.NORMS, METADATA)
    with pytest.raises(ValueError, match="licence"):
        ReferenceMetadata.model_validate({"citation": "c", "commercial_use": False})
    with pytest.raises(ReferenceInvalid, match="has no space"):
        check_metadata(ReferenceKind.RATES, METADATA)
    # The catalogue's reference parameters are of kinds the registry knows; rates tables are read
    # by the timeline, not by an analysis.
    analyses_kinds = {ATLAS_REFERENCE.kind, NORMS_REFERENCE.kind}
    assert analyses_kinds | {ReferenceKind.RATES.value} == {kind.value for kind in ReferenceKind}


def _regional() -> Analysis:
    """A stand-in for the regional analysis (its catalogue entry is written elsewhere)."""
    return Analysis(
        name="regional",
        version="0",
        runtime=Runtime.LAMBDA,
        description="stand-in",
        run=lambda inp: AnalysisOutput(measures={}),
        requires=("tissue-seg",),
        references=(ATLAS_REFERENCE,),
    )


def test_normative_runs_after_regional_when_the_study_runs_both_and_never_pulls_it_in():
    alone = [a.name for a in resolve(["normative"], models={"regional": _regional()})]
    assert alone == ["tissue-seg", "volumetrics", "normative"]
    both = resolve(["normative", "regional"], models={"regional": _regional()})
    assert [a.name for a in both] == ["tissue-seg", "volumetrics", "regional", "normative"]
    assert [[a.name for a in stage] for stage in stages(both)] == [
        ["tissue-seg"],
        ["volumetrics", "regional"],
        ["normative"],
    ]
    assert CATALOGUE["normative"].uses == ("regional",)


def _manifest(
    storage: InMemoryStorage, kind: ReferenceKind, name: str, files: dict[str, bytes]
) -> ReferencePin:
    """A READY version as the registry leaves it in the bucket: files and manifest.json."""
    stored = {}
    for role, data in files.items():
        key = reference_key(kind, DEPLOYMENT_OWNER, name, "3", KINDS[kind].files[role].filename)
        storage.write(key, data)
        stored[role] = ReferenceFile(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    metadata = METADATA if kind == ReferenceKind.ATLAS else METADATA.model_copy(update={"space": None})
    manifest = ReferenceManifest(
        kind=kind, owner=DEPLOYMENT_OWNER, name=name, version=3, metadata=metadata, files=stored, summary={}
    )
    storage.write(
        reference_key(kind, DEPLOYMENT_OWNER, name, "3", MANIFEST_FILE), manifest.model_dump_json().encode()
    )
    return ReferencePin(kind=kind.value, name=name, owner=DEPLOYMENT_OWNER, version=3)


def test_pinned_versions_load_as_atlas_and_norms_table_or_fail_clearly():
    storage = InMemoryStorage()
    atlas_pin = _manifest(
        storage,
        ReferenceKind.ATLAS,
        "test-atlas",
        {"label_map": label_map(tiny_map()), "labels": LABELS.encode()},
    )
    norms_pin = _manifest(storage, ReferenceKind.NORMS, "test-norms", {"table": NORMS.encode()})
    loaded = load_references({"atlas": atlas_pin, "norms": norms_pin}, storage)
    atlas = loaded["atlas"]
    assert isinstance(atlas, Atlas) and atlas.region_labels() == {
        "hippocampus_left": (1,),
        "hippocampus_right": (2,),
    }
    assert atlas.provenance()["version"] == "3" and atlas.provenance()["commercial_use"] is True
    norms = loaded["norms"]
    assert isinstance(norms, NormsTable) and norms.measures == ("gm_ml",)
    assert norms.provenance["scope"] == "deployment" and norms.provenance["licence"] == "CC BY 4.0"
    # A file changed after verification, a version retired since dispatch, a name never resolved.
    storage.write(
        reference_key("norms", DEPLOYMENT_OWNER, "test-norms", "3", "norms.csv"), NORMS.encode() + b"\n"
    )
    with pytest.raises(ReferenceUnavailable, match="sha256 differs"):
        load_references({"norms": norms_pin}, storage)
    storage.delete_all_versions(reference_key("atlas", DEPLOYMENT_OWNER, "test-atlas", "3", ""))
    with pytest.raises(ReferenceUnavailable, match="atlas test-atlas version 3: no longer stored"):
        load_references({"atlas": atlas_pin}, storage)
    unresolved = ReferencePin(kind="norms", name="gone", problem="no READY version of norms gone")
    with pytest.raises(ReferenceUnavailable, match="no READY version of norms gone"):
        load_references({"norms": unresolved}, storage)
    materialised = materialise(
        ReferenceKind.NORMS,
        {"table": NORMS.encode()},
        name="n",
        version=1,
        metadata=METADATA,
        provenance={"a": 1},
    )
    assert isinstance(materialised, NormsTable) and materialised.provenance == {"a": 1}


def test_run_analysis_gives_normative_the_pinned_norms_and_fails_on_a_retired_version():
    store, storage = InMemoryStudyStore(), InMemoryStorage()
    study = register_study(
        store, "lab-a", actor="t", source="t", analyses=["normative"], subject={"age": 40, "sex": "F"}
    )
    pin = _manifest(storage, ReferenceKind.NORMS, "test-norms", {"table": NORMS.encode()})
    volume_key = work_key(study.study_id, 1, "canonical.nii")
    storage.write(
        volume_key,
        to_nifti_bytes(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), compress=False),
    )
    request = AnalysisRequest(
        name="normative",
        version="2.0.0",
        runtime=Runtime.LAMBDA,
        parameters={"norms": "test-norms"},
        references={"norms": pin},
    )
    task = AnalysisTask(
        study_id=study.study_id,
        attempt=1,
        analysis=request,
        volume=PreparedVolume(
            volume_key=volume_key,
            original_orientation=("R", "A", "S"),
            original_shape=[2, 2, 2],
            original_affine=np.eye(4).tolist(),
            shape=[2, 2, 2],
            voxel_size_mm=[1.0, 1.0, 1.0],
            duration_ms=0.0,
        ),
        subject={"age": 40, "sex": "F"},
    )
    volumes = {"gm_ml": 600.0, "wm_ml": 500.0, "csf_ml": 200.0, "tiv_ml": 1300.0, "bpf": 0.846}
    store_output(task, "volumetrics", "1.0.0", {}, AnalysisOutput(measures=volumes), storage, 0.0)
    result = run_analysis(task, store, storage)
    assert result.measures["status"] == "ok" and result.measures["norms"]["name"] == "test-norms"
    assert result.measures["norms"]["version"] == 3
    assert result.measures["scores"]["gm_ml"]["z"] == pytest.approx(-2.0)  # (600 - 700) / 50
    storage.delete_all_versions(reference_key("norms", DEPLOYMENT_OWNER, "test-norms", "3", ""))
    with pytest.raises(ReferenceUnavailable, match="no longer stored"):
        run_analysis(task, store, storage)


def test_registration_refuses_parameters_an_analysis_does_not_have():
    store = InMemoryStudyStore()
    with pytest.raises(RegistrationRefused, match="reference_table_key") as refused:
        register_study(
            store,
            "lab-a",
            actor="t",
            source="t",
            analyses=["normative"],
            parameters={"normative": {"reference_table_key": "k"}},
        )
    assert refused.value.field == "parameters.normative"
    with pytest.raises(RegistrationRefused) as bad_version:
        register_study(
            store,
            "lab-a",
            actor="t",
            source="t",
            analyses=["normative"],
            parameters={"normative": {"norms": "x", "norms_version": 0}},
        )
    assert bad_version.value.field == "parameters.normative.norms_version"
    with pytest.raises(RegistrationRefused) as bad_name:
        register_study(
            store,
            "lab-a",
            actor="t",
            source="t",
            analyses=["normative"],
            parameters={"normative": {"norms": "Not A Name"}},
        )
    assert bad_name.value.field == "parameters.normative.norms"
    assert store.studies == {}
