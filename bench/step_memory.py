"""Peak memory per voxel of the pipeline's steps, for the limits in voxelpipe/limits.py.

    python bench/step_memory.py [--shape X Y Z] [--steps prepare,qc,tissue-seg] [--json]

Each measurement runs in a fresh process: it builds an upload (or a canonical volume) in memory,
resets its high-water mark (VmHWM) to its resident size, runs one step's work as the step's
Lambda does it, and reports, per voxel, how far the high-water mark rose (`work`), and that plus
the bytes the step read from S3 and holds throughout (`total`: the upload for Prepare,
canonical.nii for RunAnalysis).

* prepare: what pipeline/prepare.py holds for a NIfTI upload: the uploaded bytes, load_nifti
  (the decoded buffer), canonical_volume (reoriented, scaled voxels in a fresh header) and
  to_nifti_bytes (canonical.nii, which it then writes to S3).  For every stored type, plain and
  scaled, in RAS and in LPS storage, as .nii.gz of noisy data (which barely compresses: the
  upload is about as large as the volume, the worst case).
* qc / tissue-seg: what RunAnalysis holds: canonical.nii's bytes, load_nifti over them and the
  analysis run on it; for a float32 canonical volume (any scaled upload), an int16 one and a
  float64 one (a float64 upload, or int64 values beyond int32).

The step's memory grows with the voxel count; what a Lambda must hold is about this many bytes a
voxel times the largest volume Limits accepts, plus the Python runtime and libraries (~0.3 GB for
Prepare, ~0.6 GB for RunAnalysis with torch).  Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import subprocess
import sys
import tempfile
from importlib import import_module
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FILL = float(__import__("os").environ.get("FILL", "0.4"))
PREPARE_CASES = [
    (dtype, scaled, orientation)
    for dtype in ("uint8", "int16", "int32", "float32", "float64", "int64")
    for scaled in (False, True)
    for orientation in ("RAS", "LPS")
]
ANALYSIS_CASES = [
    ("float32", "qc"),
    ("int16", "qc"),
    ("float64", "qc"),
    ("float32", "tissue-seg"),
    ("float64", "tissue-seg"),
]


def _high_water() -> int:
    """The peak resident size (VmHWM).  Not ru_maxrss: that also carries the parent's resident size
    when it forked this process (exec keeps it), which the reset below cannot lower."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def _baseline() -> int:
    """The high-water mark, first brought down to the resident size (Linux 4.0+: what imports
    freed again must not hide the step's peak)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _high_water()


def _peak_over(baseline: int) -> int:
    return _high_water() - baseline


def _volume(shape: tuple[int, int, int], dtype: str) -> np.ndarray:
    """A bright ellipsoid in noise, like a head in air."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = sum(((g - (n - 1) / 2) / (FILL * n)) ** 2 for g, n in zip(grids, shape, strict=True)) <= 1
    rng = np.random.default_rng(0)
    data = np.where(inside, 800.0, 20.0) + rng.normal(0, 10, shape)
    return data.astype(dtype)


def build_upload(path: Path, shape: tuple[int, int, int], dtype: str, scaled: bool, orientation: str) -> None:
    import nibabel as nib

    from voxelpipe.nifti import to_nifti_bytes

    affine = np.eye(4) if orientation == "RAS" else np.diag([-1.0, -1.0, 1.0, 1.0])
    image = nib.Nifti1Image(_volume(shape, dtype), affine, dtype=np.dtype(dtype))  # type: ignore[no-untyped-call]
    if scaled:
        image.header.set_slope_inter(0.5, 10.0)  # type: ignore[no-untyped-call]
    path.write_bytes(to_nifti_bytes(image, compress=True))


def build_canonical(path: Path, shape: tuple[int, int, int], dtype: str) -> None:
    import nibabel as nib

    from voxelpipe.nifti import to_nifti_bytes

    image = nib.Nifti1Image(_volume(shape, dtype), np.eye(4))  # type: ignore[no-untyped-call]
    path.write_bytes(to_nifti_bytes(image, compress=False))


def measure_prepare(path: Path) -> dict[str, object]:
    from voxelpipe.nifti import load_nifti, to_nifti_bytes
    from voxelpipe.pipeline.prepare import canonical_volume

    upload = path.read_bytes()  # as storage.read hands it over
    baseline = _baseline()
    original = load_nifti(upload)
    canonical = canonical_volume(original)
    written = to_nifti_bytes(canonical, compress=False)
    peak = _peak_over(baseline)
    voxels = int(np.prod(original.shape))
    return {
        "canonical_dtype": str(canonical.get_data_dtype()),  # type: ignore[no-untyped-call]
        "written_bytes": len(written),
        "work_bytes_per_voxel": round(peak / voxels, 2),
        "total_bytes_per_voxel": round((peak + len(upload)) / voxels, 2),
    }


def measure_analysis(path: Path, analysis: str) -> dict[str, object]:
    from voxelpipe.analyses import CATALOGUE, AnalysisInput
    from voxelpipe.nifti import load_nifti

    run = CATALOGUE[analysis].run
    if analysis == "tissue-seg":
        import_module("voxelpipe.segmentation")  # torch: the runtime's memory, not the volume's

    canonical = path.read_bytes()
    baseline = _baseline()
    image = load_nifti(canonical)
    run(
        AnalysisInput(
            image=image,
            original_orientation=("R", "A", "S"),
            parameters={},
            original_affine=image.affine,
            original_shape=tuple(int(n) for n in image.shape),
        )
    )
    peak = _peak_over(baseline)
    voxels = int(np.prod(image.shape))
    return {
        "work_bytes_per_voxel": round(peak / voxels, 2),
        "total_bytes_per_voxel": round((peak + len(canonical)) / voxels, 2),
    }


def _child(args: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 128))
    parser.add_argument("--steps", default="prepare,qc,tissue-seg")
    parser.add_argument("--dtypes", default="", help="only these stored types (comma-separated)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement, in a process that did not build its input
        kind, path, *rest = args.child
        result = measure_prepare(Path(path)) if kind == "prepare" else measure_analysis(Path(path), rest[0])
        print(json.dumps(result))
        return
    shape = (int(args.shape[0]), int(args.shape[1]), int(args.shape[2]))
    steps = set(args.steps.split(","))
    dtypes = set(filter(None, args.dtypes.split(",")))
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "input.nii"
        if "prepare" in steps:
            for dtype, scaled, orientation in PREPARE_CASES:
                if dtypes and dtype not in dtypes:
                    continue
                build_upload(path, shape, dtype, scaled, orientation)
                case = {"step": "prepare", "dtype": dtype, "scaled": scaled, "orientation": orientation}
                results.append({**case, **_child(["--child", "prepare", str(path)])})
        for dtype, analysis in ANALYSIS_CASES:
            if analysis in steps and (not dtypes or dtype in dtypes):
                build_canonical(path, shape, dtype)
                case = {"step": analysis, "dtype": dtype}
                results.append({**case, **_child(["--child", "analysis", str(path), analysis])})
    for result in results:
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
