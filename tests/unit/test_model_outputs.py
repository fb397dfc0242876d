"""Model kinds: specs of regression and classification models, their runtime, and the conversion
of a network's output vector into results (tiny arrays, no cloud)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.fixtures.models import make_brain_age_model, make_classifier_model
from voxelpipe.function_specs import RUN_ANALYSIS
from voxelpipe.inference.models import ModelCache
from voxelpipe.inference.processing import fit_to_shape
from voxelpipe.inference.runner import SlidingWindowRunner, VolumeRunner
from voxelpipe.inference.scalars import (
    ModelOutputMismatch,
    classification_measures,
    regression_measures,
    scalar_measures,
)
from voxelpipe.inference.spec import (
    MAX_LAMBDA_MODEL_BYTES,
    InvalidSpec,
    ModelRef,
    RegressionOutput,
    lambda_size_problem,
    parse_spec,
)
from voxelpipe.wiring import Runtime

SEGMENTATION = {
    "format": "torchscript",
    "spacing_mm": [1, 1, 1],
    "patch_size": [96, 96, 96],
    "labels": {"0": "background", "1": "lesion"},
}
REGRESSION = {
    "format": "torchscript",
    "kind": "regression",
    "spacing_mm": [1, 1, 1],
    "outputs": [{"name": "brain_age_years", "unit": "years"}],
}
CLASSIFICATION = {
    "format": "onnx",
    "kind": "classification",
    "spacing_mm": [2, 2, 2],
    "classes": ["cn", "mci", "ad"],
}
# The JSON of a segmentation spec before kinds existed: what it still carries, plus kind and runtime.
SEGMENTATION_FIELDS = [
    "format",
    "spacing_mm",
    "orientation",
    "normalization",
    "patch_size",
    "overlap",
    "labels",
    "in_channels",
    "precision",
    "blend",
    "sw_batch_size",
]


# -- specs ------------------------------------------------------------------------------------------


def test_a_spec_without_kind_is_a_segmentation_model_on_the_gpu_workers_as_before():
    spec = parse_spec(SEGMENTATION)
    assert spec.kind == "segmentation" and spec.runtime == Runtime.GPU and spec.window == (96, 96, 96)
    dumped = spec.model_dump(mode="json")
    assert sorted(dumped) == sorted([*SEGMENTATION_FIELDS, "kind", "runtime"])
    assert parse_spec(spec.model_dump_json()) == spec


def test_a_regression_spec_declares_its_outputs_and_the_brain_age_gap_by_convention():
    spec = parse_spec({**REGRESSION, "input_shape": [80, 96, 80], "runtime": "lambda"})
    assert spec.kind == "regression" and spec.runtime == Runtime.LAMBDA and spec.out_channels == 1
    (output,) = spec.outputs or ()
    # brain_age_years compares to the subject's age unless told otherwise; its gap is brain_age_gap.
    assert (output.compare_to, output.gap) == ("age", "brain_age_gap")
    dumped = spec.model_dump(mode="json")
    assert "patch_size" not in dumped and "labels" not in dumped and "overlap" not in dumped
    assert dumped["outputs"] == [{"name": "brain_age_years", "unit": "years", "compare_to": "age"}]
    assert parse_spec(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="no sliding window"):
        _ = spec.window


def test_compare_to_is_general_and_can_be_turned_off():
    off = RegressionOutput.model_validate({"name": "brain_age_years", "unit": "years", "compare_to": None})
    assert off.gap is None
    other = RegressionOutput(name="predicted_age", unit="years", compare_to="age")
    assert other.gap == "predicted_age_gap"
    named = RegressionOutput(name="predicted_age", unit="years", compare_to="age", gap_name="age_delta")
    assert named.gap == "age_delta"
    assert RegressionOutput(name="lesion_load", unit="mL").gap is None


def test_a_classification_spec_declares_its_classes():
    spec = parse_spec(CLASSIFICATION)
    assert spec.classes == ("cn", "mci", "ad") and spec.scores == "logits" and spec.out_channels == 3
    assert parse_spec({**CLASSIFICATION, "scores": "probabilities"}).scores == "probabilities"
    assert parse_spec(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({**REGRESSION, "kind": "survival"}, "kind", "'segmentation', 'regression' or 'classification'"),
        ({**REGRESSION, "outputs": None}, "outputs", "a regression model needs outputs"),
        ({**REGRESSION, "outputs": []}, "outputs", "a regression model needs outputs"),
        (
            {**REGRESSION, "outputs": [{"name": "age", "unit": "years"}, {"name": "age", "unit": "months"}]},
            "outputs",
            "must be unique: age",
        ),
        (  # the gap's name is taken by an output
            {**REGRESSION, "outputs": [*REGRESSION["outputs"], {"name": "brain_age_gap", "unit": "years"}]},
            "outputs",
            "must be unique: brain_age_gap",
        ),
        ({**REGRESSION, "outputs": [{"name": "brain_age_years", "unit": "months"}]}, "outputs.0", "in years"),
        (
            {**REGRESSION, "outputs": [{"name": "x", "unit": "mm", "gap_name": "y"}]},
            "outputs.0",
            "needs compare_to",
        ),
        ({**REGRESSION, "outputs": [{"name": "Brain Age", "unit": "years"}]}, "outputs.0.name", "pattern"),
        ({**REGRESSION, "outputs": [{"name": "x", "unit": " "}]}, "outputs.0.unit", "blank"),
        ({**REGRESSION, "outputs": [{"name": "x"}]}, "outputs.0.unit", "Field required"),
        ({**REGRESSION, "patch_size": [8, 8, 8]}, "patch_size", "segmentation models only"),
        ({**REGRESSION, "overlap": 0.5}, "overlap", "segmentation models only"),
        ({**REGRESSION, "labels": {"0": "a", "1": "b"}}, "labels", "segmentation models only"),
        ({**REGRESSION, "classes": ["a", "b"]}, "classes", "classification model's"),
        ({**REGRESSION, "scores": "probabilities"}, "scores", "classification models"),
        ({**REGRESSION, "runtime": "batch"}, "runtime", "'lambda' or 'gpu'"),
        ({**CLASSIFICATION, "classes": ["only"]}, "classes", "at least two"),
        ({**CLASSIFICATION, "classes": None}, "classes", "at least two"),
        ({**CLASSIFICATION, "classes": ["a", "a "]}, "classes", "unique: a"),
        ({**CLASSIFICATION, "classes": ["a", ""]}, "classes", "needs a name"),
        ({**CLASSIFICATION, "outputs": REGRESSION["outputs"]}, "outputs", "regression model's"),
        ({**CLASSIFICATION, "scores": "odds"}, "scores", "'logits' or 'probabilities'"),
        ({**SEGMENTATION, "input_shape": [8, 8, 8]}, "input_shape", "whole-volume models"),
        ({**SEGMENTATION, "outputs": REGRESSION["outputs"]}, "outputs", "regression model's"),
        ({"format": "torchscript", "spacing_mm": [1, 1, 1]}, "patch_size", "needs patch_size"),
        ({"format": "torchscript", "spacing_mm": [1, 1, 1]}, "labels", "needs labels"),
    ],
)
def test_bad_specs_of_each_kind_are_refused_naming_the_field(spec: dict, field: str, message: str):
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(spec)
    assert field in [error["field"] for error in raised.value.errors], raised.value.errors
    assert message in str(raised.value)


def test_the_lambda_runtime_takes_small_model_files_only():
    small, large = MAX_LAMBDA_MODEL_BYTES, MAX_LAMBDA_MODEL_BYTES + 1
    on_lambda = parse_spec({**REGRESSION, "runtime": "lambda"})
    assert lambda_size_problem(on_lambda, small) is None
    problem = lambda_size_problem(on_lambda, large)
    assert problem is not None and "256 MiB" in problem and "runtime gpu" in problem
    assert lambda_size_problem(parse_spec(REGRESSION), 5 * 1024**3) is None  # the GPU workers: any size


def test_the_lambda_bound_leaves_most_of_run_analysis_memory_to_the_volume_and_activations():
    # Loading peaks at about 4x the file's size (measured; see spec.MAX_LAMBDA_MODEL_BYTES).
    loading_peak = 4 * MAX_LAMBDA_MODEL_BYTES
    assert loading_peak <= RUN_ANALYSIS.memory_mb * 1024**2 / 10


# -- output conversion ------------------------------------------------------------------------------

AGE_OUTPUTS = (
    RegressionOutput(name="brain_age_years", unit="years"),
    RegressionOutput(name="lesion_load", unit="mL"),
)


def test_regression_outputs_carry_their_units_and_the_gap_to_the_declared_age():
    measures = regression_measures(np.array([71.5, 3.25], dtype=np.float32), AGE_OUTPUTS, {"age": 68})
    assert measures == {
        "outputs": {
            "brain_age_years": {"value": 71.5, "unit": "years"},
            "lesion_load": {"value": 3.25, "unit": "mL"},
            "brain_age_gap": {
                "value": 3.5,
                "unit": "years",
                "of": "brain_age_years",
                "compared_to": "age",
                "subject_value": 68.0,
            },
        }
    }
    # float32 noise is not reported: seven significant digits.
    assert regression_measures(np.float32([63.2]), AGE_OUTPUTS[:1], {})["outputs"]["brain_age_years"][
        "value"
    ] == pytest.approx(63.2, abs=0)


@pytest.mark.parametrize("subject", [{}, {"age": None}, {"age": True}, {"age": "70"}, {"age": math.nan}])
def test_no_gap_without_a_declared_numeric_age(subject: dict):
    measures = regression_measures(np.array([71.5, 1.0]), AGE_OUTPUTS, subject)
    assert set(measures["outputs"]) == {"brain_age_years", "lesion_load"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([71.5], "gave 1 value per volume; the spec declares 2 outputs (brain_age_years, lesion_load)"),
        ([71.5, 1.0, 2.0], "gave 3 values per volume; the spec declares 2 outputs"),
        ([math.nan, 1.0], "non-finite values for brain_age_years (nan)"),
        ([1.0, math.inf], "non-finite values for lesion_load (inf)"),
    ],
)
def test_a_regression_vector_that_is_not_what_the_spec_declares_is_named(values: list, message: str):
    with pytest.raises(ModelOutputMismatch, match=message.replace("(", r"\(").replace(")", r"\)")):
        regression_measures(np.asarray(values), AGE_OUTPUTS, {"age": 60})


def test_classification_gives_softmax_probabilities_and_the_most_probable_class():
    logits = np.array([2.0, 0.5, -1.0], dtype=np.float32)
    measures = classification_measures(logits, ("cn", "mci", "ad"), "logits")
    expected = np.exp(logits) / np.exp(logits).sum()
    assert list(measures["probabilities"]) == ["cn", "mci", "ad"]
    np.testing.assert_allclose(list(measures["probabilities"].values()), expected, rtol=1e-6)
    assert measures["predicted_class"] == "cn" and measures["probability"] == pytest.approx(expected[0])
    # Huge logits do not overflow.
    assert classification_measures([1000.0, 0.0], ("a", "b"), "logits")["probabilities"] == {
        "a": 1.0,
        "b": 0.0,
    }


def test_classification_takes_the_networks_own_probabilities_when_the_spec_says_so():
    measures = classification_measures([0.1, 0.7, 0.2], ("cn", "mci", "ad"), "probabilities")
    assert measures["probabilities"] == {"cn": 0.1, "mci": 0.7, "ad": 0.2}
    assert measures["predicted_class"] == "mci"
    for bad in ([2.0, -1.0, 0.0], [0.5, 0.5, 0.5]):
        with pytest.raises(ModelOutputMismatch, match="outputs probabilities"):
            classification_measures(bad, ("cn", "mci", "ad"), "probabilities")
    with pytest.raises(ModelOutputMismatch, match="declares 3 classes"):
        classification_measures([0.5, 0.5], ("cn", "mci", "ad"), "logits")


def test_scalar_measures_follow_the_specs_kind():
    regression = parse_spec(REGRESSION)
    assert scalar_measures([70.0], regression, {"age": 72})["outputs"]["brain_age_gap"]["value"] == -2.0
    classification = parse_spec(CLASSIFICATION)
    assert scalar_measures([0.0, 0.0, 5.0], classification, {})["predicted_class"] == "ad"
    with pytest.raises(ValueError, match="segmentation"):
        scalar_measures([1.0], parse_spec(SEGMENTATION), {})


# -- whole-volume input -----------------------------------------------------------------------------


def test_fit_to_shape_crops_and_pads_around_the_centre_keeping_world_positions():
    data = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    affine = np.array([[2.0, 0, 0, 10], [0, 1.0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    fitted, moved = fit_to_shape(data, affine, (3, 4, 6))  # crop x by 2, keep y, pad z by 3
    assert fitted.shape == (3, 4, 6)
    np.testing.assert_array_equal(fitted[:, :, 1:4], data[1:4])
    assert not fitted[:, :, 0].any() and not fitted[:, :, 4:].any()
    # The same voxel is at the same place in the world on both grids.
    old, new = np.array([1, 2, 0, 1.0]), np.array([0, 2, 1, 1.0])
    np.testing.assert_allclose(affine @ old, moved @ new)


def test_the_volume_runner_batches_equal_shapes_and_flattens_each_output():
    calls: list[tuple[int, ...]] = []

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(batch.shape))
        # (B, 2, 1, 1, 1): a network ending in a global pool, without a flatten.
        return torch.stack([batch.mean(dim=(1, 2, 3, 4)), batch.amax(dim=(1, 2, 3, 4))], 1)[
            ..., None, None, None
        ]

    runner = VolumeRunner(predictor, torch.device("cpu"))
    volumes = [torch.full((1, 4, 4, 4), 1.0), torch.full((1, 3, 5, 4), 2.0), torch.full((1, 4, 4, 4), 3.0)]
    outputs = runner.run(volumes)
    assert sorted(calls) == [(1, 1, 3, 5, 4), (2, 1, 4, 4, 4)]
    assert [output.tolist() for output in outputs] == [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]
    with pytest.raises(ValueError, match="for a batch of 2 volume"):
        VolumeRunner(lambda batch: batch.mean().reshape(1), torch.device("cpu")).run(volumes[::2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_volume_runner_on_cuda_with_bf16_agrees_with_the_cpu():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    volumes = [torch.randn(1, 20, 24, 18), torch.randn(1, 20, 24, 18), torch.randn(1, 16, 16, 16)]
    cpu = VolumeRunner(net, torch.device("cpu")).run(volumes)
    cuda = torch.device("cuda")
    gpu = VolumeRunner(net.to(cuda), cuda, bf16=True).run(volumes)
    for on_cpu, on_gpu in zip(cpu, gpu, strict=True):
        assert on_gpu.device.type == "cpu" and on_gpu.dtype == torch.float32
        torch.testing.assert_close(on_gpu, on_cpu, rtol=0.05, atol=0.02)


def test_whole_volume_models_load_with_a_volume_runner():
    data, spec = make_brain_age_model(2.0, 10.0)
    model = ModelCache("cpu").add(ModelRef("lab-a", "age", "1"), data, spec)
    assert isinstance(model.runner, VolumeRunner)
    (output,) = model.runner.run([torch.full((1, 6, 6, 6), 5.0)])
    assert output.tolist() == [20.0, 5.0]
    data, spec = make_classifier_model(["a", "b"], [1.0, -1.0], [0.0, 0.0])
    assert not isinstance(
        ModelCache("cpu").add(ModelRef("lab-a", "cls", "1"), data, spec).runner, SlidingWindowRunner
    )
