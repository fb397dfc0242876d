"""Brain extraction and GM/WM/CSF tissue segmentation of T1-weighted volumes, in torch.

One implementation for the CPU (Lambda) and CUDA (GPU workers): `device=None` picks CUDA when
present. numpy and torch, SimpleITK for N4 (on the CPU whatever the device), plus scipy's
`ndimage.label` for connected components on the CPU (the analysis extra installs both in the
container images; on CUDA the components stay in torch). The caller sets torch's and SimpleITK's
threads (`voxelpipe.thread_budget`; RunAnalysis does).

* `segment` -- brain mask, bias correction and EM segmentation of one volume (`pipeline`);
* `brain_mask` -- skull-stripped detection and classical brain extraction (`brain_mask`);
* `correct_bias` -- N4 bias field through SimpleITK, fitted shrunk, applied at full resolution (`bias`);
* `segment_tissues` -- EM Gaussian mixture with a mean-field MRF prior (`em`);
* `to_grid` / `resample` -- results onto another voxel grid (`resample`).
"""

from voxelpipe.segmentation.bias import BiasField, BiasParameters, correct_bias, estimate_bias_field
from voxelpipe.segmentation.brain_mask import BrainMask, SkullStrippedCheck, brain_mask, detect_skull_stripped
from voxelpipe.segmentation.device import default_device, resolve_device
from voxelpipe.segmentation.em import EMParameters, TissueSegmentation, segment_tissues
from voxelpipe.segmentation.resample import axis_map, resample, to_grid
from voxelpipe.segmentation.segment import Segmentation, SegmentationParameters, segment

__all__ = [
    "BiasField",
    "BiasParameters",
    "BrainMask",
    "EMParameters",
    "Segmentation",
    "SegmentationParameters",
    "SkullStrippedCheck",
    "TissueSegmentation",
    "axis_map",
    "brain_mask",
    "correct_bias",
    "default_device",
    "detect_skull_stripped",
    "estimate_bias_field",
    "resample",
    "resolve_device",
    "segment",
    "segment_tissues",
    "to_grid",
]
