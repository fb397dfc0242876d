"""Intensity non-uniformity (bias field) of a T1 brain: N3-style estimation, and when to apply it.

Estimation follows N3 (Sled, Zijdenbos & Evans, IEEE TMI 1998), with a Legendre polynomial for
the smooth field: in log space the observed intensity is the true one plus the field, so the
histogram of the observed log intensities is the true one blurred by the field's distribution.
Each iteration deconvolves the histogram (Wiener filter, Gaussian blur of `fwhm`), maps every
sample to its expected true log intensity given the sharpened histogram, and fits the polynomial
(least squares) to the differences; the field's mean log over the mask is 0 (it carries no global
scale). Samples are block means (~100k blocks wholly inside the mask), so noise does not widen the
histogram being sharpened. It needs no tissue classes, which is what makes it stable: a field
fitted to the classes of the EM mixture (Wells et al. 1996; Van Leemput et al. 1999) feeds back
through them, and on the MNI152 T1 it drifts until it has turned the deep grey nuclei into WM
(measured: GM/WM Dice 0.93/0.97 -> 0.77/0.78).

When to apply it (`mode="auto"`): any atlas-free estimator reads part of the anatomy as field --
deep grey nuclei are darker than the WM around them, and WM intensity differs between tracts. On
the MNI152 T1, whose field is flat by construction, the estimate spans 14 % (1st to 99th
percentile over the brain; 15 % with 4 % Rician noise), and applying it costs 3-4 Dice points of
GM and WM. A field spanning less than `min_span` (25 %) is therefore reported but not applied: a
real non-uniformity that weak costs the mixture less than removing it would. Stronger fields (the
test's synthetic one spans 43 %; 30-40 % is common at 3 T without correction) are applied.
`mode="on"`/`"off"` override the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from voxelpipe.segmentation.device import resolve_device
from voxelpipe.segmentation.em import bounding_box, quantiles

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Tensor = torch.Tensor
BiasMode = Literal["auto", "on", "off"]

_LOG_FLOOR = 0.01  # intensities below this fraction of the 99th percentile count as that (log of 0)


@dataclass(frozen=True)
class BiasParameters:
    degree: int = 3  # Legendre polynomial, total degree: (d+1)(d+2)(d+3)/6 coefficients
    fwhm: float = 0.10  # of the field's log distribution (N3: 0.15; 0.10 reads less anatomy as field)
    wiener_noise: float = 0.1  # N3: 0.01; 0.1 regularises the deconvolution more
    bins: int = 200
    max_iterations: int = 100
    tolerance: float = 5e-4  # std of the change of log b between iterations that ends the loop
    sample_voxels: int = 100_000  # about this many block means of the mask: plenty for 20 terms
    min_span: float = 0.25  # mode "auto": apply only a field spanning at least this (p99 / p1 - 1)

    def __post_init__(self) -> None:
        if not 0 <= self.degree <= 6:
            raise ValueError("bias degree must be in [0, 6]")
        if not (0 < self.fwhm < 1 and 0 < self.wiener_noise < 1):
            raise ValueError("fwhm and wiener_noise must be in (0, 1)")
        if self.bins < 16 or self.max_iterations < 1 or self.sample_voxels < 1000:
            raise ValueError("bins >= 16, max_iterations >= 1, sample_voxels >= 1000")
        if not (self.tolerance > 0 and self.min_span >= 0):
            raise ValueError("tolerance must be > 0 and min_span >= 0")


@dataclass(frozen=True)
class BiasField:
    field: FloatArray  # multiplicative, on the input grid; 1 outside the mask's bounding box
    span: float  # p99 / p1 - 1 of the field over the mask
    applied: bool
    iterations: int
    converged: bool


def _legendre(x: Tensor, degree: int) -> Tensor:
    """Legendre polynomials P_0..P_degree at x in [-1, 1]: (degree + 1, len(x))."""
    polys = [torch.ones_like(x)]
    if degree >= 1:
        polys.append(x)
    for n in range(1, degree):
        polys.append(((2 * n + 1) * x * polys[n] - n * polys[n - 1]) / (n + 1))
    return torch.stack(polys)


def _terms(degree: int) -> list[tuple[int, int, int]]:
    return [
        (i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i) for k in range(degree + 1 - i - j)
    ]


def _axis(n: int, device: torch.device) -> Tensor:
    return (
        torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=device)
        if n > 1
        else torch.zeros(1, dtype=torch.float64, device=device)
    )


def _sharpen(u: Tensor, params: BiasParameters) -> Tensor:
    """Each value of `u` (log intensities) mapped to its expected true value under the Wiener-
    deconvolved histogram of `u` (N3's E[true | observed])."""
    lo, hi = quantiles(u, (0.001, 0.999))
    if hi <= lo:
        return u.clone()
    bins = params.bins
    width = (hi - lo) / bins
    hist = torch.histc(u.clamp(lo, hi), bins=bins, min=lo, max=hi).double()
    n = 1 << math.ceil(math.log2(2 * bins))
    offset = (n - bins) // 2
    padded = torch.zeros(n, dtype=torch.float64, device=u.device)
    padded[offset : offset + bins] = hist
    k = torch.arange(n, dtype=torch.float64, device=u.device)
    k = torch.minimum(k, n - k)
    sigma = params.fwhm / (2 * math.sqrt(2 * math.log(2))) / width
    kernel = torch.exp(-0.5 * (k / sigma) ** 2)
    kernel_f = torch.fft.fft(kernel / kernel.sum())
    wiener = kernel_f.conj() / (kernel_f.abs() ** 2 + params.wiener_noise**2)
    true_hist = torch.fft.ifft(torch.fft.fft(padded) * wiener).real.clamp(min=0)
    centres = lo + (torch.arange(n, dtype=torch.float64, device=u.device) - offset + 0.5) * width
    numerator = torch.fft.ifft(torch.fft.fft(true_hist * centres) * kernel_f).real
    denominator = torch.fft.ifft(torch.fft.fft(true_hist) * kernel_f).real
    expected = (numerator / denominator.clamp(min=1e-12 * float(denominator.max())))[offset : offset + bins]
    # Linear interpolation of the per-bin expectation at each value.
    position = ((u.double() - lo) / width - 0.5).clamp(0, bins - 1)
    left = position.floor().long().clamp(max=bins - 2)
    frac = (position - left).clamp(0, 1)
    mapped: Tensor = (expected[left] * (1 - frac) + expected[left + 1] * frac).to(u.dtype)
    return mapped


def estimate_bias_field(
    data: FloatArray,
    mask: BoolArray,
    parameters: BiasParameters | None = None,
    device: str | torch.device | None = None,
) -> tuple[FloatArray, float, int, bool]:
    """The multiplicative field of `data` inside `mask` (N3-style): (field, span, iterations,
    converged). The field is 1 outside the mask's bounding box."""
    params = parameters or BiasParameters()
    dev = resolve_device(device)
    field = np.ones(data.shape, dtype=np.float32)
    if params.degree == 0 or not mask.any():
        return field, 0.0, 0, True
    box = bounding_box(mask)
    m = torch.as_tensor(np.ascontiguousarray(mask[box]), device=dev)
    y = torch.as_tensor(np.ascontiguousarray(data[box]), dtype=torch.float32, device=dev)
    shape = tuple(int(n) for n in m.shape)
    n_mask = int(m.sum())
    # Block means over the mask (blocks wholly inside it): ~sample_voxels samples, each averaging
    # stride^3 voxels, so noise does not widen the histogram that the deconvolution sharpens.
    stride = max(1, round((n_mask / params.sample_voxels) ** (1 / 3)))
    pool = {"kernel_size": stride, "stride": stride}
    inside = torch.nn.functional.avg_pool3d(m.float()[None, None], **pool)[0, 0]
    means = torch.nn.functional.avg_pool3d((y * m)[None, None], **pool)[0, 0]
    full = inside >= 1.0
    if int(full.sum()) < 100:  # a thin or tiny mask: single voxels instead
        stride, full, means = 1, m, y
    sub = torch.nonzero(full)
    values = means[full]
    floor = _LOG_FLOOR * max(quantiles(values, (0.99,))[0], 1e-12)
    v = torch.log(values.clamp(min=floor)).double()

    terms = _terms(params.degree)
    polys = [_legendre(_axis(n, dev), params.degree) for n in shape]
    # Block centres in the input grid's normalised coordinates.
    centres = []
    for a in range(3):
        position = sub[:, a].double() * stride + (stride - 1) / 2
        centres.append(_legendre(2.0 * position / max(shape[a] - 1, 1) - 1.0, params.degree))
    design = torch.stack([centres[0][i] * centres[1][j] * centres[2][k] for i, j, k in terms], dim=1)
    normal = design.T @ design
    log_b = torch.zeros_like(v)
    coefficients = torch.zeros(len(terms), dtype=torch.float64, device=dev)
    converged = False
    iteration = 0
    for iteration in range(1, params.max_iterations + 1):  # noqa: B007 (the count is reported)
        u = v - log_b
        residual = v - _sharpen(u, params)
        coefficients = torch.linalg.solve(normal, design.T @ residual)
        new = design @ coefficients
        shift = float(new.mean())
        new -= shift
        coefficients[0] -= shift  # P_0 = 1: the constant term carries the shift
        change = float((new - log_b).std())
        log_b = new
        if change < params.tolerance:
            converged = True
            break
    lo, hi = quantiles(log_b.float(), (0.01, 0.99))
    span = math.exp(hi - lo) - 1.0
    d = params.degree + 1
    dense = torch.zeros((d, d, d), dtype=torch.float64, device=dev)
    for c, (i, j, k) in zip(coefficients, terms, strict=True):
        dense[i, j, k] = c
    grid = torch.exp(torch.einsum("ijk,ix,jy,kz->xyz", dense, polys[0], polys[1], polys[2])).float()
    field[box] = grid.cpu().numpy()
    return field, span, iteration, converged


def correct_bias(
    data: FloatArray,
    mask: BoolArray,
    mode: BiasMode = "auto",
    parameters: BiasParameters | None = None,
    device: str | torch.device | None = None,
) -> tuple[FloatArray, BiasField]:
    """`data` divided by its bias field where `mode` says so (see the module docstring)."""
    params = parameters or BiasParameters()
    if mode not in ("auto", "on", "off"):
        raise ValueError("bias mode must be 'auto', 'on' or 'off'")
    if mode == "off":
        return data, BiasField(np.ones(data.shape, np.float32), 0.0, False, 0, True)
    field, span, iterations, converged = estimate_bias_field(data, mask, params, device)
    applied = mode == "on" or span >= params.min_span
    corrected = (data / field).astype(np.float32, copy=False) if applied else data
    return corrected, BiasField(field, round(span, 4), applied, iterations, converged)
