"""tissue-seg's accuracy and cost: Dice against the MNI152 template's own GM/WM maps, next to a 1-D
k-means baseline, on the clean template and on degraded versions of it; and segment() at the
default thread budget against 1 thread.

    python bench/segmentation_accuracy.py [--variants clean,bias,...] [--threads N] [--repeat N] [--json]

* ours:     voxelpipe.segmentation.segment -- brain mask (detected/extracted), bias correction, EM
            mixture with MRF prior -- on the variant's voxel grid.
* baseline: 1-D k-means (3 clusters, numpy) on the intensities inside the *true* brain mask (the
            template's nonzero voxels; ours finds its own), labels by cluster order.

Dice is computed on each variant's grid against the template's GM and WM probability maps moved
to that grid (linear) and thresholded at 0.5. Each method runs in a fresh subprocess with N threads
(--threads, default 1: torch, BLAS, through VOXELPIPE_ANALYSIS_THREADS and
voxelpipe.thread_budget, as the pipeline sets them), so its peak memory (VmHWM: Python, torch,
the input and the method) and its time (perf_counter around the method only, best of --repeat
runs in that process) are its own. Then the whole analysis chain on the 1 mm MNI152 T1 as the
pipeline runs it (canonical input; tissue-seg with its NIfTI and PNG outputs on the input's grid;
volumetrics from those NIfTIs; normative against a one-row table). The last line is segment() on
the clean template at the default thread budget (what RunAnalysis gives an analysis on this
machine: voxelpipe.thread_budget without the override) against 1 thread, best of max(2, --repeat)
each, same run: the budget must never be the slower.

Variants (as tests/unit/test_segmentation.py makes them):
  clean       the 1 mm template (skull-stripped: nilearn ships it masked)
  bias        x a smooth multiplicative field (linear ramp + off-centre bump, ~0.8-1.2 over the brain)
  noise       Rician noise, sigma 4% of WM per channel, background zeroed again
  bias+noise  both
  voxel       resampled to 1.5 x 1.5 x 2 mm (linear)
  oblique     a 1.5 mm LPS grid rotated 12 and 8 degrees (linear)
  skull       wrapped in synthetic CSF, skull with marrow, muscle, fat, skin, 2% Rician noise
  all         every degradation at once: resampled to a 1.2 mm LPS grid (linear), x a smooth field
              scaled to 0.75-1.25 over the brain (+-25%), Rician noise at 4% of WM, background zeroed

About 2 minutes with the defaults on a 2-core machine (1 thread, --repeat 1). Exits 0 whatever the
figures.
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

from infra.local.samples import mni152_t1_path
from voxelpipe.nifti import load_nifti
from voxelpipe.thread_budget import THREAD_ENV_VARS, THREADS_ENV, apply_thread_budget, thread_budget
from voxelpipe.volume import voxel_data

TEMPLATE, SUFFIX = "mni_icbm152", "tal_nlin_sym_09a_converted.nii.gz"
VARIANTS = ("clean", "bias", "noise", "bias+noise", "voxel", "oblique", "skull", "all")
WM_INTENSITY = 220.0  # about the template's WM (median 215): the noise's reference
FloatArray = npt.NDArray[np.float32]


# --- degraded inputs (scipy is fine here: bench only) ----------------------------------------------


def _resample_to(
    data: npt.NDArray[Any],
    src: npt.NDArray[np.float64],
    dst: npt.NDArray[np.float64],
    shape: tuple[int, ...],
    order: int,
) -> FloatArray:
    from scipy import ndimage

    m = np.linalg.solve(src, dst)
    out = ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=shape, order=order)
    return np.asarray(out, dtype=np.float32)


def _bias_field(shape: tuple[int, ...], mask: npt.NDArray[np.bool_], amplitude: float = 1.6) -> FloatArray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    unit = [2 * g / (n - 1) - 1 for g, n in zip(grids, shape, strict=True)]
    centre = [(n - 1) / 2 for n in shape]
    r2 = sum((g - c - s) ** 2 for g, c, s in zip(grids, centre, (10, -15, 20), strict=True))
    log_b = amplitude * (0.12 * unit[0] + 0.08 * unit[1] - 0.10 * unit[2] + 0.2 * np.exp(-r2 / (2 * 60.0**2)))
    log_b -= log_b[mask].mean()
    return np.asarray(np.exp(log_b), dtype=np.float32)


def _rician(data: FloatArray, sigma: float, seed: int = 0) -> FloatArray:
    rng = np.random.default_rng(seed)
    noisy = np.hypot(data + rng.normal(0, sigma, data.shape), rng.normal(0, sigma, data.shape))
    return np.asarray(noisy, dtype=np.float32)


def _skull_phantom(t1: FloatArray, pad: int = 24) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    from scipy import ndimage

    brain = np.pad(t1, pad)
    inside = ndimage.binary_fill_holes(brain > 0)
    d = ndimage.distance_transform_edt(~inside)
    unit = np.meshgrid(*[np.linspace(-1, 1, n) for n in brain.shape], indexing="ij")
    thick = 6 + 2 * np.sin(3 * unit[0]) * np.cos(2 * unit[1])
    out = brain.astype(np.float32)
    skull = (d > 2.5) & (d <= 2.5 + thick)
    out[(d > 0) & (d <= 2.5)] = 45
    out[skull] = 15
    out[skull & (d > 2.5 + 0.35 * thick) & (d <= 2.5 + 0.65 * thick)] = 110
    out[(d > 2.5 + thick) & (d <= 5.5 + thick)] = 90
    out[(d > 5.5 + thick) & (d <= 10.5 + thick)] = 235
    out[(d > 10.5 + thick) & (d <= 12 + thick)] = 130
    out = np.asarray(ndimage.gaussian_filter(out, 0.6), dtype=np.float32)
    return _rician(out, 0.02 * 220), np.pad(t1 > 0, pad)


def make_variant(name: str) -> dict[str, Any]:
    """Input volume, its affine, the true brain mask and the reference GM/WM masks on its grid."""
    folder = mni152_t1_path().parent
    t1_img = load_nifti(mni152_t1_path().read_bytes())
    t1 = voxel_data(t1_img)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    # The template's probability maps are uint8 0..255 without scaling.
    scale = np.float32(1 / 255)
    gm: FloatArray = voxel_data(load_nifti((folder / f"{TEMPLATE}_gm_{SUFFIX}").read_bytes())) * scale
    wm: FloatArray = voxel_data(load_nifti((folder / f"{TEMPLATE}_wm_{SUFFIX}").read_bytes())) * scale
    mask = t1 > 0
    data, grid, truth = t1, affine, mask
    if name == "bias":
        data = t1 * _bias_field(t1.shape, mask)
    elif name == "noise":
        data = np.where(mask, _rician(t1, 0.04 * WM_INTENSITY), 0).astype(np.float32)
    elif name == "bias+noise":
        biased = t1 * _bias_field(t1.shape, mask)
        data = np.where(mask, _rician(biased, 0.04 * WM_INTENSITY), 0).astype(np.float32)
    elif name == "all":
        # The acquisition's grid (LPS, 1.2 mm isotropic, the template's field of view), then the
        # coil's field and the noise on that grid, as a scanner would add them.
        linear = np.diag([-1.2, -1.2, 1.2])
        acquired = tuple(math.ceil(n / 1.2) for n in t1.shape)
        centre = affine[:3, :3] @ (np.array(t1.shape) - 1) / 2 + affine[:3, 3]
        grid = np.eye(4)
        grid[:3, :3] = linear
        grid[:3, 3] = centre - linear @ (np.array(acquired) - 1) / 2
        resampled = _resample_to(t1, affine, grid, acquired, order=1)
        truth = _resample_to(mask.astype(np.float32), affine, grid, acquired, order=1) > 0.5
        gm = _resample_to(gm, affine, grid, acquired, order=1)
        wm = _resample_to(wm, affine, grid, acquired, order=1)
        log_b = np.log(_bias_field(acquired, truth))
        lo, hi = float(log_b[truth].min()), float(log_b[truth].max())
        # 0.75 to 1.25 over the brain, the same smooth shape.
        field = (0.75 + 0.5 * (log_b - lo) / (hi - lo)).astype(np.float32)
        data = np.where(truth, _rician(resampled * field, 0.04 * WM_INTENSITY), 0).astype(np.float32)
    elif name in ("voxel", "oblique"):
        if name == "voxel":
            grid = affine @ np.diag([1.5, 1.5, 2.0, 1.0])
            shape: tuple[int, ...] = (131, 155, 94)
        else:
            a, b = math.radians(12), math.radians(8)
            rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
            rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
            linear = rz @ rx @ np.diag([-1.5, -1.5, 1.5])
            shape = (140, 165, 135)
            centre = affine[:3, :3] @ (np.array(t1.shape) - 1) / 2 + affine[:3, 3]
            grid = np.eye(4)
            grid[:3, :3] = linear
            grid[:3, 3] = centre - linear @ (np.array(shape) - 1) / 2
        data = _resample_to(t1, affine, grid, shape, order=1)
        truth = _resample_to(mask.astype(np.float32), affine, grid, shape, order=1) > 0.5
        gm = _resample_to(gm, affine, grid, shape, order=1)
        wm = _resample_to(wm, affine, grid, shape, order=1)
    elif name == "skull":
        pad = 24
        data, truth = _skull_phantom(t1, pad)
        gm, wm = np.pad(gm, pad), np.pad(wm, pad)
        grid = affine.copy()
        grid[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    elif name != "clean":
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return {
        "data": np.ascontiguousarray(data, dtype=np.float32),
        "affine": grid,
        "truth": truth,
        "gm": gm > 0.5,
        "wm": wm > 0.5,
    }


# --- the methods, each in its own process ---------------------------------------------------------


def kmeans_labels(
    data: FloatArray, mask: npt.NDArray[np.bool_], k: int = 3, iterations: int = 100
) -> npt.NDArray[np.uint8]:
    """1-D k-means on the intensities in `mask`, started at the (2j+1)/2k quantiles; labels 1..k by
    cluster mean (dark to bright: CSF, GM, WM in a T1)."""
    values = data[mask].astype(np.float64)
    centres = np.quantile(values, [(2 * j + 1) / (2 * k) for j in range(k)])
    for _ in range(iterations):
        bounds = (centres[:-1] + centres[1:]) / 2
        assign = np.searchsorted(bounds, values)
        new = np.array([values[assign == j].mean() if np.any(assign == j) else centres[j] for j in range(k)])
        if np.array_equal(new, centres):
            break
        centres = np.sort(new)
    labels = np.zeros(data.shape, dtype=np.uint8)
    labels[mask] = np.searchsorted((centres[:-1] + centres[1:]) / 2, values).astype(np.uint8) + 1
    return labels


def peak_mb() -> float:
    """This process's peak resident memory (MB). VmHWM, not ru_maxrss: Linux carries the parent's
    RSS at fork into a child's ru_maxrss, even across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _apply_budget() -> dict[str, Any]:
    """Threads for this process as the pipeline sets them: VOXELPIPE_ANALYSIS_THREADS when the
    parent set it, else the machine's budget. Before torch is imported, so it starts that way."""
    budget = thread_budget()
    apply_thread_budget(budget.threads)
    return {"threads": budget.threads, "limited_by": budget.limited_by}


def worker(method: str, folder: Path, repeat: int) -> dict[str, Any]:
    budget = _apply_budget()
    data = np.load(folder / "data.npy")
    affine = np.load(folder / "affine.npy")
    spacing = [float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))]
    extra: dict[str, Any] = {}
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        if method == "ours":
            from voxelpipe.segmentation import segment

            result = segment(data, spacing, device="cpu")
            labels = result.labels
            seconds = time.perf_counter() - start
            if seconds < best:
                extra = {
                    "timings_s": result.timings_s,
                    "bias_applied": result.bias.applied,
                    "mask": result.brain.mask,
                }
        else:
            labels = kmeans_labels(data, np.load(folder / "truth.npy"))
            seconds = time.perf_counter() - start
        best = min(best, seconds)
    np.save(folder / f"labels_{method}.npy", labels)
    if "mask" in extra:
        np.save(folder / "mask_ours.npy", extra.pop("mask"))
    return {"seconds": round(best, 3), **budget, "peak_mb": peak_mb(), **extra}


def chain_worker() -> dict[str, Any]:
    """The whole analysis chain on the 1 mm MNI152 T1, as the pipeline runs it."""
    _apply_budget()
    from voxelpipe.analyses.catalogue import AnalysisInput
    from voxelpipe.analyses.normative import normative_output
    from voxelpipe.analyses.tissue_seg import tissue_seg_output
    from voxelpipe.analyses.volumetrics import volumetrics_output
    from voxelpipe.nifti import load_nifti
    from voxelpipe.volume import canonical, orientation

    raw = mni152_t1_path().read_bytes()
    start = time.perf_counter()
    img = load_nifti(raw)
    inp = AnalysisInput(image=canonical(img), original_orientation=orientation(img.affine), parameters={})
    seg = tissue_seg_output(inp, img.affine, img.shape)
    vol = volumetrics_output(inp, {"tissue-seg": seg})
    table = (
        "measure,sex,age_min,age_max,mean,sd,source\ngm_ml,any,0,120,700,70,bench placeholder (not a norm)\n"
    )
    norm_inp = AnalysisInput(
        image=inp.image,
        original_orientation=inp.original_orientation,
        parameters={"reference_table": table, "age": 40, "sex": "F"},
    )
    normative_output(norm_inp, {"tissue-seg": seg, "volumetrics": vol})
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "peak_mb": peak_mb(),
        "timings_s": seg.measures["timings_s"],
        "artifact_mb": round(sum(len(b) for b in seg.artifacts.values()) / 2**20, 2),
        "volumes_ml": {k: vol.measures[k] for k in ("gm_ml", "wm_ml", "csf_ml", "tiv_ml", "bpf")},
    }


def _spawn(args: list[str], threads: int | None, repeat: int) -> dict[str, Any]:
    """`args` in a fresh process at `threads` (None: the machine's default budget, no override)."""
    env = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, *THREAD_ENV_VARS)}
    if threads is not None:
        env[THREADS_ENV] = str(threads)
    done = subprocess.run(
        [sys.executable, __file__, *args, "--repeat", str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return round(2.0 * int(np.logical_and(a, b).sum()) / total, 4) if total else 1.0


def thread_comparison(folder: Path, repeat: int) -> dict[str, Any]:
    """segment() on the variant in `folder` at the default budget and at 1 thread, one process each."""
    load_before = os.getloadavg()[0]
    budget = _spawn(["--worker", "ours", "--folder", str(folder)], None, repeat)
    single = _spawn(["--worker", "ours", "--folder", str(folder)], 1, repeat)
    # The CPUs others were using meanwhile: the budget counts the CPUs the process may use, not
    # how busy the machine is, so on a shared machine the comparison says what sharing costs.
    row: dict[str, Any] = {
        "repeat": repeat,
        "default": budget,
        "one": single,
        "cpus": os.cpu_count(),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if "seconds" in budget and "seconds" in single:
        row["ratio_default_over_one"] = round(budget["seconds"] / max(single["seconds"], 1e-9), 2)
    return row


def measure(variants: list[str], threads: int, repeat: int) -> dict[str, Any]:
    report: dict[str, Any] = {"threads": threads, "repeat": repeat, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            folder = Path(tmp) / name.replace("+", "_")
            folder.mkdir()
            variant = make_variant(name)
            for key in ("data", "affine", "truth"):
                np.save(folder / f"{key}.npy", variant[key])
            row: dict[str, Any] = {"shape": list(variant["data"].shape)}
            for method in ("ours", "kmeans"):
                run = _spawn(["--worker", method, "--folder", str(folder)], threads, repeat)
                if "error" not in run:
                    labels = np.load(folder / f"labels_{method}.npy")
                    run["dice_gm"] = dice(labels == 2, variant["gm"])
                    run["dice_wm"] = dice(labels == 3, variant["wm"])
                    if method == "ours":
                        run["dice_brain_mask"] = dice(np.load(folder / "mask_ours.npy"), variant["truth"])
                row[method] = run
            if "seconds" in row["ours"] and "seconds" in row["kmeans"]:
                row["time_ratio"] = round(row["ours"]["seconds"] / max(row["kmeans"]["seconds"], 1e-9), 1)
            report["variants"][name] = row
        report["chain_1mm"] = _spawn(["--chain"], threads, 1)
        clean = Path(tmp) / "clean"
        if not clean.exists():
            clean.mkdir()
            variant = make_variant("clean")
            for key in ("data", "affine", "truth"):
                np.save(clean / f"{key}.npy", variant[key])
        report["threads_vs_one"] = thread_comparison(clean, max(2, repeat))
    return report


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _print(report: dict[str, Any]) -> None:
    print(
        f"Dice vs the MNI152 template's GM/WM maps (> 0.5); {_threads(report['threads'])} per method, "
        f"time = best of {report['repeat']}; ratio = ours / kmeans time; peak = VmHWM of the method's process"
    )
    head = (
        f"{'variant':<11} {'ours GM':>8} {'ours WM':>8} {'kmeans GM':>10} {'kmeans WM':>10} "
        f"{'ours s':>7} {'kmeans s':>9} {'ratio':>6} {'ours MB':>8} {'kmeans MB':>10} {'mask Dice':>10}"
    )
    print(head)
    for name, row in report["variants"].items():
        ours, base = row["ours"], row["kmeans"]
        if "error" in ours or "error" in base:
            print(f"{name:<11} error: {ours.get('error') or base.get('error')}")
            continue
        print(
            f"{name:<11} {ours['dice_gm']:>8.4f} {ours['dice_wm']:>8.4f} {base['dice_gm']:>10.4f} "
            f"{base['dice_wm']:>10.4f} {ours['seconds']:>7.2f} {base['seconds']:>9.2f} "
            f"{row['time_ratio']:>6.1f} "
            f"{ours['peak_mb']:>8.0f} {base['peak_mb']:>10.0f} {ours['dice_brain_mask']:>10.4f}"
        )
    chain = report["chain_1mm"]
    if "error" in chain:
        print(f"chain (1 mm MNI152): error: {chain['error']}")
    else:
        print(
            f"chain (1 mm MNI152, tissue-seg + volumetrics + normative, outputs written): "
            f"{chain['seconds']:.2f} s, peak {chain['peak_mb']:.0f} MB, artifacts {chain['artifact_mb']} MB; "
            f"steps {chain['timings_s']}"
        )
    comparison = report["threads_vs_one"]
    default, one = comparison["default"], comparison["one"]
    if "error" in default or "error" in one:
        print(f"segment() default budget vs 1 thread: error: {default.get('error') or one.get('error')}")
    else:
        ratio = comparison["ratio_default_over_one"]
        if default["threads"] == 1:  # the same work twice: the difference is the machine's noise
            verdict = f"the budget is 1 thread here too, set by {default['limited_by']}"
        else:
            verdict = "not slower" if ratio <= 1.0 else "SLOWER"
        print(
            f"segment() on the clean template, best of {comparison['repeat']}: default budget "
            f"({_threads(default['threads'])}, set by {default['limited_by']}) {default['seconds']:.2f} s vs "
            f"1 thread {one['seconds']:.2f} s: "
            f"{ratio:.2f}x ({verdict}; 1-min load average {comparison['load_1min'][0]} before, "
            f"{comparison['load_1min'][1]} after, on {comparison['cpus']} CPUs)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS)
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS threads per method and the chain (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="time each method as the best of N runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--worker", choices=("ours", "kmeans"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, max(1, args.repeat))))
        return 0
    if args.chain:
        print(json.dumps(chain_worker()))
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variants: {', '.join(unknown)}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print("--threads must be at least 1", file=sys.stderr)
        return 2
    report = measure(variants, args.threads, max(1, args.repeat))
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
