"""voxelpipe.registration on small volumes: the MNI152 template registered, at 4 mm, to a copy of
itself moved by a known affine + smooth deformation (tests/fixtures/registration.py) must carry
its GM/WM maps and a label map onto the deformed ones; forward then inverse must come back to the
start; the transforms must survive being stored as files. The 1 mm figures are
bench/registration_accuracy.py's."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tests.fixtures.registration import deformed_template
from tests.fixtures.segmentation import dice
from voxelpipe.nifti import load_nifti
from voxelpipe.registration import (
    TRANSFORM_FILES,
    Registration,
    RegistrationSettings,
    mni152_2009_template,
    register,
    registration_from_files,
    transform_files,
    warp_label_map,
    warp_probability_map,
)
from voxelpipe.registration.images import array_to_sitk, sitk_affine, to_nibabel, to_sitk
from voxelpipe.volume import Image, new_image, reoriented, voxel_data

SPACING_MM = 4.0
# 4 mm working grid: the pyramid's coarsest demons level would be 16 mm, too coarse; two levels.
SETTINGS = RegistrationSettings(working_spacing_mm=SPACING_MM, demons_iterations=(40, 30))


def _template_maps() -> dict[str, Image]:
    """The template's T1 and its GM/WM probabilities, and a label map (1 GM, 2 WM) from them."""
    template = mni152_2009_template()
    t1 = load_nifti(template.t1.read_bytes())
    gm_img, wm_img = (load_nifti(path.read_bytes()) for path in (template.gm, template.wm))
    gm, wm = voxel_data(gm_img) / 255.0, voxel_data(wm_img) / 255.0
    labels = np.where(gm > 0.5, 1, 0) + np.where(wm > 0.5, 2, 0)
    return {
        "t1": t1,
        "gm": new_image(gm.astype(np.float32), t1.affine),
        "wm": new_image(wm.astype(np.float32), t1.affine),
        "labels": new_image(labels.astype(np.int16), t1.affine),
    }


@pytest.fixture(scope="module")
def case() -> dict[str, object]:
    subject = {kind: to_nibabel(image) for kind, image in deformed_template(1.0, SPACING_MM).items()}
    template = _template_maps()
    registration = register(subject["t1"], template["t1"], SETTINGS, threads=1)
    return {"subject": subject, "template": template, "registration": registration}


def test_nibabel_sitk_round_trip_keeps_world_coordinates() -> None:
    affine = np.array([[0, 0, -2.0, 50], [1.5, 0, 0, -30], [0, 1.2, 0, 10], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    image = array_to_sitk(data, affine)
    np.testing.assert_allclose(sitk_affine(image), affine, atol=1e-9)
    # Voxel (i, j, k) of the array is index (i, j, k) in ITK, at the same point (ITK: LPS).
    ras = affine @ np.array([1, 2, 3, 1.0])
    lps = image.TransformIndexToPhysicalPoint([1, 2, 3])
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)
    assert image[1, 2, 3] == data[1, 2, 3]
    back = to_nibabel(image)
    np.testing.assert_array_equal(voxel_data(back), data)
    # A reoriented copy of the image is the same image to ITK.
    flipped = to_sitk(reoriented(new_image(data, affine), "LPS"))
    assert flipped[flipped.TransformPhysicalPointToIndex(lps)] == data[1, 2, 3]


def test_registration_recovers_known_deformation(case) -> None:
    subject, template = case["subject"], case["template"]
    registration: Registration = case["registration"]
    for tissue in ("gm", "wm"):
        truth = voxel_data(subject[tissue]) > 0.5
        before = dice(
            voxel_data(warp_probability_map(template[tissue], identity(), subject["t1"])) > 0.5, truth
        )
        after = dice(
            voxel_data(warp_probability_map(template[tissue], registration, subject["t1"])) > 0.5, truth
        )
        assert before < 0.6, (tissue, before)  # the deformation is real
        assert after > 0.85, (tissue, before, after)


def test_label_map_warps_by_nearest_neighbour(case) -> None:
    subject, template = case["subject"], case["template"]
    warped = warp_label_map(template["labels"], case["registration"], subject["t1"])
    labels = np.asarray(warped.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2}  # no blend of labels
    gm_truth, wm_truth = (voxel_data(subject[t]) > 0.5 for t in ("gm", "wm"))
    assert dice(labels == 1, gm_truth) > 0.8
    assert dice(labels == 2, wm_truth) > 0.85


def test_inverse_undoes_forward(case) -> None:
    registration: Registration = case["registration"]
    forward, inverse = registration.forward(), registration.inverse()
    # Points inside the subject's brain, off the grid's edge slices: the deformed brain touches the
    # bottom of this small field of view, and at the grid's edge the inverse field is held at zero.
    subject = to_sitk(case["subject"]["t1"])
    inside = sitk.GetArrayFromImage(subject).transpose(2, 1, 0) > 0
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:], inside[:, :, :2], inside[:, :, -2:] = (False,) * 6
    brain = np.argwhere(inside)
    rng = np.random.default_rng(0)
    points = [
        subject.TransformIndexToPhysicalPoint([int(v) for v in brain[i]]) for i in rng.choice(len(brain), 300)
    ]
    errors = [
        np.linalg.norm(np.subtract(inverse.TransformPoint(forward.TransformPoint(p)), p)) for p in points
    ]
    assert np.mean(errors) < 0.2, np.mean(errors)
    assert np.max(errors) < 1.0, np.max(errors)
    # Not the identity itself: the registration does move points.
    moved = [np.linalg.norm(np.subtract(forward.TransformPoint(p), p)) for p in points]
    assert np.mean(moved) > 3.0


def test_subject_mask_hides_what_lies_outside_the_brain(case) -> None:
    """An unstripped subject (here: a bright shell around the brain) registered with its brain mask
    gets the stripped subject's affine; without the mask the shell pulls it off."""
    subject, template = case["subject"], case["template"]
    t1 = voxel_data(subject["t1"])
    brain = t1 > 0
    shelled = new_image(np.where(brain, t1, 400.0).astype(np.float32), subject["t1"].affine)
    affine_only = RegistrationSettings(method="affine", working_spacing_mm=SPACING_MM)
    grid = to_sitk(subject["t1"])
    points = [
        grid.TransformIndexToPhysicalPoint([int(v) for v in index]) for index in np.argwhere(brain)[::20]
    ]

    def mean_distance(a: sitk.Transform, b: sitk.Transform) -> float:
        return float(
            np.mean([np.linalg.norm(np.subtract(a.TransformPoint(p), b.TransformPoint(p))) for p in points])
        )

    stripped = register(subject["t1"], template["t1"], affine_only, threads=1).affine
    masked = register(shelled, template["t1"], affine_only, subject_mask=brain, threads=1).affine
    unmasked = register(shelled, template["t1"], affine_only, threads=1).affine
    assert mean_distance(masked, stripped) < 0.5
    assert mean_distance(unmasked, stripped) > 2.0  # the shell matters: the mask is what removed it


def test_transforms_survive_storage(case) -> None:
    registration: Registration = case["registration"]
    files = transform_files(registration)
    assert set(files) == set(TRANSFORM_FILES)
    restored = registration_from_files(files)
    subject, template = case["subject"], case["template"]
    direct = voxel_data(warp_probability_map(template["gm"], registration, subject["t1"]))
    stored = voxel_data(warp_probability_map(template["gm"], restored, subject["t1"]))
    np.testing.assert_allclose(stored, direct, atol=1e-4)
    with pytest.raises(ValueError, match="missing"):
        registration_from_files({name: files[name] for name in TRANSFORM_FILES[:2]})


def identity() -> Registration:
    """The registration that moves nothing (a zero field on a small grid)."""
    field = sitk.Image([4, 4, 4], sitk.sitkVectorFloat64, 3)
    field.SetSpacing([100.0] * 3)
    field.SetOrigin([-150.0] * 3)
    return Registration(sitk.AffineTransform(3), field, sitk.Image(field))


def test_template_found_by_env_then_package_then_nilearn(tmp_path) -> None:
    from voxelpipe.registration import template as template_module

    installed = mni152_2009_template(environ={})
    assert installed.t1.is_file() and installed.gm.is_file() and installed.wm.is_file()
    assert "McGill" in installed.provenance()["licence"] and "Fonov" in installed.provenance()["citation"]
    own = tmp_path / "own"
    own.mkdir()
    for path in (installed.t1, installed.gm, installed.wm):
        (own / path.name).write_bytes(b"")
    assert mni152_2009_template(environ={template_module.TEMPLATE_DIR_ENV: str(own)}).t1.parent == own
    (own / installed.wm.name).unlink()  # incomplete: not used
    assert mni152_2009_template(environ={template_module.TEMPLATE_DIR_ENV: str(own)}).t1 == installed.t1


def test_unpack_template_from_a_wheel(tmp_path) -> None:
    import zipfile

    from voxelpipe.registration.template import unpack_template

    installed = mni152_2009_template(environ={})
    wheel = tmp_path / "nilearn-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in (installed.t1, installed.gm, installed.wm):
            archive.writestr(f"nilearn/datasets/data/{path.name}", path.name.encode())
        archive.writestr("nilearn/__init__.py", "")
    written = unpack_template(wheel, tmp_path / "data")
    assert sorted(p.name for p in written) == sorted(
        p.name for p in (installed.t1, installed.gm, installed.wm)
    )
    assert all(p.read_bytes() == p.name.encode() for p in written)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("nilearn/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="has no"):
        unpack_template(wheel, tmp_path / "other")


def test_images_unpack_the_pinned_nilearn() -> None:
    """The images download the nilearn the `local` extra pins: the template the tests and benches
    score is the one deployed."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    local = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["local"]
    (pin,) = [spec for spec in local if spec.startswith("nilearn==")]
    for dockerfile in ("functions/run_analysis/Dockerfile", "functions/gpu_worker/Dockerfile"):
        text = (root / dockerfile).read_text()
        assert re.findall(r'"(nilearn==[^"]+)"', text) == [pin], dockerfile
        assert "registration/template.py" in text
