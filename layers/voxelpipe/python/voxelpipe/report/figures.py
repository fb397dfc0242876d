"""The report's figures, drawn with matplotlib's object-oriented API (Figure + FigureCanvasAgg).

Never pyplot: its global figure manager is not thread-safe, and Finalize runs in threads locally.
matplotlib is imported inside the functions, so importing this module costs nothing until a report
is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from voxelpipe.atlases.atlas import REGION_NUMBERS, REGIONS, region_colour
from voxelpipe.tissues import COLOURS, LABELS, TISSUES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Modest resolution: the figures print at ~17 cm wide, and every PNG travels inside the HTML.
DPI = 80
# The centiles drawn as bands: z of the 2.5th, 16th, 50th, 84th and 97.5th centiles.
CENTILE_BANDS: tuple[tuple[float, float, str], ...] = (
    (-1.96, 1.96, "2.5th-97.5th"),
    (-1.0, 1.0, "16th-84th"),
)
UNKNOWN_REGION_COLOUR = (255, 0, 255)  # a value of the map no region has (never expected)
# Each label in the colours the previews and the viewer paint it (one palette: tissues.COLOURS).
TISSUE_COLOURS: dict[int, str] = {LABELS[t]: "#{:02x}{:02x}{:02x}".format(*COLOURS[t]) for t in TISSUES}


@dataclass(frozen=True)
class LabelOverlay:
    """A label map over the volume: each non-zero label drawn in its colour, `names` for the legend."""

    labels: npt.NDArray[np.integer[Any]]
    colours: Mapping[int, str]
    names: Mapping[int, str]


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    canvas.print_png(buffer)  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def label_centre(labels: npt.NDArray[np.integer[Any]]) -> tuple[int, int, int]:
    """The voxel the three planes cross at: the labelled voxels' centre (the volume's without any)."""
    where = np.argwhere(labels > 0)
    if where.size == 0:
        return tuple(int(n) // 2 for n in labels.shape)  # type: ignore[return-value]
    centre = where.mean(axis=0)
    return round(float(centre[0])), round(float(centre[1])), round(float(centre[2]))


def _planes(
    data: npt.NDArray[Any], centre: tuple[int, int, int], zooms: Sequence[float]
) -> list[tuple[str, npt.NDArray[Any], float, str, str]]:
    """(name, 2-D plane in display order, pixel aspect, left-edge side, right-edge side) of each view
    of a RAS-canonical array, in the radiological convention (the patient's right on the left)."""
    i, j, k = centre
    zx, zy, zz = (float(z) for z in zooms)
    axial = data[:, :, k].T[::-1, ::-1]  # rows anterior -> posterior, cols patient right -> left
    coronal = data[:, j, :].T[::-1, ::-1]  # rows superior -> inferior, cols patient right -> left
    sagittal = data[i, :, :].T[::-1, ::-1]  # rows superior -> inferior, cols anterior -> posterior
    return [
        ("axial", axial, zy / zx, "R", "L"),
        ("coronal", coronal, zz / zx, "R", "L"),
        ("sagittal", sagittal, zz / zy, "A", "P"),
    ]


def overlay_figure(
    volume: npt.NDArray[Any], zooms: Sequence[float], overlay: LabelOverlay, window: tuple[float, float]
) -> bytes:
    """A PNG of the axial, coronal and sagittal planes through the labels' centre: the volume in grey
    (`window`: the intensities mapped to black and white), the labels over it half-transparent."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if volume.shape != overlay.labels.shape:
        raise ValueError(f"labels {overlay.labels.shape} are not on the volume's grid {volume.shape}")
    top = max([*overlay.colours, 1])
    table = ["#00000000"] * (top + 1)
    for value, colour in overlay.colours.items():
        table[value] = colour
    cmap = ListedColormap(table)
    centre = label_centre(overlay.labels)
    figure = _new_figure(8.0, 3.1)
    axes = figure.subplots(1, 3)
    for ax, (name, plane, aspect, left, right), (_, labels, _, _, _) in zip(
        axes, _planes(volume, centre, zooms), _planes(overlay.labels, centre, zooms), strict=True
    ):
        ax.imshow(plane, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
        shown = np.ma.masked_equal(labels, 0)
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=top, alpha=0.55, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.5, left, transform=ax.transAxes, color="white", fontsize=8, va="center")
        ax.text(0.98, 0.5, right, transform=ax.transAxes, color="white", fontsize=8, va="center", ha="right")
    present = {int(v) for v in np.unique(overlay.labels)} - {0}
    handles = [
        Patch(color=overlay.colours[value], label=overlay.names.get(value, str(value)))
        for value in sorted(overlay.colours)
        if value in present
    ]
    if handles:
        figure.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False
        )
    return _png(figure)


def region_colours(numbers: Sequence[int]) -> dict[int, str]:
    """Each region number's colour, as the previews and the viewer paint it (the atlases' palette)."""
    region_of = {number: key for key, number in REGION_NUMBERS.items()}
    colours = {}
    for number in numbers:
        key = region_of.get(number)
        colour = region_colour(REGIONS[key]) if key is not None else UNKNOWN_REGION_COLOUR
        colours[number] = "#{:02x}{:02x}{:02x}".format(*colour)
    return colours


@dataclass(frozen=True)
class ScoredMeasure:
    """One normative score, as the normative analysis gave it: the reference it used, never another."""

    measure: str
    label: str
    value: float
    z: float
    percentile: float
    expected: float  # the reference mean (table) or the equation's expected value at the subject's age
    sd: float
    age_range: tuple[float, float]
    # "table": the mean and SD hold over the whole age band; "equations": they are the equation's at
    # the subject's age (the equation's coefficients are not in results.json).
    form: str


def centile_figure(scores: Sequence[ScoredMeasure], age: float) -> bytes:
    """Per measure, value over age: the reference's centile bands (2.5th-97.5th, 16th-84th and the
    median) and the subject's point. A table row's bands span its age band; an equation's are drawn
    at the subject's age only, since results.json holds its expected value there and nowhere else."""
    columns = min(3, len(scores))
    rows = math.ceil(len(scores) / columns)
    figure = _new_figure(8.0, 2.3 * rows)
    grid = figure.subplots(rows, columns, squeeze=False)
    for ax in grid.flat[len(scores) :]:
        ax.set_visible(False)
    for ax, score in zip(grid.flat, scores, strict=False):
        if score.form == "table":
            low, high = score.age_range
        else:
            span = max(1.0, 0.04 * (score.age_range[1] - score.age_range[0]))
            low, high = age - span, age + span
        for z_low, z_high, name in CENTILE_BANDS:
            ax.fill_between(
                [low, high],
                score.expected + z_low * score.sd,
                score.expected + z_high * score.sd,
                color="#4c72b0",
                alpha=0.18,
                linewidth=0,
                label=f"{name} centile",
            )
        ax.plot(
            [low, high],
            [score.expected, score.expected],
            color="#4c72b0",
            linewidth=1.2,
            label="50th centile",
        )
        ax.plot([age], [score.value], marker="o", color="#c0392b", markersize=6, label="this study")
        ax.set_title(f"{score.label}: z {score.z:+.2f}, {score.percentile:.1f}th centile", fontsize=8)
        ax.set_xlabel("age (years)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlim(min(low, age) - 1, max(high, age) + 1)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    return _png(figure)


def z_figure(scores: Sequence[ScoredMeasure]) -> bytes:
    """The z-scores side by side, over the bands |z| < 1 and |z| < 1.96."""
    figure = _new_figure(8.0, 0.35 * len(scores) + 1.0)
    ax = figure.subplots()
    positions = list(range(len(scores)))[::-1]
    ax.axvspan(-1.96, 1.96, color="#4c72b0", alpha=0.12)
    ax.axvspan(-1.0, 1.0, color="#4c72b0", alpha=0.18)
    ax.axvline(0, color="#4c72b0", linewidth=1)
    ax.scatter([s.z for s in scores], positions, color="#c0392b", zorder=3)
    ax.set_yticks(positions, [s.label for s in scores], fontsize=7)
    ax.set_xlabel("z-score (bands: 16th-84th and 2.5th-97.5th centiles)", fontsize=7)
    limit = max(3.0, *(abs(s.z) + 0.5 for s in scores))
    ax.set_xlim(-limit, limit)
    ax.tick_params(labelsize=7)
    return _png(figure)


@dataclass(frozen=True)
class TimelineSeries:
    """One line of the timeline chart: the cumulative change since the first study (%) at each
    study's years since the first; `dashed` for the difference of cross-sectional volumes."""

    label: str
    years: Sequence[float]
    change_pct: Sequence[float]
    colour: str
    dashed: bool = False


def timeline_figure(series: Sequence[TimelineSeries], x_label: str) -> bytes:
    """The subject's change over time: each series' cumulative change since the first study."""
    figure = _new_figure(8.0, 2.8)
    ax = figure.subplots()
    ax.axhline(0, color="#888888", linewidth=0.8)
    for line in series:
        ax.plot(
            line.years,
            line.change_pct,
            color=line.colour,
            linestyle="--" if line.dashed else "-",
            marker="o",
            markersize=3.5,
            label=line.label,
        )
    ax.set_xlabel(x_label, fontsize=7)
    ax.set_ylabel("change since the first study (%)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    return _png(figure)
