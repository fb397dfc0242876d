"""GPU worker inference: our sliding-window runner against MONAI's, and the worker end to end.

    python bench/gpu_worker.py [--device auto|cpu|cuda] [--volumes N] [--patch P] [--repeat R] [--json]

On the same network and volumes, in one run:

* monai:  `monai.inferers.sliding_window_inference` volume by volume (gaussian blend, the
          spec's overlap and sw_batch_size), float32, then argmax -> a CPU label map; the peer;
          both label maps are narrowed to uint8 on the device before the copy to the host, as
          the worker does: an int64 map of a 1 mm brain takes ~49 ms to cross from an H200,
          more than the whole sliding window, and would hide the difference being measured;
* ours:   `SlidingWindowRunner.run` over all volumes at once (windows of every volume share the
          forward passes, argmax on the device), float32: the like-for-like comparison;
* ours-bf16 (CUDA only): the same with bf16 autocast, as a spec with "precision": "bfloat16" runs;
* worker: `run_model_tasks` end to end against moto S3 + DynamoDB (`moto.mock_aws`): prepared
          volumes' bytes in S3 -> decode -> normalise -> windows -> label map on the input's
          grid, gzipped NIfTI written back, result JSON and task rows recorded: studies per second.

The network is a MONAI 3D UNet (channels 16-32-64-128, strides 2-2-2, one residual unit,
4 output labels), TorchScript-scripted, with random weights (the speed does not depend on them);
the volumes are nilearn's MNI152 T1 at 1 mm (197x233x189), N copies each with a little noise and
a different intensity scale. Times per volume are the best of R rounds after a warm-up, MONAI's
and ours taken in turn each round (so a busy machine's drifting load favours neither). The ratio
printed is monai / ours (> 1: ours is faster); on the CPU the process's CPU time is printed too,
as a shared machine's load stretches wall times. Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timing import best_s

from infra.local.samples import mni152_t1_path
from voxelpipe.inference.models import LoadedModel, ModelCache
from voxelpipe.inference.runner import SlidingWindowRunner
from voxelpipe.inference.spec import ModelRef, ModelSpec
from voxelpipe.keys import DEPLOYMENT_OWNER
from voxelpipe.nifti import load_nifti
from voxelpipe.volume import Image, new_image, voxel_data

LABELS = {0: "background", 1: "csf", 2: "gm", 3: "wm"}
BUCKET = "bench-gpu-worker"


def make_network(out_channels: int) -> bytes:
    from monai.networks.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=out_channels,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
    ).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    return buffer.getvalue()


def make_volumes(count: int) -> list[Image]:
    """N 1 mm brains: the MNI152 T1 with noise (1% of its range) and a scale of 0.95-1.05."""
    template = load_nifti(mni152_t1_path().read_bytes())
    data = voxel_data(template)
    rng = np.random.default_rng(0)
    spread = float(data.max() - data.min())
    volumes = []
    for index in range(count):
        scale = 0.95 + 0.1 * index / max(count - 1, 1)
        noisy = data * scale + rng.normal(0, 0.01 * spread, size=data.shape).astype(np.float32)
        volumes.append(new_image(np.clip(noisy, 0, None).astype(np.float32), template.affine))
    return volumes


def model_inputs(model: LoadedModel, volumes: list[Image]) -> list[torch.Tensor]:
    from voxelpipe.inference.processing import preprocess

    tensors = []
    for image in volumes:
        inp = preprocess(image, model.spec, image.affine, image.shape)
        tensors.append(torch.from_numpy(inp.data)[None])
    return tensors


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def monai_run(model: LoadedModel, inputs: list[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
    """MONAI's sliding window, volume by volume, to CPU label maps."""
    from monai.inferers.utils import sliding_window_inference

    spec, device = model.spec, model.device
    predictor = model.runner.predictor

    def one(volume: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = sliding_window_inference(
                volume[None].to(device),
                spec.window,
                spec.sw_batch_size,
                predictor,
                overlap=spec.overlap,
                mode=spec.blend,
                sw_device=device,
                device=device,
            )
            return np.asarray(out[0].argmax(0).to(torch.uint8).cpu().numpy())

    return lambda: [one(v) for v in inputs]


def ours_run(model: LoadedModel, inputs: list[torch.Tensor]) -> Callable[[], list[np.ndarray]]:
    """Our runner, all volumes at once, to CPU label maps."""

    runner = model.runner
    assert isinstance(runner, SlidingWindowRunner), "the bench runs a segmentation model"

    def run_all() -> list[np.ndarray]:
        labels = runner.run(inputs, reduce="argmax")
        return [np.asarray(label.to(torch.uint8).cpu().numpy()) for label in labels]

    return run_all


def interleaved_best_s(
    runs: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall time and best CPU time (this process's) of each run, the runs taken in turn each
    round: a busy machine's load drifts, and alternating keeps the drift from favouring whichever
    ran first. On a shared CPU the CPU time is the steadier figure: other processes' load
    stretches wall time, not this process's CPU time."""
    wall = {name: float("inf") for name in runs}
    cpu = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            cpu_start = time.process_time()
            wall[name] = min(wall[name], best_s(run, 1, warmup=False))
            cpu[name] = min(cpu[name], time.process_time() - cpu_start)
    return wall, cpu


def time_worker(
    network: bytes, spec: ModelSpec, volumes: list[Image], device: torch.device, repeat: int
) -> dict[str, float]:
    """run_model_tasks against moto: studies per second, S3 bytes in -> label map written."""
    import boto3
    from moto import mock_aws

    from voxelpipe.adapters.storage import Storage
    from voxelpipe.adapters.study_table import DynamoStudyStore
    from voxelpipe.inference import registry
    from voxelpipe.inference.tasks import run_model_tasks
    from voxelpipe.keys import work_key
    from voxelpipe.messages import AnalysisRequest, AnalysisResult, AnalysisTask, PreparedVolume
    from voxelpipe.nifti import to_nifti_bytes
    from voxelpipe.pipeline.prepare import canonical_volume
    from voxelpipe.records import ModelRecord, StudyRecord, TaskRecord
    from voxelpipe.volume import orientation, voxel_sizes
    from voxelpipe.wiring import EnvVar, Runtime

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # The task rows' EMF metrics would print between the figures: this is not a Lambda.
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    os.environ[EnvVar.BUCKET] = BUCKET
    os.environ[EnvVar.TASKS_TABLE] = "bench-tasks"
    os.environ[EnvVar.STUDIES_TABLE] = "bench-studies"
    os.environ[EnvVar.MODELS_TABLE] = "bench-models"
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        StudyRecord.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        TaskRecord.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        ModelRecord.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        storage = Storage(BUCKET)
        record = registry.publish_model(DEPLOYMENT_OWNER, "bench-unet", network, spec, storage)
        tasks = []
        for index, original in enumerate(volumes):
            study_id = f"{index:032x}"
            canonical = canonical_volume(original)
            key = work_key(study_id, 1, "canonical.nii")
            storage.write(key, to_nifti_bytes(canonical, compress=False))
            tasks.append(
                AnalysisTask(
                    study_id=study_id,
                    attempt=1,
                    analysis=AnalysisRequest(
                        name="model:bench-unet",
                        version=str(int(record.version)),
                        runtime=Runtime.GPU,
                        model_owner=DEPLOYMENT_OWNER,
                    ),
                    volume=PreparedVolume(
                        volume_key=key,
                        original_orientation=orientation(original.affine),
                        original_shape=[int(n) for n in original.shape],
                        original_affine=np.asarray(original.affine).tolist(),
                        shape=[int(n) for n in canonical.shape],
                        voxel_size_mm=[float(v) for v in voxel_sizes(canonical.affine)],
                        duration_ms=0.0,
                    ),
                )
            )
        cache = ModelCache(device)  # a worker process keeps its models loaded between batches
        batch = max(1, len(tasks))

        def run() -> None:
            outcomes = run_model_tasks(tasks, DynamoStudyStore(), storage, cache, max_batch_volumes=batch)
            failures = [o for o in outcomes if not isinstance(o, AnalysisResult)]
            if failures:
                raise RuntimeError(f"worker failed: {failures[0]!r}")

        run_model_tasks(tasks[:1], DynamoStudyStore(), storage, cache)  # warm-up: loads the model
        seconds = best_s(run, repeat, warmup=False)
    return {"seconds": seconds, "studies_per_s": len(tasks) / seconds}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--volumes", type=int, help="how many volumes (default: 2 on the CPU, 32 on CUDA)")
    parser.add_argument("--patch", type=int, default=96, help="window edge in voxels (default 96)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument(
        "--sw-batch-size", type=int, help="windows per forward pass (default: 4 CPU, 16 CUDA)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="best of R timed rounds (default: 1 on the CPU, to stay within minutes; 3 on CUDA)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_worker: --device cuda, but CUDA is not available", file=sys.stderr)
        return 2
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    cuda = device.type == "cuda"
    count = args.volumes or (32 if cuda else 2)
    repeat = args.repeat or (3 if cuda else 1)
    spec = ModelSpec(
        format="torchscript",
        spacing_mm=(1.0, 1.0, 1.0),
        orientation="RAS",
        patch_size=(args.patch, args.patch, args.patch),
        overlap=args.overlap,
        labels=LABELS,
        sw_batch_size=args.sw_batch_size or (16 if cuda else 4),
    )
    network = make_network(len(LABELS))
    volumes = make_volumes(count)
    cache = ModelCache(device)
    model = cache.add(ModelRef(DEPLOYMENT_OWNER, "bench-unet", "1"), network, spec)
    inputs = model_inputs(model, volumes)

    runners: dict[str, Callable[[list[torch.Tensor]], Callable[[], object]]] = {
        "monai": lambda vols: monai_run(model, vols),
        "ours": lambda vols: ours_run(model, vols),
    }
    if cuda:
        bf16_spec = spec.model_copy(update={"precision": "bfloat16"})
        bf16 = ModelCache(device).add(ModelRef(DEPLOYMENT_OWNER, "bench-unet", "bf16"), network, bf16_spec)
        runners["ours_bf16"] = lambda vols: ours_run(bf16, vols)
    for make_run in runners.values():  # warm-up on one volume: kernels, cuDNN, the scripted net's profiling
        make_run(inputs[:1])()
        synchronize(device)
    runs = {name: make_run(inputs) for name, make_run in runners.items()}
    wall, cpu_time = interleaved_best_s(runs, repeat)
    best = {name: seconds / count for name, seconds in wall.items()}
    monai_s, ours_s = best["monai"], best["ours"]
    figures: dict[str, Any] = {
        "device": device_name(device),
        "volumes": count,
        "shape": list(volumes[0].shape),
        "patch": args.patch,
        "overlap": args.overlap,
        "sw_batch_size": spec.sw_batch_size,
        "monai_s_per_volume": monai_s,
        "ours_s_per_volume": ours_s,
        "ratio_monai_over_ours": monai_s / ours_s,
        "monai_cpu_s_per_volume": cpu_time["monai"] / count,
        "ours_cpu_s_per_volume": cpu_time["ours"] / count,
        "cpu_ratio_monai_over_ours": cpu_time["monai"] / cpu_time["ours"],
    }
    if cuda:
        figures["ours_bf16_s_per_volume"] = best["ours_bf16"]
        figures["ratio_monai_over_ours_bf16"] = monai_s / best["ours_bf16"]
    worker_spec = spec.model_copy(update={"precision": "bfloat16"}) if cuda else spec
    worker = time_worker(network, worker_spec, volumes, device, repeat if cuda else 1)
    figures["worker_studies_per_s"] = worker["studies_per_s"]
    figures["worker_precision"] = worker_spec.precision
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"device: {figures['device']}")
    print(
        f"{count} volumes {'x'.join(map(str, figures['shape']))} at 1 mm; 3D UNet, patch {args.patch}, "
        f"overlap {args.overlap}, {spec.sw_batch_size} windows per pass"
    )
    print(f"  monai sliding_window_inference: {monai_s * 1000:9.1f} ms/volume")
    print(f"  ours (float32):                 {ours_s * 1000:9.1f} ms/volume   ratio {monai_s / ours_s:.2f}x")
    if cuda:
        bf16_s = figures["ours_bf16_s_per_volume"]
        print(
            f"  ours (bf16 autocast):           {bf16_s * 1000:9.1f} ms/volume  ratio {monai_s / bf16_s:.2f}x"
        )
    if not cuda:
        print(
            f"  CPU time of this process: monai {figures['monai_cpu_s_per_volume'] * 1000:.1f} ms/volume, "
            f"ours {figures['ours_cpu_s_per_volume'] * 1000:.1f} ms/volume, "
            f"ratio {figures['cpu_ratio_monai_over_ours']:.2f}x (steadier than wall time on a shared machine)"
        )
    print(
        f"  worker end to end (moto S3, {worker_spec.precision}): {worker['studies_per_s']:.2f} studies/s "
        f"({count} studies in {worker['seconds']:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
