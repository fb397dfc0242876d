"""The longitudinal analysis's wiring on in-memory adapters: dispatch adds it and pins the subject's
earlier study (docs/pipeline.md, "Longitudinal: the prior study"), and the pinned prior is loaded
as AnalysisInput.prior, or refused when it is no longer what was pinned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tests.fakes import FakeExecutions, InMemoryStorage, InMemoryStudyStore
from voxelpipe import tracking
from voxelpipe.keys import derived_key
from voxelpipe.messages import PriorPin, WorkItem
from voxelpipe.pipeline.dispatch import dispatch
from voxelpipe.pipeline.prepare import CONVERTED_VOLUME
from voxelpipe.pipeline.prior_load import PriorUnavailable, load_prior
from voxelpipe.pipeline.prior_pin import interval_years
from voxelpipe.status import StudyStatus

TENANT = "lab-a"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store() -> InMemoryStudyStore:
    return InMemoryStudyStore()


def _study(
    store: InMemoryStudyStore,
    study_id: str,
    *,
    subject: str | None = "sub-1",
    status: StudyStatus = StudyStatus.COMPLETED,
    scan_date: str | None = None,
    day: int = 0,
    summary: dict[str, Any] | None = None,
    analyses: tuple[str, ...] = ("tissue-seg",),
    tenant: str = TENANT,
) -> str:
    study_id = study_id.ljust(32, "0")
    tracking.create_study(
        store,
        study_id,
        tenant,
        analyses=list(analyses),
        priority="normal",
        status=status,
        subject={"subject_ref": subject, "age": 70, "sex": "F"} if subject else None,
    )
    store.set_study_fields(
        study_id,
        {
            "scan_date": scan_date,
            "created_at": T0 + timedelta(days=day),
            "summary": summary if summary is not None else {"tissue-seg": {}},
            "input_key": f"uploads/{tenant}/{study_id}/00000.nii.gz",
        },
    )
    return study_id


def _dispatch(store: InMemoryStudyStore, study_id: str, analyses: tuple[str, ...] = ("tissue-seg",)):
    item = WorkItem(
        study_id=study_id, attempt=1, tenant=TENANT, input_key="uploads/x", analyses=list(analyses)
    )
    executions = FakeExecutions()
    assert dispatch(item, store, executions) == "started"
    execution = executions.runs[(study_id, 1)][0]
    return {request.name: request for request in execution.analyses}, execution


def test_dispatch_adds_longitudinal_and_pins_the_newest_earlier_completed_study(store: InMemoryStudyStore):
    first = _study(store, "a1", scan_date="2020-03-01", day=0)
    second = _study(store, "a2", scan_date="2021-03-01", day=1)
    _study(store, "a3", scan_date="2021-06-01", day=2, status=StudyStatus.FAILED)  # not completed
    _study(store, "a4", scan_date="2021-07-01", day=3, summary={"qc": {}})  # no tissue-seg
    _study(store, "a5", scan_date="2023-01-01", day=4)  # later than the study
    _study(store, "a6", subject="sub-2", scan_date="2021-08-01", day=5)  # another subject
    _study(store, "a7", scan_date="2021-08-01", day=6, tenant="lab-b")  # another tenant's
    # Registered last, scanned before the newest: scan dates decide, not registration.
    study = _study(store, "b1", status=StudyStatus.QUEUED, scan_date="2022-03-01", day=9)
    requests, execution = _dispatch(store, study)
    assert set(requests) == {"tissue-seg", "longitudinal"}
    prior = requests["longitudinal"].prior
    assert prior is not None and prior.study_id == second and prior.attempt == 1
    assert prior.interval_years == pytest.approx(365 / 365.25, abs=1e-6)
    assert requests["tissue-seg"].prior is None
    assert [[r.name for r in stage] for stage in execution.stages] == [["tissue-seg"], ["longitudinal"]]
    (added,) = [row for row in store.audit_trail(study) if row.action == "longitudinal_added"]
    assert added.detail == {"study_id": second, "attempt": 1, "interval_years": prior.interval_years}
    assert first != second


def test_without_dates_the_order_of_registration_decides_and_there_is_no_interval(
    store: InMemoryStudyStore,
):
    older = _study(store, "c1", scan_date="2019-01-01", day=0)
    study = _study(store, "c2", status=StudyStatus.QUEUED, scan_date=None, day=1)
    requests, _ = _dispatch(store, study)
    prior = requests["longitudinal"].prior
    assert prior is not None and prior.study_id == older and prior.interval_years is None


def test_no_subject_or_no_earlier_study_adds_nothing_and_an_explicit_request_runs_without_a_prior(
    store: InMemoryStudyStore,
):
    _study(store, "d1", subject=None, day=0)
    lone = _study(store, "d2", subject=None, status=StudyStatus.QUEUED, day=1)
    requests, _ = _dispatch(store, lone)
    assert set(requests) == {"tissue-seg"}
    first_of_subject = _study(store, "d3", subject="sub-9", status=StudyStatus.QUEUED, day=2)
    requests, _ = _dispatch(store, first_of_subject, ("longitudinal",))
    assert set(requests) == {"tissue-seg", "longitudinal"} and requests["longitudinal"].prior is None
    assert not [row for row in store.audit_trail(first_of_subject) if row.action == "longitudinal_added"]


def test_a_study_that_runs_no_tissue_seg_is_not_compared(store: InMemoryStudyStore):
    _study(store, "e1", day=0)
    study = _study(store, "e2", status=StudyStatus.QUEUED, day=1, analyses=("qc",))
    requests, _ = _dispatch(store, study, ("qc",))
    assert set(requests) == {"qc"}


def test_interval_is_in_years_of_365_25_days(store: InMemoryStudyStore):
    a = store.get_study(_study(store, "f1", scan_date="2020-01-01"))
    b = store.get_study(_study(store, "f2", scan_date="2024-01-01", day=1))
    assert a is not None and b is not None
    assert interval_years(a, b) == pytest.approx(4.0, abs=1e-6)  # 1461 days


def _nifti(data: np.ndarray, affine: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, affine).to_bytes()


def _stored_prior(store: InMemoryStudyStore, storage: InMemoryStorage, *, regional: bool = True) -> str:
    # An LPS grid (the upload's own): the prior is canonicalised to RAS, its maps with it.
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    volume = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    mask = np.zeros((6, 5, 4), dtype=np.uint8)
    mask[0, 1:4, 1:3] = 1  # at the upload's first x column: the last one in RAS
    regions = np.zeros((6, 5, 4), dtype=np.uint8)
    regions[0, 1, 1] = 7
    summary: dict[str, Any] = {"tissue-seg": {}}
    if regional:
        summary["regional"] = {"regions": {"hippocampus_left": {"number": 7, "volume_ml": 0.008}}}
    study_id = _study(store, "p1", summary=summary)
    # Where Prepare keeps every study's input (never read from uploads/).
    storage.write(derived_key(study_id, CONVERTED_VOLUME), _nifti(volume, affine))
    storage.write(derived_key(study_id, "tissue-seg", "brain_mask.nii.gz"), _nifti(mask, affine))
    storage.write(derived_key(study_id, "regional", "regions.nii.gz"), _nifti(regions, affine))
    return study_id


def test_the_pinned_prior_is_loaded_on_its_canonical_grid(store: InMemoryStudyStore):
    storage = InMemoryStorage()
    study_id = _stored_prior(store, storage)
    prior = load_prior(PriorPin(study_id=study_id, attempt=1, interval_years=1.5), TENANT, store, storage)
    assert prior.study_id == study_id and prior.interval_years == 1.5
    assert nib.aff2axcodes(prior.image.affine) == ("R", "A", "S")
    assert prior.brain_mask.shape == prior.image.shape and prior.brain_mask.sum() == 6
    assert prior.brain_mask[5].sum() == 6  # the upload's first x column is RAS's last
    assert prior.regions is not None and prior.regions[5, 3, 1] == 7
    assert dict(prior.region_names) == {7: "hippocampus_left"}


def test_a_prior_without_regional_has_no_region_map(store: InMemoryStudyStore):
    storage = InMemoryStorage()
    study_id = _stored_prior(store, storage, regional=False)
    prior = load_prior(PriorPin(study_id=study_id, attempt=1), TENANT, store, storage)
    assert prior.regions is None and not prior.region_names and prior.interval_years is None


@pytest.mark.parametrize("change", ["deleted", "reprocessed", "mask_gone", "other_tenant"])
def test_a_prior_that_is_no_longer_what_was_pinned_is_refused(store: InMemoryStudyStore, change: str):
    storage = InMemoryStorage()
    study_id = _stored_prior(store, storage)
    tenant = TENANT
    if change == "deleted":
        store.set_study_fields(study_id, {"status": StudyStatus.DELETED.value})
    elif change == "reprocessed":
        store.set_study_fields(study_id, {"attempt": 2, "status": StudyStatus.RUNNING.value})
    elif change == "mask_gone":
        storage.delete_all_versions(derived_key(study_id, "tissue-seg"))
    else:
        tenant = "lab-b"
    with pytest.raises(PriorUnavailable, match=study_id):
        load_prior(PriorPin(study_id=study_id, attempt=1), tenant, store, storage)


def test_run_analysis_and_the_gpu_workers_runner_hand_the_pinned_prior_to_the_analysis(
    store: InMemoryStudyStore, monkeypatch: pytest.MonkeyPatch
):
    from voxelpipe import analyses
    from voxelpipe.analyses import Analysis, AnalysisInput, AnalysisOutput
    from voxelpipe.gpu.runners import catalogue_runner
    from voxelpipe.messages import AnalysisRequest, AnalysisTask, PreparedVolume
    from voxelpipe.pipeline.analysis import run_analysis
    from voxelpipe.wiring import Runtime

    seen: list[Any] = []

    def record(inp: AnalysisInput) -> AnalysisOutput:
        seen.append(inp.prior)
        return AnalysisOutput(measures={"prior_study_id": inp.prior.study_id if inp.prior else None})

    # The wiring only: the method (M's) is stood in by one that records what it was given.
    fake = Analysis("longitudinal", "9.9.9", Runtime.LAMBDA, "records its prior", record)
    monkeypatch.setattr(analyses, "CATALOGUE", {**analyses.CATALOGUE, "longitudinal": fake})
    storage = InMemoryStorage()
    prior_id = _stored_prior(store, storage)
    later = _study(store, "q1", status=StudyStatus.RUNNING, day=5)
    volume_key = f"work/{later}/1/canonical.nii"
    storage.write(volume_key, _nifti(np.zeros((4, 4, 4), np.float32), np.eye(4)))
    volume = PreparedVolume(
        volume_key=volume_key,
        original_orientation=("R", "A", "S"),
        original_shape=[4, 4, 4],
        original_affine=np.eye(4).tolist(),
        shape=[4, 4, 4],
        voxel_size_mm=[1.0, 1.0, 1.0],
        duration_ms=1.0,
    )

    def task(pin: PriorPin | None, runtime: Runtime = Runtime.LAMBDA) -> AnalysisTask:
        request = AnalysisRequest(name="longitudinal", version="9.9.9", runtime=runtime, prior=pin)
        return AnalysisTask(study_id=later, attempt=1, analysis=request, volume=volume)

    pin = PriorPin(study_id=prior_id, attempt=1, interval_years=2.0)
    assert run_analysis(task(pin), store, storage).measures == {"prior_study_id": prior_id}
    assert run_analysis(task(None), store, storage).measures == {"prior_study_id": None}
    outcomes = catalogue_runner(store, storage)([task(pin, Runtime.GPU)], lambda index, outcome: None)
    assert not isinstance(outcomes[0], Exception), outcomes[0]
    assert [p.study_id if p else None for p in seen] == [prior_id, None, prior_id]
    assert seen[0].interval_years == 2.0 and seen[0].brain_mask.sum() == 6
    # A prior reprocessed since dispatch fails the analysis, on either runtime, naming it.
    store.set_study_fields(prior_id, {"attempt": 2})
    with pytest.raises(PriorUnavailable, match=prior_id):
        run_analysis(task(pin), store, storage)
    (failed,) = catalogue_runner(store, storage)([task(pin, Runtime.GPU)], lambda index, outcome: None)
    assert isinstance(failed, PriorUnavailable)
