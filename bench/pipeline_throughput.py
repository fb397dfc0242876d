"""Studies per minute through the local cloud, at 1, 4 and 8 studies at once, and how much of each
study's time is not its analyses.

For each analysis chain (`qc` alone, and the demo's `qc,tissue-seg,volumetrics`) and each
concurrency level, a fresh local cloud runs one warm-up wave (so all its worker processes started),
then `--repeat` timed waves of N studies uploaded at once, each a copy of one real scan (nilearn's
MNI152 T1, cropped to --size voxels a side, 0: the whole 197x233x189 volume). Printed per level,
the best wave:

- studies/min: N over the wave's wall time (first upload to last terminal status);
- overhead: (Σ study time - Σ analysis time) / Σ study time, a study's time being its record's
  created → terminal, its analysis time the durations of its analysis steps' task rows (measured
  inside the handlers, so time waiting for a worker counts as overhead);
- CPU/wall of the cloud's process (moto, the state machine, ingest, prepare, finalize) and of its
  worker processes (the analyses), summed over processes: 2.0 is two cores busy.

Done when (issue 13): qc at 8 concurrent ≥ 1.7 x the studies/min at 1, on 2 cores. `--processes 0`
runs every function in the cloud's process, as before worker processes, for comparison.

At the end it prints the cold-start table of bench/cold_start.py (each handler's import time beside
its bare dependencies').

    python bench/pipeline_throughput.py [--levels 1,4,8] [--repeat 2] [--chains qc,demo]
        [--processes N] [--analysis-threads T] [--size 64]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The functions log only errors (Powertools reads this when the handlers are first imported).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "layers" / "voxelpipe" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nibabel as nib
import numpy as np

from infra.local.cloud import LocalCloud
from infra.local.processes import ProcessSettings
from infra.local.samples import mni152_t1_path
from infra.local.studies import submit, wait_for_terminal
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.function_specs import ANALYSIS_STEP_PREFIX
from voxelpipe.status import StudyStatus

CHAINS: dict[str, tuple[str, ...]] = {"qc": ("qc",), "demo": ("qc", "tissue-seg", "volumetrics")}
_TICKS = os.sysconf("SC_CLK_TCK")


def scan_bytes(size: int) -> bytes:
    """The MNI152 T1, its central `size`³ voxels (0: whole), as .nii.gz bytes."""
    if not size:
        return mni152_t1_path().read_bytes()
    image = nib.Nifti1Image.from_filename(mni152_t1_path())
    data = np.asarray(image.dataobj, dtype=np.float32)
    corner = [(extent - size) // 2 for extent in data.shape[:3]]
    cropped = data[tuple(slice(c, c + size) for c in corner)]
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array(corner, dtype=np.float64)  # the crop's first voxel
    out = nib.Nifti1Image(cropped, affine)  # type: ignore[no-untyped-call]
    return gzip.compress(out.to_bytes(), compresslevel=6)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _worker_pids(cloud: LocalCloud) -> set[int]:
    return {i.process_id for i in list(cloud.invocations) if i.process_id not in (os.getpid(), -1)}


@dataclass(frozen=True)
class Wave:
    studies: int
    wall_s: float
    study_s: float  # Σ created → terminal
    analysis_s: float  # Σ analysis steps
    cloud_cpu_s: float
    worker_cpu_s: float
    failed: int

    @property
    def per_minute(self) -> float:
        return self.studies / self.wall_s * 60

    @property
    def overhead(self) -> float:
        return (self.study_s - self.analysis_s) / self.study_s


def run_wave(cloud: LocalCloud, scan: bytes, chain: tuple[str, ...], studies: int) -> Wave:
    store = DynamoStudyStore()
    before_pids = _worker_pids(cloud)
    workers_before = {pid: _cpu_s(pid) for pid in before_pids}
    cloud_before = sum(os.times()[:2])
    started = time.perf_counter()
    ids = [submit(cloud, scan, f"scan{n}.nii.gz", analyses=chain) for n in range(studies)]
    records = wait_for_terminal(ids, timeout_s=1800)
    wall = time.perf_counter() - started
    cloud_cpu = sum(os.times()[:2]) - cloud_before
    worker_cpu = sum(_cpu_s(pid) - workers_before.get(pid, 0.0) for pid in _worker_pids(cloud))
    study_s = analysis_s = 0.0
    failed = 0
    for study_id, record in records.items():
        if record is None or record.status != StudyStatus.COMPLETED:
            failed += 1
            continue
        study_s += (record.updated_at - record.created_at).total_seconds()
        analysis_s += sum(
            float(task.duration_ms or 0) / 1000
            for task in store.tasks_of(study_id, int(record.attempt))
            if task.step.startswith(ANALYSIS_STEP_PREFIX)
        )
    return Wave(studies, wall, study_s, analysis_s, cloud_cpu, worker_cpu, failed)


def measure(
    scan: bytes, chain: tuple[str, ...], studies: int, repeat: int, processes: ProcessSettings
) -> Wave:
    quiet = {"POWERTOOLS_LOG_LEVEL": "ERROR"}
    with LocalCloud(env=quiet, processes=processes) as cloud:
        # Warm-up: enough studies at once that every worker process has started (slots are taken
        # in turn, and each study takes one for Prepare and one for each analysis).
        run_wave(cloud, scan, chain, max(1, 2 * processes.processes))
        waves = [run_wave(cloud, scan, chain, studies) for _ in range(repeat)]
    return max(waves, key=lambda wave: wave.per_minute)


def print_cold_start() -> None:
    from cold_start import print_cold_start_table

    print()
    print_cold_start_table()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,4,8", help="concurrent studies, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="timed waves per level (the best is shown)")
    parser.add_argument("--chains", default="qc,demo", help=f"of {', '.join(CHAINS)}")
    parser.add_argument("--size", type=int, default=96, help="voxels a side of the scan (0: whole MNI152)")
    defaults = ProcessSettings.from_env()
    parser.add_argument("--processes", type=int, default=defaults.processes, help="worker processes")
    parser.add_argument("--analysis-threads", type=int, default=defaults.analysis_threads)
    parser.add_argument("--no-cold-start", action="store_true", help="skip the cold-start table")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]
    settings = ProcessSettings(args.processes, args.analysis_threads)
    scan = scan_bytes(args.size)
    cpus = len(os.sched_getaffinity(0))
    print(
        f"local cloud throughput: {cpus} CPUs, {settings.processes} worker processes "
        f"({settings.analysis_threads} analysis thread each), scan {args.size or 'full'}³, "
        f"best of {args.repeat}"
    )
    header = f"{'chain':<6} {'studies':>7} {'studies/min':>11} {'x at 1':>7} {'overhead':>8} "
    header += f"{'wall s':>7} {'cloud CPU/wall':>14} {'workers CPU/wall':>16} {'failed':>6}"
    print(header)
    for chain_name in args.chains.split(","):
        chain = CHAINS[chain_name]
        first: float | None = None
        for level in levels:
            wave = measure(scan, chain, level, args.repeat, settings)
            first = first or wave.per_minute
            print(
                f"{chain_name:<6} {level:>7} {wave.per_minute:>11.1f} {wave.per_minute / first:>7.2f} "
                f"{wave.overhead:>8.0%} {wave.wall_s:>7.2f} {wave.cloud_cpu_s / wave.wall_s:>14.2f} "
                f"{wave.worker_cpu_s / wave.wall_s:>16.2f} {wave.failed:>6}",
                flush=True,
            )
    if not args.no_cold_start:
        print_cold_start()


if __name__ == "__main__":
    main()
