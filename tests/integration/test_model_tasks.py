"""The model registry and `run_model_tasks` against moto (S3 + DynamoDB via mock_aws)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import nibabel as nib
import numpy as np
import pytest
from moto import mock_aws

from tests.fixtures.models import (
    make_brain_age_model,
    make_classifier_model,
    make_threshold_model,
    make_threshold_onnx_model,
)
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.analyses import UnknownAnalysis, resolve
from voxelpipe.inference import registry
from voxelpipe.inference import spec as spec_module
from voxelpipe.inference.models import ModelCache, ModelUnavailable
from voxelpipe.inference.scalars import ModelOutputMismatch
from voxelpipe.inference.spec import ModelRef
from voxelpipe.inference.tasks import NotAModelTask, run_model_tasks
from voxelpipe.keys import DEPLOYMENT_OWNER, derived_key, work_key
from voxelpipe.messages import AnalysisRequest, AnalysisResult, AnalysisTask, PreparedVolume
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.lifecycle import check_analyses
from voxelpipe.pipeline.prepare import canonical_volume
from voxelpipe.records import ModelRecord, StudyRecord, TaskRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.status import TaskStatus
from voxelpipe.volume import orientation, voxel_sizes
from voxelpipe.wiring import EnvVar, Runtime

STORE = DynamoStudyStore()

BUCKET = "models-test-bucket"
THRESHOLD = 100.0
TENANT = "lab-a"


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(EnvVar.BUCKET, BUCKET)
    monkeypatch.setenv(EnvVar.TASKS_TABLE, "tasks")
    monkeypatch.setenv(EnvVar.STUDIES_TABLE, "studies")
    monkeypatch.setenv(EnvVar.MODELS_TABLE, "models")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        for model in (StudyRecord, TaskRecord, ModelRecord):
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        yield Storage(BUCKET)


def _volume(shape: tuple[int, int, int], affine: np.ndarray, seed: int) -> nib.Nifti1Image:
    data = np.random.default_rng(seed).uniform(0, 200, size=shape).astype(np.float32)
    return nib.Nifti1Image(data, affine)


def _task(
    storage: Storage,
    study_id: str,
    original: nib.Nifti1Image,
    version: str = "1",
    owner: str = TENANT,
    *,
    model: str = "threshold",
    subject: dict[str, object] | None = None,
) -> AnalysisTask:
    """What Prepare would hand the analysis: the canonical volume in S3, the original's grid."""
    volume = canonical_volume(original)
    key = work_key(study_id, 1, "canonical.nii")
    storage.write(key, to_nifti_bytes(volume, compress=False))
    return AnalysisTask(
        study_id=study_id,
        attempt=1,
        subject=subject,
        analysis=AnalysisRequest(
            name=f"model:{model}", version=version, runtime=Runtime.GPU, model_owner=owner
        ),
        volume=PreparedVolume(
            volume_key=key,
            original_orientation=orientation(original.affine),
            original_shape=list(original.shape),
            original_affine=original.affine.tolist(),
            shape=list(volume.shape),
            voxel_size_mm=[float(v) for v in voxel_sizes(volume.affine)],
            duration_ms=0.0,
        ),
    )


LPI_AFFINE = np.array([[-1.0, 0, 0, 20], [0, 0, -1.0, 30], [0, -1.0, 0, 10], [0, 0, 0, 1]])


def test_registry_versions_verification_and_listing(storage: Storage):
    data, spec = make_threshold_model(THRESHOLD, patch_size=(16, 16, 16))
    first = registry.register_model(TENANT, "threshold", spec, len(data), actor="admin")
    assert (int(first.version), first.status) == (1, "PENDING")
    assert first.object_key == "models/lab-a/threshold/1/model.pt"
    with pytest.raises(registry.ModelUploadMismatch, match="nothing was uploaded"):
        registry.complete_model(TENANT, "threshold", storage)
    storage.write(first.object_key, data[:-1])
    with pytest.raises(registry.ModelUploadMismatch, match="declared"):
        registry.complete_model(TENANT, "threshold", storage)
    storage.write(first.object_key, data)
    ready = registry.complete_model(TENANT, "threshold", storage)
    assert ready.status == "READY" and ready.sha256 is not None and len(ready.sha256) == 64
    assert registry.complete_model(TENANT, "threshold", storage).status == "READY"  # again: no change
    manifest = json.loads(storage.read("models/lab-a/threshold/1/model.json"))
    assert manifest["version"] == "1" and manifest["size"] == len(data) and manifest["owner"] == TENANT

    # A second version, declared with a wrong sha256, stays PENDING; the first still runs.
    second = registry.register_model(TENANT, "threshold", spec, len(data), "0" * 64)
    assert int(second.version) == 2
    storage.write(second.object_key, data)
    with pytest.raises(registry.ModelUploadMismatch, match="sha256"):
        registry.complete_model(TENANT, "threshold", storage)
    assert int(registry.ready_models(TENANT, ["threshold"])["threshold"].version) == 1
    not_a_zip = registry.register_model(TENANT, "broken", spec, 10)
    storage.write(not_a_zip.object_key, b"0123456789")
    with pytest.raises(registry.ModelUploadMismatch, match="zip"):
        registry.complete_model(TENANT, "broken", storage)
    onnx, onnx_spec = make_threshold_onnx_model(THRESHOLD, patch_size=(16, 16, 16))
    registry.publish_model(TENANT, "threshold-onnx", onnx, onnx_spec, storage)

    listed = [(r.name, int(r.version), r.status) for r in registry.list_models(TENANT)]
    assert listed == [
        ("broken", 1, "PENDING"),
        ("threshold", 2, "PENDING"),
        ("threshold", 1, "READY"),
        ("threshold-onnx", 1, "READY"),
    ]
    assert set(registry.ready_models(TENANT)) == {"threshold", "threshold-onnx"}
    with pytest.raises(registry.InvalidModelName):
        registry.register_model(TENANT, "Bad Name", spec, 10)
    with pytest.raises(registry.InvalidModelName):
        registry.register_model(TENANT, "threshold\n", spec, 10)
    with pytest.raises(registry.ModelNotFound):
        registry.complete_model(TENANT, "nothing-here", storage)

    # model:NAME resolves for a READY model only, as a gpu analysis at its newest READY version.
    names = ["qc", "model:threshold"]
    resolved = {a.name: a for a in resolve(names, models=registry.model_analyses(names, TENANT))}
    assert resolved["model:threshold"].runtime == Runtime.GPU and resolved["model:threshold"].version == "1"
    assert resolved["model:threshold"].owner == TENANT
    for unknown in (["model:broken"], ["model:missing"]):  # never READY; never registered
        with pytest.raises(UnknownAnalysis):
            resolve(unknown, models=registry.model_analyses(unknown, TENANT))
    with pytest.raises(UnknownAnalysis):
        resolve(["model:threshold"])  # resolve knows only the models it is given
    # Ingest checks a study's analyses the same way: a READY model passes, a PENDING one does not.
    check_analyses(StudyRecord("s" * 32, tenant=TENANT, analyses=["qc", "model:threshold"]))
    with pytest.raises(Rejected) as rejected:
        check_analyses(StudyRecord("s" * 32, tenant=TENANT, analyses=["qc", "model:broken"]))
    assert rejected.value.reason == ReasonCode.UNKNOWN_ANALYSIS and "model:broken" in rejected.value.detail
    described = registry.describe_model_analysis(registry.ready_models(TENANT)["threshold"])
    assert described["labels"] == {"0": "background", "1": "foreground"} and described["runtime"] == "gpu"
    assert described["scope"] == "tenant"


def test_models_belong_to_their_tenant_and_a_tenants_own_wins_over_the_deployments(storage: Storage):
    data, spec = make_threshold_model(THRESHOLD, patch_size=(16, 16, 16))
    registry.publish_model("lab-a", "seg", data, spec, storage)
    registry.publish_model(DEPLOYMENT_OWNER, "seg", data, spec, storage)
    registry.publish_model(DEPLOYMENT_OWNER, "seg", data, spec, storage)  # its version 2
    registry.publish_model(DEPLOYMENT_OWNER, "shared", data, spec, storage)
    registry.publish_model("lab-c", "private", data, spec, storage)
    assert storage.list_keys("models/lab-a/seg/1/") and storage.list_keys("models/_deployment/seg/2/")

    def owners(tenant: str) -> dict[str, tuple[str, int]]:
        return {n: (r.owner, int(r.version)) for n, r in registry.ready_models(tenant).items()}

    # Each tenant sees its own and the deployment's; its own model of a shared name wins.
    assert owners("lab-a") == {"seg": ("lab-a", 1), "shared": (DEPLOYMENT_OWNER, 1)}
    assert owners("lab-b") == {"seg": (DEPLOYMENT_OWNER, 2), "shared": (DEPLOYMENT_OWNER, 1)}
    assert owners("lab-c") == {**owners("lab-b"), "private": ("lab-c", 1)}
    assert {r.owner for r in registry.list_models("lab-b")} == {DEPLOYMENT_OWNER}
    assert [(r.owner, int(r.version)) for r in registry.list_models("lab-a") if r.name == "seg"] == [
        ("lab-a", 1),
        (DEPLOYMENT_OWNER, 2),
        (DEPLOYMENT_OWNER, 1),
    ]
    # Another tenant's model is no model of yours: unknown analysis, nothing to complete or retire.
    with pytest.raises(UnknownAnalysis):
        resolve(["model:private"], models=registry.model_analyses(["model:private"], "lab-b"))
    for change in (registry.complete_model, registry.retire_model):
        with pytest.raises(registry.ModelNotFound):
            change("lab-b", "private", storage)
    assert registry.get_model("lab-c", "private").status == "READY"
    # Retiring the tenant's own falls back to the deployment-wide model of that name.
    registry.retire_model("lab-a", "seg", storage)
    assert owners("lab-a")["seg"] == (DEPLOYMENT_OWNER, 2)
    assert storage.list_keys("models/lab-a/seg/") == [] and storage.list_keys("models/_deployment/seg/2/")
    analysis = registry.model_analyses(["model:seg"], "lab-a")["model:seg"]
    assert (analysis.owner, analysis.version) == (DEPLOYMENT_OWNER, "2")


def test_model_cache_loads_a_registered_model_once(storage: Storage):
    data, spec = make_threshold_model(THRESHOLD, patch_size=(16, 16, 16))
    registry.publish_model(TENANT, "threshold", data, spec, storage)
    cache = ModelCache("cpu")
    ref = ModelRef(TENANT, "threshold", "1")
    assert cache.get(storage, ref) is cache.get(storage, ref)
    assert cache.loads == 1
    for missing in (
        ModelRef(TENANT, "threshold", "7"),
        ModelRef("lab-b", "threshold", "1"),  # another owner's: none
        ModelRef(DEPLOYMENT_OWNER, "threshold", "1"),
        ModelRef("../lab-a", "threshold", "1"),  # no owner at all
    ):
        with pytest.raises(ModelUnavailable, match="not registered"):
            cache.get(storage, missing)
    storage.write("models/lab-a/threshold/1/model.pt", data + b"x")  # the verified file was replaced
    with pytest.raises(ModelUnavailable, match="not the one verified"):
        ModelCache("cpu").get(storage, ref)


def test_run_model_tasks_batches_studies_and_isolates_a_bad_one(storage: Storage):
    data, spec = make_threshold_model(THRESHOLD, patch_size=(16, 16, 16))
    registry.publish_model(TENANT, "threshold", data, spec, storage)
    originals = {
        "a" * 32: _volume((30, 20, 25), np.diag([1.0, 1.0, 1.0, 1.0]), 1),
        "b" * 32: _volume((18, 33, 21), LPI_AFFINE, 2),  # stored L-P-I: not canonical
        "c" * 32: _volume((20, 20, 20), np.diag([1.0, 1.0, 1.0, 1.0]), 3),
    }
    tasks = [_task(storage, study_id, image) for study_id, image in originals.items()]
    missing = tasks[2].model_copy(
        update={"volume": tasks[2].volume.model_copy(update={"volume_key": "work/none"})}
    )
    not_model = tasks[0].model_copy(
        update={"analysis": AnalysisRequest(name="qc", version="1", runtime=Runtime.LAMBDA)}
    )
    unknown_version = tasks[0].model_copy(
        update={
            "analysis": AnalysisRequest(
                name="model:threshold", version="9", runtime=Runtime.GPU, model_owner=TENANT
            )
        }
    )
    reported: list[tuple[int, object]] = []
    outcomes = run_model_tasks(
        [tasks[0], missing, tasks[1], not_model, unknown_version],
        STORE,
        storage,
        ModelCache("cpu"),
        max_batch_volumes=2,  # two batches of the model: the second decodes while the first runs
        on_result=lambda index, outcome: reported.append((index, outcome)),
    )
    assert len(outcomes) == 5
    assert sorted(reported, key=lambda r: r[0]) == list(enumerate(outcomes))  # each once, as it ends
    assert isinstance(outcomes[1], Exception) and isinstance(outcomes[3], NotAModelTask)
    assert isinstance(outcomes[4], ModelUnavailable)
    for outcome, study_id in ((outcomes[0], "a" * 32), (outcomes[2], "b" * 32)):
        assert isinstance(outcome, AnalysisResult), outcome
        original = originals[study_id]
        key = derived_key(study_id, "model:threshold", "labels.nii.gz")
        assert outcome.artifacts == [key] and outcome.version == "1"
        labels = load_nifti(storage.read(key))
        np.testing.assert_allclose(labels.affine, original.affine)
        assert labels.shape == original.shape and labels.get_data_dtype() == np.uint8
        expected = np.asarray(original.dataobj) > THRESHOLD
        np.testing.assert_array_equal(np.asarray(labels.dataobj), expected.astype(np.uint8))
        foreground = outcome.measures["labels"]["foreground"]
        assert foreground["voxels"] == int(expected.sum())
        assert foreground["volume_ml"] == pytest.approx(expected.sum() / 1000, rel=1e-6)
        # The result is recorded under work/ exactly as the Lambda analyses record theirs.
        stored = AnalysisResult.model_validate_json(
            storage.read(work_key(study_id, 1, "outputs/model:threshold/result.json"))
        )
        assert stored == outcome
        (row,) = STORE.tasks_of(study_id, 1)
        assert row.step == "analysis:model:threshold" and row.status == TaskStatus.SUCCEEDED
    failed = [r for r in STORE.tasks_of("c" * 32, 1)]
    assert failed[0].status == TaskStatus.FAILED and failed[0].error["type"]


def test_the_worker_loads_exactly_the_owner_and_version_dispatch_chose(storage: Storage):
    # Two models named threshold: the tenant's labels voxels over 100, the deployment's none.
    own, spec = make_threshold_model(THRESHOLD, patch_size=(16, 16, 16))
    shared, _ = make_threshold_model(1e9, patch_size=(16, 16, 16))
    registry.publish_model(TENANT, "threshold", own, spec, storage)
    registry.publish_model(DEPLOYMENT_OWNER, "threshold", shared, spec, storage)
    original = _volume((20, 20, 20), np.diag([1.0, 1.0, 1.0, 1.0]), 4)
    tasks = [
        _task(storage, "d" * 32, original, owner=TENANT),
        _task(storage, "e" * 32, original, owner=DEPLOYMENT_OWNER),
        _task(storage, "f" * 32, original, owner="lab-b"),  # lab-b has no model threshold
    ]
    ownerless = tasks[0].model_copy(
        update={"analysis": tasks[0].analysis.model_copy(update={"model_owner": None})}
    )
    cache = ModelCache("cpu")
    outcomes = run_model_tasks([*tasks, ownerless], STORE, storage, cache)
    assert isinstance(outcomes[2], ModelUnavailable) and isinstance(outcomes[3], NotAModelTask)
    expected = (np.asarray(original.dataobj) > THRESHOLD).astype(np.uint8)
    for outcome, study_id, labels, scope in (
        (outcomes[0], "d" * 32, expected, "tenant"),
        (outcomes[1], "e" * 32, np.zeros_like(expected), "deployment"),
    ):
        assert isinstance(outcome, AnalysisResult), outcome
        assert outcome.measures["model_scope"] == scope
        written = load_nifti(storage.read(derived_key(study_id, "model:threshold", "labels.nii.gz")))
        np.testing.assert_array_equal(np.asarray(written.dataobj), labels)
    assert (
        ModelRef(TENANT, "threshold", "1") in cache and ModelRef(DEPLOYMENT_OWNER, "threshold", "1") in cache
    )


def test_a_brain_age_model_gives_its_scalars_with_units_and_the_gap_to_the_subjects_age(storage: Storage):
    # brain_age_years = 0.5 * mean intensity + 20 (the volume as stored: no normalisation, 1 mm RAS).
    data, spec = make_brain_age_model(0.5, 20.0)
    registry.publish_model(TENANT, "brain-age", data, spec, storage)
    analysis = registry.model_analyses(["model:brain-age"], TENANT)["model:brain-age"]
    assert analysis.runtime == Runtime.GPU and analysis.outputs == ()
    described = registry.describe_model_analysis(registry.ready_models(TENANT)["brain-age"])
    assert described["kind"] == "regression" and described["outputs"] == [
        {"name": "brain_age_years", "unit": "years", "compare_to": "age", "gap": "brain_age_gap"},
        {"name": "mean_intensity", "unit": "a.u."},
    ]
    declared_age = 60.0
    originals = {
        "a" * 32: _volume((12, 10, 8), np.diag([1.0, 1.0, 1.0, 1.0]), 5),
        "b" * 32: _volume((9, 11, 10), LPI_AFFINE, 6),  # stored L-P-I: reordered, same mean
        "c" * 32: _volume((12, 10, 8), np.diag([1.0, 1.0, 1.0, 1.0]), 7),
    }
    subjects: dict[str, dict[str, object] | None] = {
        "a" * 32: {"age": declared_age, "sex": "F"},
        "b" * 32: {"age": declared_age},
        "c" * 32: None,  # no subject declared: no gap
    }
    tasks = [
        _task(storage, study_id, image, model="brain-age", subject=subjects[study_id])
        for study_id, image in originals.items()
    ]
    outcomes = run_model_tasks(tasks, STORE, storage, ModelCache("cpu"))
    for outcome, (study_id, original) in zip(outcomes, originals.items(), strict=True):
        assert isinstance(outcome, AnalysisResult), outcome
        mean = float(np.asarray(original.dataobj, dtype=np.float64).mean())
        scalars = outcome.measures["outputs"]
        assert outcome.measures["kind"] == "regression" and outcome.measures["model"] == "brain-age"
        assert scalars["brain_age_years"]["unit"] == "years"
        assert scalars["brain_age_years"]["value"] == pytest.approx(0.5 * mean + 20.0, rel=1e-5)
        assert scalars["mean_intensity"] == {"value": pytest.approx(mean, rel=1e-5), "unit": "a.u."}
        if subjects[study_id] is None:
            assert "brain_age_gap" not in scalars
        else:
            gap = scalars["brain_age_gap"]
            assert gap["value"] == pytest.approx(0.5 * mean + 20.0 - declared_age, rel=1e-5)
            assert (gap["unit"], gap["of"], gap["subject_value"]) == (
                "years",
                "brain_age_years",
                declared_age,
            )
        # Scalars only: no artifact; the result is recorded under work/ as any analysis' is.
        assert outcome.artifacts == []
        assert storage.list_keys(derived_key(study_id, "model:brain-age", "")) == []
        stored = AnalysisResult.model_validate_json(
            storage.read(work_key(study_id, 1, "outputs/model:brain-age/result.json"))
        )
        assert stored == outcome


def test_a_classification_model_gives_class_probabilities_and_the_most_probable_class(storage: Storage):
    classes, weights, biases = ["cn", "mci", "ad"], [0.02, 0.0, -0.02], [0.0, 0.5, 2.0]
    data, spec = make_classifier_model(classes, weights, biases)
    registry.publish_model(TENANT, "dementia", data, spec, storage)
    original = _volume((10, 10, 10), np.diag([1.0, 1.0, 1.0, 1.0]), 8)
    (outcome,) = run_model_tasks(
        [_task(storage, "d" * 32, original, model="dementia")], STORE, storage, ModelCache("cpu")
    )
    assert isinstance(outcome, AnalysisResult), outcome
    mean = float(np.asarray(original.dataobj, dtype=np.float64).mean())  # ~100: cn's logit is largest
    logits = np.array(weights) * mean + np.array(biases)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    probabilities = outcome.measures["probabilities"]
    assert list(probabilities) == classes
    np.testing.assert_allclose([probabilities[name] for name in classes], expected, rtol=1e-4)
    assert outcome.measures["predicted_class"] == classes[int(np.argmax(expected))]
    assert outcome.measures["probability"] == pytest.approx(expected.max(), rel=1e-4)


def test_an_output_that_does_not_match_the_spec_fails_its_task_naming_the_mismatch(storage: Storage):
    # The spec declares two outputs; the network gives one.
    data, spec = make_brain_age_model(1.0, 0.0, values=1)
    registry.publish_model(TENANT, "brain-age", data, spec, storage)
    good, good_spec = make_brain_age_model(1.0, 0.0)
    registry.publish_model(TENANT, "brain-age-ok", good, good_spec, storage)
    original = _volume((8, 8, 8), np.diag([1.0, 1.0, 1.0, 1.0]), 9)
    bad_task = _task(storage, "e" * 32, original, model="brain-age")
    good_task = _task(storage, "f" * 32, original, model="brain-age-ok")
    bad, fine = run_model_tasks([bad_task, good_task], STORE, storage, ModelCache("cpu"))
    assert isinstance(bad, ModelOutputMismatch)
    assert "gave 1 value per volume; the spec declares 2 outputs (brain_age_years, mean_intensity)" in str(
        bad
    )
    (row,) = STORE.tasks_of("e" * 32, 1)
    assert row.status == TaskStatus.FAILED and row.error["type"] == "ModelOutputMismatch"
    assert isinstance(fine, AnalysisResult)  # the other task is its own


def test_a_lambda_runtime_model_is_a_lambda_analysis_within_the_size_bound(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
):
    data, spec = make_brain_age_model(1.0, 0.0, runtime="lambda")
    registry.publish_model(TENANT, "brain-age", data, spec, storage)
    analysis = registry.model_analyses(["model:brain-age"], TENANT)["model:brain-age"]
    assert analysis.runtime == Runtime.LAMBDA
    assert registry.describe_model_analysis(registry.ready_models(TENANT)["brain-age"])["runtime"] == "lambda"
    pending = registry.register_model(TENANT, "brain-age", spec, len(data))
    storage.write(pending.object_key, data)
    # The bound (256 MiB) made smaller than this file: registering is refused, and so is completing
    # a version registered before (no 256 MiB upload to moto needed).
    monkeypatch.setattr(spec_module, "MAX_LAMBDA_MODEL_BYTES", len(data) - 1)
    with pytest.raises(registry.ModelTooLargeForLambda, match="register it with runtime gpu"):
        registry.register_model(TENANT, "too-big", spec, len(data))
    with pytest.raises(registry.ModelTooLargeForLambda):
        registry.complete_model(TENANT, "brain-age", storage, int(pending.version))
    assert registry.get_model(TENANT, "brain-age", int(pending.version)).status == "PENDING"
