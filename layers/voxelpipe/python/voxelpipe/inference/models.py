"""Loading registered models, once per worker process: TorchScript with torch, ONNX with
onnxruntime (CUDA provider when the device is CUDA and the provider is there, else CPU)."""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field

import torch
from botocore.exceptions import ClientError
from pydantic import ValidationError

from voxelpipe.inference.runner import Predictor, SlidingWindowRunner, VolumeRunner, WindowSettings
from voxelpipe.inference.spec import MANIFEST_FILE, ModelManifest, ModelRef, ModelSpec
from voxelpipe.keys import InvalidKey, model_key
from voxelpipe.ports import ObjectStorage
from voxelpipe.segmentation.device import resolve_device
from voxelpipe.thread_budget import thread_budget


class ModelUnavailable(RuntimeError):
    """The requested model version is not registered and READY, or its file is not what was verified."""


def load_torchscript(data: bytes, device: torch.device) -> Predictor:
    module = torch.jit.load(io.BytesIO(data), map_location=device)  # type: ignore[no-untyped-call]
    module.eval()
    predictor: Predictor = module
    return predictor


def onnx_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_onnx(data: bytes, device: torch.device) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Its own pool (not torch's): sized like the analyses' rather than to every core of the host.
    options.intra_op_num_threads = thread_budget().threads
    session = ort.InferenceSession(data, sess_options=options, providers=onnx_providers(device))
    input_name = session.get_inputs()[0].name

    def predict(batch: torch.Tensor) -> torch.Tensor:
        # ONNX Runtime computes in the graph's own precision: autocast does not reach it.
        (output, *_) = session.run(None, {input_name: batch.detach().float().cpu().numpy()})
        return torch.from_numpy(output).to(batch.device)

    return predict


def load_predictor(data: bytes, spec: ModelSpec, device: torch.device) -> Predictor:
    if spec.format == "torchscript":
        return load_torchscript(data, device)
    return load_onnx(data, device)


@dataclass
class LoadedModel:
    """A model version ready to run: its spec and its runner on the cache's device (sliding windows
    for a segmentation model, whole volumes for the other kinds)."""

    ref: ModelRef
    spec: ModelSpec
    device: torch.device
    runner: SlidingWindowRunner | VolumeRunner
    lock: threading.Lock = field(default_factory=threading.Lock)  # one batch at a time per runner

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version


class ModelCache:
    """Models by (owner, name, version), each loaded once per process and reused for every batch."""

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = resolve_device(device)
        self._models: dict[ModelRef, LoadedModel] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was actually loaded (the rest were reuses)

    def __contains__(self, ref: ModelRef) -> bool:
        return ref in self._models

    def add(self, ref: ModelRef, data: bytes, spec: ModelSpec) -> LoadedModel:
        """Load a model from its bytes (or return the one already loaded as `ref`)."""
        with self._lock:
            loaded = self._models.get(ref)
            if loaded is None:
                predictor = load_predictor(data, spec, self.device)
                bf16 = spec.precision == "bfloat16"
                runner: SlidingWindowRunner | VolumeRunner
                if spec.kind == "segmentation":
                    settings = WindowSettings(
                        patch=spec.window,
                        overlap=spec.overlap,
                        blend=spec.blend,
                        sw_batch_size=spec.sw_batch_size,
                        bf16=bf16,
                    )
                    runner = SlidingWindowRunner(predictor, spec.out_channels, settings, self.device)
                else:
                    runner = VolumeRunner(predictor, self.device, bf16)
                loaded = LoadedModel(ref, spec, self.device, runner)
                self._models[ref] = loaded
                self.loads += 1
            return loaded

    def get(self, storage: ObjectStorage, ref: ModelRef) -> LoadedModel:
        """The model `ref` names (owner, name, version), read from the registry's objects the first
        time: that owner's files only, checked against the manifest written when it was verified."""
        loaded = self._models.get(ref)
        if loaded is not None:
            return loaded
        try:
            manifest = ModelManifest.model_validate_json(
                storage.read(model_key(ref.owner, ref.name, ref.version, MANIFEST_FILE))
            )
        except (ClientError, ValidationError, InvalidKey) as error:
            raise ModelUnavailable(f"model {ref} is not registered and ready") from error
        if manifest.ref != ref:
            raise ModelUnavailable(f"model {ref}: its manifest names {manifest.ref}")
        data = storage.read(model_key(ref.owner, ref.name, ref.version, manifest.spec.model_file))
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise ModelUnavailable(f"model {ref}: the file is not the one verified")
        return self.add(ref, data, manifest.spec)
