"""Registration's accuracy and cost: the MNI152 template registered to a copy of itself moved by a
known affine + smooth nonlinear deformation, scored by the Dice of the template's GM/WM maps
carried through the registration against the same maps carried through the known deformation.

    python bench/registration_accuracy.py [--methods identity,affine,...] [--threads N] [--repeat N] [--json]

Methods:
  identity     no registration (what the deformation alone does to the overlap)
  affine       voxelpipe.registration, affine only (SimpleITK)
  demons       voxelpipe.registration default: affine + diffeomorphic demons (SimpleITK)
  bspline      voxelpipe.registration: affine + B-spline FFD (SimpleITK)
  ants-syn     ANTsPy `ants.registration(type_of_transform="SyN")` (affine + SyN, its defaults),
               only where antspyx is installed (not a project dependency: see docs/pipeline.md)

The "subject" is the 1 mm template resampled through subject -> template points
x -> A(x + u(x)): A rotates by 8/-5/4 degrees, scales by 1.06/0.95/1.03, shears slightly and
shifts by (6, -5, 4) mm; u is a sum of Gaussian bumps (sigma 20-30 mm, up to 6 mm) and a slow
sinusoid. Its GM/WM truth is the template's maps moved the same way (linear, > 0.5). Each method
runs in a fresh subprocess with --threads threads (SimpleITK's/ITK's pool; default 1), registers
the template to the subject, warps the GM and WM maps (linear) onto the subject's grid; wall and
CPU time cover registration + warps (best of --repeat), peak MB is the process's VmHWM.

About 3 minutes with the defaults on a 2-core machine (identity, affine, demons, bspline; add
ants-syn for ~1.5 min more). Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_METHODS = ("identity", "affine", "demons", "bspline")
ALL_METHODS = (*DEFAULT_METHODS, "ants-syn")


def known_deformation(reference: Any, strength: float = 1.0) -> Any:
    """The known subject -> template point mapping on `reference`'s extent (a SimpleITK transform):
    the displacement u first, then the affine A (a CompositeTransform applies last-added first)."""
    import SimpleITK as sitk

    centre = np.asarray(
        reference.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in reference.GetSize()])
    )
    a, b, c = (math.radians(v * strength) for v in (8.0, -5.0, 4.0))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    scale = np.diag(1 + strength * np.array([0.06, -0.05, 0.03]))
    shear = np.eye(3)
    shear[0, 1] = 0.03 * strength
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([float(v) for v in (rz @ ry @ rx @ scale @ shear).ravel()])
    affine.SetCenter([float(v) for v in centre])
    affine.SetTranslation([float(v) * strength for v in (6.0, -5.0, 4.0)])

    # The displacement on a 4 mm grid over the reference (linear in between: smooth at 20+ mm).
    spacing = 4.0
    size = [
        max(2, math.ceil(n * s / spacing)) + 1
        for n, s in zip(reference.GetSize(), reference.GetSpacing(), strict=True)
    ]
    grid = sitk.Image(size, sitk.sitkVectorFloat64, 3)
    grid.SetSpacing([spacing] * 3)
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin(reference.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    points = np.asarray(grid.GetOrigin()) + (index * spacing) @ direction.T
    rel = points - centre
    bumps = [  # (offset from centre in mm, sigma mm, displacement mm)
        ((20, 10, 15), 25, (4.0, -3.0, 2.0)),
        ((-25, -20, 0), 20, (-3.0, 4.0, -3.0)),
        ((0, 30, -15), 30, (2.0, 3.0, 4.0)),
        ((-10, -35, 25), 22, (-4.0, -2.0, 3.0)),
    ]
    u = np.zeros_like(points)
    for offset, sigma, vector in bumps:
        weight = np.exp(-((rel - np.asarray(offset)) ** 2).sum(axis=1) / (2 * sigma**2))
        u += weight[:, None] * np.asarray(vector)
    u[:, 2] += 2.0 * np.sin(rel[:, 0] / 40.0)
    u *= strength
    # sitk arrays run (k, j, i, component)
    field = sitk.GetImageFromArray(u.reshape(*size, 3).transpose(2, 1, 0, 3), isVector=True)
    field.CopyInformation(grid)
    return sitk.CompositeTransform([affine, sitk.DisplacementFieldTransform(field)])


def make_subject(folder: Path, strength: float = 1.0, spacing_mm: float | None = None) -> None:
    """The deformed template (t1) and its GM/WM truth, as NIfTI files in `folder`."""
    import SimpleITK as sitk

    from infra.local.samples import mni152_t1_path
    from voxelpipe.registration.template import mni152_2009_template

    template = mni152_2009_template()
    assert template.t1 == mni152_t1_path()
    t1 = sitk.ReadImage(str(template.t1), sitk.sitkFloat32)
    reference = t1
    if spacing_mm is not None:
        size = [round(n * s / spacing_mm) for n, s in zip(t1.GetSize(), t1.GetSpacing(), strict=True)]
        reference = sitk.Image(size, sitk.sitkFloat32)
        reference.SetSpacing([spacing_mm] * 3)
        reference.SetDirection(t1.GetDirection())
        reference.SetOrigin(t1.TransformContinuousIndexToPhysicalPoint([(spacing_mm - 1) / 2] * 3))
    deformation = known_deformation(reference, strength)
    for kind, path in (("t1", template.t1), ("gm", template.gm), ("wm", template.wm)):
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
        if kind != "t1":
            image = image / 255.0
        sitk.WriteImage(
            sitk.Resample(image, reference, deformation, sitk.sitkLinear, 0.0),
            str(folder / f"subject_{kind}.nii.gz"),
        )


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def peak_mb() -> float:
    """VmHWM (not ru_maxrss, which carries the parent's RSS at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_sitk(method: str, folder: Path, threads: int) -> tuple[Any, Any, dict[str, Any]]:
    from voxelpipe.nifti import load_nifti
    from voxelpipe.registration import RegistrationSettings, register, warp_probability_map
    from voxelpipe.registration.template import mni152_2009_template
    from voxelpipe.volume import new_image, voxel_data

    template = mni152_2009_template()
    subject = load_nifti((folder / "subject_t1.nii.gz").read_bytes())
    t1 = load_nifti(template.t1.read_bytes())
    registration = register(subject, t1, RegistrationSettings(method=method), threads=threads)  # type: ignore[arg-type]
    warped = []
    for path in (template.gm, template.wm):
        img = load_nifti(path.read_bytes())
        probabilities = new_image(voxel_data(img) / 255.0, img.affine)
        warped.append(voxel_data(warp_probability_map(probabilities, registration, subject)))
    return warped[0], warped[1], {"stages_s": {k: round(v, 2) for k, v in registration.seconds.items()}}


def _run_ants(folder: Path) -> tuple[Any, Any, dict[str, Any]]:
    import ants

    from voxelpipe.registration.template import mni152_2009_template

    template = mni152_2009_template()
    subject = ants.image_read(str(folder / "subject_t1.nii.gz"))
    moving = ants.image_read(str(template.t1))
    result = ants.registration(fixed=subject, moving=moving, type_of_transform="SyN", random_seed=1)
    warped = []
    for path in (template.gm, template.wm):
        img = ants.image_read(str(path)) / 255.0
        out = ants.apply_transforms(
            fixed=subject, moving=img, transformlist=result["fwdtransforms"], interpolator="linear"
        )
        warped.append(out.numpy())
    return warped[0], warped[1], {"ants": ants.__version__}


def _voxels(path: Path) -> npt.NDArray[np.float32]:
    from voxelpipe.nifti import load_nifti
    from voxelpipe.volume import voxel_data

    return voxel_data(load_nifti(path.read_bytes()))


def worker(method: str, folder: Path, threads: int, repeat: int) -> dict[str, Any]:
    best_wall, best_cpu = math.inf, math.inf
    extra: dict[str, Any] = {}
    gm = wm = None
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), _cpu()
        if method == "identity":
            from voxelpipe.registration.template import mni152_2009_template

            template = mni152_2009_template()
            gm, wm = _voxels(template.gm) / 255.0, _voxels(template.wm) / 255.0
        elif method == "ants-syn":
            gm, wm, extra = _run_ants(folder)
        else:
            gm, wm, extra = _run_sitk(method, folder, threads)
        best_wall = min(best_wall, time.perf_counter() - wall0)
        best_cpu = min(best_cpu, _cpu() - cpu0)
    np.save(folder / f"gm_{method}.npy", np.asarray(gm, dtype=np.float32))
    np.save(folder / f"wm_{method}.npy", np.asarray(wm, dtype=np.float32))
    return {"wall_s": round(best_wall, 2), "cpu_s": round(best_cpu, 2), "peak_mb": peak_mb(), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {', '.join(ALL_METHODS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--strength", type=float, default=1.0, help="scales the known deformation")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.folder), args.threads, args.repeat)))
        return

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(ALL_METHODS)}")
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(args.threads)}
    env.update(
        {name: str(args.threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    )
    report: dict[str, Any] = {
        "threads": args.threads,
        "repeat": args.repeat,
        "strength": args.strength,
        "methods": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_subject(folder, args.strength)
        truth_gm = _voxels(folder / "subject_gm.nii.gz") > 0.5
        truth_wm = _voxels(folder / "subject_wm.nii.gz") > 0.5
        for method in methods:
            command = [
                sys.executable,
                __file__,
                "--worker",
                method,
                "--folder",
                tmp,
                "--threads",
                str(args.threads),
                "--repeat",
                str(args.repeat),
            ]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                report["methods"][method] = {
                    "error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                }
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            gm = np.load(folder / f"gm_{method}.npy") > 0.5
            wm = np.load(folder / f"wm_{method}.npy") > 0.5
            row.update(dice_gm=round(dice(gm, truth_gm), 3), dice_wm=round(dice(wm, truth_wm), 3))
            report["methods"][method] = row
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        "Registration of the 1 mm MNI152 2009a template to itself under a known affine + smooth deformation "
        f"(strength {args.strength}); {args.threads} thread(s), best of {args.repeat}; "
        "Dice of GM/WM (> 0.5) vs the truth"
    )
    print(f"{'method':<10} {'GM Dice':>8} {'WM Dice':>8} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}  stages")
    for method, row in report["methods"].items():
        if "error" in row:
            print(f"{method:<10} error: {row['error']}")
            continue
        print(
            f"{method:<10} {row['dice_gm']:>8.3f} {row['dice_wm']:>8.3f} {row['wall_s']:>8.1f} "
            f"{row['cpu_s']:>8.1f} {row['peak_mb']:>8.0f}  {row.get('stages_s', row.get('ants', ''))}"
        )


if __name__ == "__main__":
    main()
