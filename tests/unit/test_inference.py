"""The inference core: model specs, the sliding-window runner against MONAI, pre/post-processing."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from tests.fixtures.models import make_threshold_model, make_threshold_onnx_model
from voxelpipe.inference.models import ModelCache
from voxelpipe.inference.processing import ModelInput, model_grid, normalise, preprocess, to_input_grid
from voxelpipe.inference.runner import SlidingWindowRunner, WindowSettings, window_starts
from voxelpipe.inference.spec import InvalidSpec, ModelRef, Normalization, parse_spec
from voxelpipe.keys import DEPLOYMENT_OWNER
from voxelpipe.pipeline.prepare import canonical_volume
from voxelpipe.volume import orientation

CPU = torch.device("cpu")
VALID = {
    "format": "torchscript",
    "spacing_mm": [1, 1, 1],
    "patch_size": [96, 96, 96],
    "labels": {"0": "background", "1": "lesion"},
}


def _net(out_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, out_channels, 3, padding=1)
    ).eval()


# -- spec -------------------------------------------------------------------------------------------


def test_a_minimal_spec_gets_its_defaults():
    spec = parse_spec(VALID)
    assert spec.labels == {0: "background", 1: "lesion"} and spec.out_channels == 2
    assert spec.orientation == "RAS" and spec.overlap == 0.25 and spec.blend == "gaussian"
    assert spec.normalization == Normalization(method="zscore", nonzero=True)
    assert spec.precision == "float32" and spec.in_channels == 1 and spec.model_file == "model.pt"
    assert parse_spec(spec.model_dump_json()) == spec  # JSON round trip (label keys as strings)
    with pytest.raises(Exception, match="frozen"):
        spec.overlap = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"format": "keras"}, "format", "torchscript"),
        ({"spacing_mm": [1, 0, 1]}, "spacing_mm.1", "greater than 0"),
        ({"spacing_mm": [1, 1]}, "spacing_mm", "needs 3 values"),
        ({"orientation": "RAR"}, "orientation", "each axis once"),
        ({"patch_size": [96, 96, 0]}, "patch_size.2", "greater than or equal to 1"),
        ({"overlap": 1.0}, "overlap", "less than 1"),
        ({"labels": {"1": "lesion"}}, "labels", "numbered 0, 1"),
        ({"labels": {"0": "bg"}}, "labels", "at least one more"),
        ({"labels": {"0": "a", "1": "a"}}, "labels", "unique"),
        ({"in_channels": 3}, "in_channels", "1"),
        ({"precision": "float16"}, "precision", "bfloat16"),
        ({"normalization": {"method": "window"}}, "normalization", "needs window"),
        ({"normalization": {"method": "zscore", "window": [0, 1]}}, "normalization", "applies to method"),
        ({"normalization": {"method": "zscore", "clip_percentiles": [99, 1]}}, "normalization", "low < high"),
        ({"sw_batch_size": 0}, "sw_batch_size", "greater than or equal to 1"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(change: dict, field: str, message: str):
    with pytest.raises(InvalidSpec) as raised:
        parse_spec({**VALID, **change})
    fields = [error["field"] for error in raised.value.errors]
    assert field in fields, raised.value.errors
    assert message in str(raised.value)


def test_spec_text_that_is_not_json_is_an_invalid_spec():
    with pytest.raises(InvalidSpec, match="JSON"):
        parse_spec("{not json")


def test_orientation_codes_are_normalised_to_upper_case():
    assert parse_spec({**VALID, "orientation": "lps"}).orientation == "LPS"


# -- runner -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.6])
def test_runner_equals_monai_sliding_window_inference(blend: str, overlap: float):
    net = _net()
    volumes = [torch.randn(1, 40, 33, 27), torch.randn(1, 12, 50, 20), torch.randn(1, 16, 16, 16)]
    settings = WindowSettings(patch=(16, 16, 16), overlap=overlap, blend=blend, sw_batch_size=3)  # type: ignore[arg-type]
    ours = SlidingWindowRunner(net, 3, settings, CPU).run(volumes)
    for volume, mine in zip(volumes, ours, strict=True):
        with torch.no_grad():
            theirs = sliding_window_inference(
                volume[None], (16, 16, 16), 3, net, overlap=overlap, mode=blend
            )[0]
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def test_window_starts_cover_the_volume_like_monai():
    from monai.data.utils import dense_patch_slices

    from voxelpipe.inference.runner import scan_interval

    for shape in [(40, 33, 27), (16, 16, 16), (100, 17, 64)]:
        starts = window_starts(shape, (16, 16, 16), 0.25)
        slices = dense_patch_slices(shape, (16, 16, 16), scan_interval(shape, (16, 16, 16), 0.25))
        assert starts == [tuple(s.start for s in window) for window in slices]


def test_windows_of_volumes_of_different_shapes_share_forward_passes():
    net = _net()
    calls: list[int] = []

    def counting(batch: torch.Tensor) -> torch.Tensor:
        calls.append(int(batch.shape[0]))
        return net(batch)

    volumes = [torch.randn(1, 20, 20, 20), torch.randn(1, 30, 18, 16), torch.randn(1, 10, 12, 14)]
    settings = WindowSettings(patch=(16, 16, 16), overlap=0.5, sw_batch_size=8)
    runner = SlidingWindowRunner(counting, 3, settings, CPU)
    together = runner.run(volumes)
    windows = sum(len(window_starts([max(n, 16) for n in v.shape[1:]], (16, 16, 16), 0.5)) for v in volumes)
    assert sum(calls) == windows and len(calls) == math.ceil(windows / 8)
    assert all(size == 8 for size in calls[:-1])  # every batch full but the last
    alone = [SlidingWindowRunner(net, 3, settings, CPU).run([v])[0] for v in volumes]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Buffers are reused between calls, zeroed: the same inputs give the same outputs.
    again = runner.run(volumes)
    for a, b in zip(together, again, strict=True):
        torch.testing.assert_close(a, b)
    labels = runner.run(volumes, reduce="argmax")
    for a, b in zip(together, labels, strict=True):
        assert torch.equal(a.argmax(0), b)


def test_output_buffers_are_reused_across_calls_and_shapes():
    net = _net()
    runner = SlidingWindowRunner(net, 3, WindowSettings(patch=(16, 16, 16)), CPU)
    big, small, other = torch.randn(1, 40, 30, 20), torch.randn(1, 20, 20, 20), torch.randn(1, 18, 25, 17)
    runner.run([big])
    held = runner.buffer_bytes
    assert held >= 3 * 40 * 30 * 20 * 4
    for volume in (small, other, big):  # smaller volumes fit in the buffer the big one left
        (mine,) = runner.run([volume])
        assert runner.buffer_bytes == held
        with torch.no_grad():
            theirs = sliding_window_inference(
                volume[None], (16, 16, 16), 4, net, overlap=0.25, mode="gaussian"
            )
        torch.testing.assert_close(mine, theirs[0], rtol=1e-5, atol=1e-5)
    runner.run([small, big])  # two at once: a second buffer
    assert runner.buffer_bytes > held


def test_a_network_with_the_wrong_output_channels_is_a_clear_error():
    runner = SlidingWindowRunner(_net(2), 3, WindowSettings(patch=(8, 8, 8)), CPU)
    with pytest.raises(ValueError, match="expected \\(3, 8, 8, 8\\)"):
        runner.run([torch.randn(1, 8, 8, 8)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runner_on_cuda_with_bf16_agrees_with_the_cpu_labels():
    net = _net()
    volume = torch.randn(1, 40, 33, 27)
    cpu = SlidingWindowRunner(net, 3, WindowSettings(patch=(16, 16, 16)), CPU).run([volume], reduce="argmax")
    cuda = torch.device("cuda")
    gpu = SlidingWindowRunner(net.to(cuda), 3, WindowSettings(patch=(16, 16, 16), bf16=True), cuda)
    labels = gpu.run([volume], reduce="argmax")[0].cpu()
    assert (labels == cpu[0]).float().mean() > 0.95


# -- models -----------------------------------------------------------------------------------------


def test_model_cache_loads_each_model_once():
    data, spec = make_threshold_model(threshold=0.5, patch_size=(8, 8, 8))
    cache = ModelCache("cpu")
    first = cache.add(ModelRef("lab-a", "threshold", "1"), data, spec)
    assert cache.add(ModelRef("lab-a", "threshold", "1"), data, spec) is first and cache.loads == 1
    assert ModelRef("lab-a", "threshold", "1") in cache
    cache.add(ModelRef("lab-a", "threshold", "2"), data, spec)
    assert cache.loads == 2
    # Another owner's model of the same name and version is another model.
    assert ModelRef("lab-b", "threshold", "1") not in cache
    cache.add(ModelRef(DEPLOYMENT_OWNER, "threshold", "1"), data, spec)
    assert cache.loads == 3
    volume = torch.linspace(0, 1, 10 * 9 * 8).reshape(1, 10, 9, 8)
    labels = first.runner.run([volume], reduce="argmax")[0]
    assert torch.equal(labels, (volume[0] > 0.5).long())


def test_onnx_models_run_like_torchscript_ones():
    data, spec = make_threshold_onnx_model(threshold=0.25, patch_size=(8, 8, 8))
    assert spec.format == "onnx" and spec.model_file == "model.onnx"
    model = ModelCache("cpu").add(ModelRef("lab-a", "threshold-onnx", "1"), data, spec)
    volume = torch.rand(1, 12, 9, 10)
    labels = model.runner.run([volume], reduce="argmax")[0]
    assert torch.equal(labels, (volume[0] > 0.25).long())


# -- pre/post-processing ----------------------------------------------------------------------------


def _oblique_free_lps_image(shape=(20, 24, 18), zooms=(1.0, 1.0, 1.0)) -> nib.Nifti1Image:
    """A volume stored with permuted, flipped axes (voxel axes: A->P, S->I, R->L order, LPI-like)."""
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 200, size=shape).astype(np.float32)
    affine = np.array(
        [
            [0.0, 0.0, -zooms[2], 40.0],
            [-zooms[0], 0.0, 0.0, 50.0],
            [0.0, -zooms[1], 0.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    return nib.Nifti1Image(data, affine)


def test_label_map_lands_exactly_in_the_inputs_own_grid():
    original = _oblique_free_lps_image()
    assert orientation(original.affine) != ("R", "A", "S")
    prepared = canonical_volume(original)  # what Prepare hands the analyses (RAS)
    _, spec = make_threshold_model(threshold=100.0, patch_size=(16, 16, 16))
    inp = preprocess(prepared, spec, original.affine, original.shape)
    assert orientation(inp.affine) == ("R", "A", "S")
    data = make_threshold_model(100.0, (16, 16, 16))[0]
    model = ModelCache("cpu").add(ModelRef("lab-a", "threshold", "1"), data, spec)
    labels = model.runner.run([torch.from_numpy(inp.data)[None]], reduce="argmax")[0].numpy()
    on_input = to_input_grid(labels, inp, spec)
    assert on_input.shape == original.shape and on_input.dtype == np.uint8
    np.testing.assert_array_equal(on_input, (np.asarray(original.dataobj) > 100.0).astype(np.uint8))


def test_a_spec_orientation_other_than_ras_is_honoured():
    original = _oblique_free_lps_image()
    spec = parse_spec({**VALID, "orientation": "LPI", "patch_size": [8, 8, 8]})
    data, affine = model_grid(canonical_volume(original), spec)
    assert orientation(affine) == ("L", "P", "I")
    back = to_input_grid(
        (data > 100).astype(np.uint8), ModelInput(data, affine, original.affine, original.shape), spec
    )
    np.testing.assert_array_equal(back, (np.asarray(original.dataobj) > 100.0).astype(np.uint8))


def test_a_different_spacing_is_resampled_and_comes_back_on_the_input_grid():
    original = _oblique_free_lps_image(shape=(30, 36, 24), zooms=(1.0, 1.0, 1.0))
    blob = np.zeros(original.shape, dtype=np.float32)
    blob[8:22, 10:28, 6:18] = 150.0  # a box: resampling blurs only its faces
    original = nib.Nifti1Image(blob, original.affine)
    spec = parse_spec(
        {**VALID, "spacing_mm": [2.0, 2.0, 2.0], "patch_size": [8, 8, 8], "normalization": {"method": "none"}}
    )
    inp = preprocess(canonical_volume(original), spec, original.affine, original.shape)
    assert inp.data.shape == (12, 15, 18)  # R-L 24 mm, A-P 30 mm, S-I 36 mm at 2 mm
    labels = (inp.data > 75).astype(np.uint8)
    back = to_input_grid(labels, inp, spec)
    assert back.shape == original.shape
    agreement = (back == (blob > 75)).mean()
    assert agreement > 0.95
    assert back[15, 19, 12] == 1 and back[0, 0, 0] == 0


def test_normalisations():
    data = np.array([0, 0, 1, 2, 3, 1000], dtype=np.float32)
    z = normalise(data, Normalization(method="zscore"))
    assert z[0] == 0 and z[1] == 0 and abs(z[2:].mean()) < 1e-6 and abs(z[2:].std() - 1) < 1e-5
    clipped = normalise(data, Normalization(method="minmax", clip_percentiles=(0, 50)))  # to [1, 2.5]
    np.testing.assert_allclose(clipped, [0, 0, 0, 2 / 3, 1, 1], rtol=1e-6)
    everything = normalise(data, Normalization(method="minmax", nonzero=False))
    assert everything[0] == 0 and everything[-1] == 1
    window = normalise(
        np.array([-2000, -1000, 0, 1000, 3000], dtype=np.float32),
        Normalization(method="window", window=(-1000, 1000)),
    )
    np.testing.assert_allclose(window, [0, 0, 0.5, 1, 1])
    np.testing.assert_array_equal(normalise(data, Normalization(method="none")), data)
    assert not normalise(np.zeros(4, np.float32), Normalization()).any()  # an empty foreground
