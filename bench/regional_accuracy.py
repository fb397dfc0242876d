"""The `regional` chain's accuracy and cost: the MNI152 template, its GM/WM maps and the default
atlas's label map moved by a known affine + smooth deformation onto a scanner-like upload grid,
the T1 degraded, the chain tissue-seg -> registration -> regional run on it as RunAnalysis runs
it; then one hippocampus shrunk by a known local contraction and the chain run again.

    python bench/regional_accuracy.py [--methods demons,affine] [--spacing MM] [--clean]
                                      [--shrink REGION] [--threads N] [--json]

The subject (tests/fixtures/regional.py `regional_case`): template points of an upload grid
(1 mm, LPS voxel order, the template's field of view; --spacing 1.2 resamples as
segmentation_accuracy.py's 'all' does) through tests/fixtures/registration.py's
`known_deformation` (rotation 8/-5/4 degrees, scaling 1.06/0.95/1.03, shear, shift, Gaussian bumps
up to 6 mm); T1 x a smooth bias field at 0.75-1.25 over the brain, Rician noise at 4% of WM,
zero outside the brain (--clean: neither). The truth, on the same grid:
* regions: `regional.region_map` of the atlas's labels moved the same way (nearest), inside the
  moved template brain;
* volumes: regional's own measure (`regional_measures`) with those regions and the template's
  tissue maps moved the same way (GM, WM 0..1; CSF = 1 - GM - WM inside the template brain, the
  template has no CSF map).
Scored: Dice of each region in regional's `regions.nii.gz` (on the upload's grid) against the
truth; volume error = measured / truth - 1, split into the segmentation's share (`seg %`: the truth
regions with tissue-seg's probabilities against the truth) and the registration's (`reg %`: the
measured volume against the truth regions with tissue-seg's probabilities). The template's tissue
maps are a population average, not a segmentation of its T1: `seg %` is their disagreement with
tissue-seg (the cortex's GM map is the smoothest: lobes show +20-50% there), not a registration
error.

Shrink (--shrink, default hippocampus_left): every subject point x samples the unshrunk subject
at x + a exp(-|x-c|^2 / 2 (15 mm)^2) (x - c), c the region's centroid, a = 0.055: the region
shrinks by about 10%, its neighbours less, the other side by a few tenths of a percent (the true
changes are computed from the moved truth, not assumed). Measured change = the chain's volume on
the shrunk subject / on the unshrunk one - 1 (same bias field and noise).

Methods: the registration analysis's `method` parameter: demons (the default chain), affine (no
deformation: the baseline), bspline. Each subject runs in a fresh process at the pipeline's thread
budget (--threads N: VOXELPIPE_ANALYSIS_THREADS=N): tissue-seg once (its output is the same for
every method), then registration and regional per method. Stage time is wall (perf_counter) and
CPU; stage peak is the process's VmHWM over the stage (reset at its start through
/proc/self/clear_refs: ru_maxrss cannot be reset and carries the parent's RSS at fork); the
chain's figures are tissue-seg + registration + regional of the first method.

About 3 minutes with the defaults on a 2-core machine (two subjects x (tissue-seg, demons,
affine)). Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "voxelpipe" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import numpy.typing as npt

from voxelpipe.thread_budget import THREAD_ENV_VARS, THREADS_ENV

if TYPE_CHECKING:  # the fixtures (scipy) stay out of the chain's process and its peak memory
    from tests.fixtures.regional import RegionalCase

DEFAULT_METHODS = ("demons", "affine")
ALL_METHODS = ("demons", "affine", "bspline")
AIMS = {"mean_dice": 0.85, "hippocampus_dice": 0.80, "hippocampus_error_pct": 5.0, "change_pp": 2.0}
CHAIN_AIM = {"seconds": 180.0, "peak_mb": 4096.0}  # issue 14: the default chain, 1 mm, 2 cores


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def reset_peak() -> None:
    """VmHWM back to the current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the chain, in its own process ----------------------------------------------------------------


def worker(folder: Path, methods: list[str]) -> dict[str, Any]:
    """The chain on folder/upload.nii.gz: tissue-seg, then registration and regional per method."""
    from voxelpipe.analyses import AnalysisInput, AnalysisOutput, resolve
    from voxelpipe.analyses.catalogue import REGIONAL_LABELS_FILE, TISSUE_SEG_PROBABILITY_FILES
    from voxelpipe.nifti import load_nifti
    from voxelpipe.thread_budget import apply_thread_budget, thread_budget
    from voxelpipe.volume import canonical, orientation

    budget = thread_budget()
    apply_thread_budget(budget.threads)
    img = load_nifti((folder / "upload.nii.gz").read_bytes())
    canon = canonical(img)
    analyses = {analysis.name: analysis for analysis in resolve(["regional"])}
    stages: dict[str, dict[str, float]] = {}

    def run(
        name: str, label: str, parameters: dict[str, Any], requirements: dict[str, Any]
    ) -> AnalysisOutput:
        analysis = analyses[name]
        reset_peak()
        wall0, cpu0 = time.perf_counter(), _cpu()
        output = analysis.run(
            AnalysisInput(
                image=canon,
                original_orientation=orientation(img.affine),
                parameters={**analysis.parameters, **parameters},
                original_affine=np.asarray(img.affine, dtype=np.float64),
                original_shape=tuple(img.shape),
                requirements=requirements,
            )
        )
        stages[label] = {
            "wall_s": round(time.perf_counter() - wall0, 2),
            "cpu_s": round(_cpu() - cpu0, 2),
            "peak_mb": peak_mb(),
        }
        return output

    seg = run("tissue-seg", "tissue-seg", {}, {})
    for tissue, name in TISSUE_SEG_PROBABILITY_FILES.items():
        (folder / f"prob_{tissue}.nii.gz").write_bytes(seg.artifacts[name])
    extra: dict[str, Any] = {"warnings": {"tissue-seg": seg.measures.get("warnings", [])}}
    for method in methods:
        registration = run("registration", f"registration:{method}", {"method": method}, {"tissue-seg": seg})
        regional = run(
            "regional", f"regional:{method}", {}, {"tissue-seg": seg, "registration": registration}
        )
        (folder / f"regions_{method}.nii.gz").write_bytes(regional.artifacts[REGIONAL_LABELS_FILE])
        (folder / f"regions_{method}.json").write_text(json.dumps(regional.measures["regions"]))
        extra[method] = {
            "overlap": registration.measures["overlap_with_segmentation"],
            "registration_timings_s": registration.measures["timings_s"],
            "warnings": registration.measures["warnings"],
        }
    return {"threads": budget.threads, "limited_by": budget.limited_by, "stages": stages, **extra}


def _spawn(folder: Path, methods: list[str], threads: int | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, *THREAD_ENV_VARS)}
    if threads is not None:
        env[THREADS_ENV] = str(threads)
    command = [sys.executable, __file__, "--worker", str(folder), "--methods", ",".join(methods)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise SystemExit(f"chain failed on {folder.name}: {tail[0]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- scoring ----------------------------------------------------------------------------------------


def _voxels(path: Path) -> npt.NDArray[Any]:
    from voxelpipe.nifti import load_nifti

    return np.asarray(load_nifti(path.read_bytes()).dataobj)


def _pct(value: float, reference: float) -> float:
    return round(100.0 * (value / reference - 1.0), 2) if reference else math.nan


def score(case: RegionalCase, folder: Path, methods: list[str]) -> dict[str, Any]:
    """Per region: truth volume, segmentation's share of the error; per method Dice, volume, errors."""
    from tests.fixtures.segmentation import dice
    from voxelpipe.analyses.regional import regional_measures
    from voxelpipe.analyses.volumetrics import voxel_volume_ml
    from voxelpipe.atlases import REGION_NUMBERS
    from voxelpipe.atlases.bundled import default_atlas

    probabilities = {t: _voxels(folder / f"prob_{t}.nii.gz").astype(np.float32) for t in ("csf", "gm", "wm")}
    voxel_ml = voxel_volume_ml(case.t1.affine)
    on_seg = regional_measures(case.regions, probabilities, voxel_ml, default_atlas().region_labels())[
        "regions"
    ]
    rows: dict[str, dict[str, Any]] = {}
    for key in REGION_NUMBERS:
        if key not in case.volumes:
            continue
        truth = case.volumes[key]["volume_ml"]
        rows[key] = {
            "truth_ml": truth,
            "truth_label_ml": case.volumes[key]["label_ml"],
            "truth_on_seg_ml": on_seg[key]["volume_ml"],
            "seg_error_pct": _pct(on_seg[key]["volume_ml"], truth),
        }
    for method in methods:
        regions = _voxels(folder / f"regions_{method}.nii.gz")
        measured = json.loads((folder / f"regions_{method}.json").read_text())
        for key, row in rows.items():
            number = REGION_NUMBERS[key]
            volume = measured[key]["volume_ml"]
            row[method] = {
                "dice": round(dice(regions == number, case.regions == number), 4),
                "volume_ml": volume,
                "error_pct": _pct(volume, row["truth_ml"]),
                "reg_error_pct": _pct(volume, row["truth_on_seg_ml"]),
            }
    return rows


def summary(rows: dict[str, dict[str, Any]], method: str) -> dict[str, float]:
    dices = [row[method]["dice"] for row in rows.values()]
    hippocampi = [rows[f"hippocampus_{side}"][method] for side in ("left", "right")]
    return {
        "mean_dice": round(float(np.mean(dices)), 4),
        "hippocampus_dice": round(float(np.mean([h["dice"] for h in hippocampi])), 4),
        "hippocampus_error_pct": round(float(np.mean([abs(h["error_pct"]) for h in hippocampi])), 2),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.regional import regional_case
    from voxelpipe.nifti import to_nifti_bytes

    methods: list[str] = args.methods
    report: dict[str, Any] = {
        "spacing_mm": args.spacing,
        "degraded": not args.clean,
        "methods": methods,
        "shrink": args.shrink,
    }
    bias, noise = (0.0, 0.0) if args.clean else (0.25, 0.04)
    with tempfile.TemporaryDirectory() as tmp:
        cases: dict[str, RegionalCase] = {}
        for subject, shrink in (("base", None), ("shrunk", args.shrink)):
            start = time.perf_counter()
            cases[subject] = regional_case(args.spacing, shrink=shrink, bias=bias, noise=noise)
            report.setdefault("case_s", {})[subject] = round(time.perf_counter() - start, 1)
            folder = Path(tmp) / subject
            folder.mkdir()
            (folder / "upload.nii.gz").write_bytes(to_nifti_bytes(cases[subject].t1, compress=True))
            report[subject] = _spawn(folder, methods, args.threads)
            report[subject]["regions"] = score(cases[subject], folder, methods)
        report["shape"] = list(cases["base"].t1.shape)
    base, shrunk = report["base"]["regions"], report["shrunk"]["regions"]
    report["summary"] = {method: summary(base, method) for method in methods}
    sides = [args.shrink, _other_side(args.shrink)]
    change: dict[str, Any] = {
        key: {
            "true_pct": _pct(shrunk[key]["truth_ml"], base[key]["truth_ml"]),
            "true_label_pct": _pct(shrunk[key]["truth_label_ml"], base[key]["truth_label_ml"]),
            **{m: _pct(shrunk[key][m]["volume_ml"], base[key][m]["volume_ml"]) for m in methods},
        }
        for key in sides
    }
    report["change"] = change
    stages = report["base"]["stages"]
    first = methods[0]
    chain = [stages["tissue-seg"], stages[f"registration:{first}"], stages[f"regional:{first}"]]
    report["chain"] = {
        "method": first,
        "wall_s": round(sum(s["wall_s"] for s in chain), 2),
        "cpu_s": round(sum(s["cpu_s"] for s in chain), 2),
        "peak_mb": max(s["peak_mb"] for s in chain),
        "threads": report["base"]["threads"],
    }
    return report


def _other_side(key: str) -> str:
    return key.replace("_left", "_right") if key.endswith("_left") else key.replace("_right", "_left")


def _print(report: dict[str, Any]) -> None:
    methods: list[str] = report["methods"]
    base = report["base"]
    print(
        f"Regional accuracy: MNI152 2009a + Neuromorphometrics atlas moved by a known affine + smooth "
        f"deformation onto a {report['spacing_mm']} mm LPS grid {tuple(report['shape'])}"
        f"{', bias 0.75-1.25 + Rician 4%' if report['degraded'] else ', clean'}; chain tissue-seg -> "
        f"registration -> regional, {base['threads']} thread(s) ({base['limited_by']})"
    )
    print(
        "truth = regional's measure on the moved atlas regions and template tissue maps; err = measured / "
        "truth - 1 = seg (truth regions on tissue-seg's probabilities) + reg (measured vs those)"
    )
    head = f"{'region':<24} {'truth mL':>8} {'seg %':>7}"
    for method in methods:
        head += f" | {method + ' Dice':>12} {'mL':>7} {'err %':>7} {'reg %':>7}"
    print(head)
    for key, row in base["regions"].items():
        line = f"{key:<24} {row['truth_ml']:>8.2f} {row['seg_error_pct']:>+7.1f}"
        for method in methods:
            m = row[method]
            line += f" | {m['dice']:>12.3f} {m['volume_ml']:>7.2f} {m['error_pct']:>+7.1f}"
            line += f" {m['reg_error_pct']:>+7.1f}"
        print(line)
    for method in methods:
        s = report["summary"][method]
        verdict = [
            f"mean Dice {s['mean_dice']:.3f} (aim >= {AIMS['mean_dice']})",
            f"hippocampus Dice {s['hippocampus_dice']:.3f} (aim >= {AIMS['hippocampus_dice']})",
            f"hippocampal volume error {s['hippocampus_error_pct']:.1f}% "
            f"(mean of |L|, |R|; aim <= {AIMS['hippocampus_error_pct']}%)",
        ]
        print(f"{method:<7} " + "; ".join(verdict))
    print(
        f"Shrink {report['shrink']} (local radial contraction, 15 mm sigma), change vs the unshrunk subject "
        f"(true: tissue measure, labels alone in brackets; aim: within {AIMS['change_pp']} points):"
    )
    for key, row in report["change"].items():
        line = f"  {key:<22} true {row['true_pct']:+6.2f}% ({row['true_label_pct']:+6.2f}%)"
        for method in methods:
            line += f" | {method} {row[method]:+6.2f}% ({row[method] - row['true_pct']:+5.2f} pp)"
        print(line)
    print("Stage    " + " | ".join(f"{subject}: wall s, CPU s, peak MB" for subject in ("base", "shrunk")))
    for stage in base["stages"]:
        cells = []
        for subject in ("base", "shrunk"):
            s = report[subject]["stages"][stage]
            cells.append(f"{s['wall_s']:>7.1f} {s['cpu_s']:>7.1f} {s['peak_mb']:>7.0f}")
        print(f"  {stage:<22} " + " | ".join(cells))
    for method in methods:
        print(f"  {method} registration stages (base): {base[method]['registration_timings_s']}")
    if len(methods) > 1:
        ratio = base["stages"][f"registration:{methods[0]}"]["wall_s"] / max(
            base["stages"][f"registration:{methods[1]}"]["wall_s"], 1e-9
        )
        print(f"  registration wall time {methods[0]} / {methods[1]}: {ratio:.1f}x")
    chain = report["chain"]
    print(
        f"Chain ({chain['method']}: tissue-seg + registration + regional, {chain['threads']} thread(s)): "
        f"{chain['wall_s']:.1f} s wall, {chain['cpu_s']:.1f} s CPU, peak {chain['peak_mb']:.0f} MB "
        f"(issue 14 aim: <= {CHAIN_AIM['seconds']:.0f} s and <= {CHAIN_AIM['peak_mb']:.0f} MB on 2 cores); "
        f"subject made in {report['case_s']['base']} + {report['case_s']['shrunk']} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {', '.join(ALL_METHODS)}")
    parser.add_argument("--spacing", type=float, default=1.0, help="the upload grid's voxel size, mm")
    parser.add_argument("--clean", action="store_true", help="no bias field, no noise")
    parser.add_argument("--shrink", default="hippocampus_left", help="the region to shrink by ~10%%")
    parser.add_argument("--threads", type=int, help="VOXELPIPE_ANALYSIS_THREADS for the chain")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in ALL_METHODS]
    if unknown or not args.methods:
        print(f"unknown methods {unknown}; known: {', '.join(ALL_METHODS)}", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(worker(args.worker, args.methods)))
        return 0
    from voxelpipe.atlases import REGIONS

    if args.shrink not in REGIONS:
        print(f"unknown region {args.shrink!r}; known: {', '.join(REGIONS)}", file=sys.stderr)
        return 2
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
