"""Registration's accuracy and cost: the MNI152 template registered to a copy of itself moved by a
known affine + smooth nonlinear deformation, scored by the Dice of the template's GM/WM maps
carried through the registration against the same maps carried through the known deformation.

    python bench/registration_accuracy.py [--methods M,M,...|all] [--threads N] [--repeat N] [--json]

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
sinusoid (--strength scales it all; --degrade adds a bias field and noise to its T1). Its GM/WM
truth is the template's maps moved the same way (linear, > 0.5). Each method
runs in a fresh subprocess with --threads threads (voxelpipe.thread_budget.apply_thread_budget:
SimpleITK's, BLAS; ANTs through ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS; default 1), registers
the template to the subject, warps the GM and WM maps (linear) onto the subject's grid; wall and
CPU time cover registration + warps (best of --repeat), peak MB is the process's VmHWM.

About 1.5 minutes with the defaults (identity, affine, demons) on a 2-core machine; bspline adds
about 1.5 min of CPU, ants-syn about 2 (`--methods all`). Exits 0 whatever the figures.
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
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "voxelpipe" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from tests.fixtures.registration import deformed_template

DEFAULT_METHODS = ("identity", "affine", "demons")
ALL_METHODS = (*DEFAULT_METHODS, "bspline", "ants-syn")


def make_subject(folder: Path, strength: float = 1.0, degrade: bool = False) -> None:
    """`deformed_template` as NIfTI files in `folder` (subject_t1, subject_gm, subject_wm); with
    `degrade`, the T1 times segmentation_accuracy.py's smooth bias field (about 0.8-1.2 over the
    brain) with its Rician noise at 4% of WM, zero outside the brain again (still skull-stripped)."""
    import SimpleITK as sitk

    from tests.fixtures.segmentation import bias_field

    for kind, image in deformed_template(strength).items():
        if kind == "t1" and degrade:
            data = sitk.GetArrayFromImage(image)
            brain = data > 0
            biased = data * bias_field(data.shape, brain)
            rng, sigma = np.random.default_rng(0), 0.04 * 220  # Rician: magnitude of complex noise
            rician = np.hypot(biased + rng.normal(0, sigma, data.shape), rng.normal(0, sigma, data.shape))
            noisy = np.where(brain, rician, 0)
            degraded = sitk.GetImageFromArray(noisy.astype(np.float32))
            degraded.CopyInformation(image)
            image = degraded
        sitk.WriteImage(image, str(folder / f"subject_{kind}.nii.gz"))


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
    from voxelpipe.registration import Method, RegistrationSettings, register, warp_probability_map
    from voxelpipe.registration.template import mni152_2009_template
    from voxelpipe.volume import new_image, voxel_data

    template = mni152_2009_template()
    subject = load_nifti((folder / "subject_t1.nii.gz").read_bytes())
    t1 = load_nifti(template.t1.read_bytes())
    registration = register(subject, t1, RegistrationSettings(method=cast(Method, method)), threads=threads)
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

    data: npt.NDArray[np.float32] = voxel_data(load_nifti(path.read_bytes()))
    return data


def worker(method: str, folder: Path, threads: int, repeat: int) -> dict[str, Any]:
    from voxelpipe.thread_budget import apply_thread_budget

    apply_thread_budget(threads)
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
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help=f"of {', '.join(ALL_METHODS)}, or all"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--strength", type=float, default=1.0, help="scales the known deformation")
    parser.add_argument("--degrade", action="store_true", help="bias field and Rician noise on the subject")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.folder), args.threads, args.repeat)))
        return

    methods = list(ALL_METHODS) if args.methods == "all" else [m for m in args.methods.split(",") if m]
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
        "degrade": args.degrade,
        "methods": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_subject(folder, args.strength, args.degrade)
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
        f"(strength {args.strength}{', bias + noise' if args.degrade else ''}); "
        f"{args.threads} thread(s), best of {args.repeat}; "
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
