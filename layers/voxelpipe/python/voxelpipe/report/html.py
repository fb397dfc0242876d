"""The study report as one self-contained HTML page, from results.json's document and the study's
arrays.

Self-contained: the figures are data: URIs, the CSS is inline, there is no script and no reference
to anything outside the file, so the page reads the same offline, attached to an e-mail, or
printed to PDF. Every number taken from results.json carries a hook naming where it comes from:
`data-measure="volumetrics.gm_ml"` (an analysis's measures: `analysis.key.key...`) or
`data-doc="timings_ms.prepare"` (the document itself), and the printed text is that value exactly
as results.json holds it, so a test can compare the two.

What the report shows of the subject is what the de-identified study holds: the study id, the
pseudonymous subject_ref, age and sex. Never a file name (uploads are stored under names the server
chose, and the uploader's names stay out of the report).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelpipe.report import figures
from voxelpipe.report.flags import Flag, study_flags

# Units of the measures the report prints, by key (the rest say theirs in results.json's `units`).
UNITS: dict[str, str] = {
    "gm_ml": "mL",
    "wm_ml": "mL",
    "csf_ml": "mL",
    "tiv_ml": "mL",
    "bpf": "fraction",
    "volume_ml": "mL",
    "label_ml": "mL",
    "total_ml": "mL",
    "fraction_of_tiv": "fraction",
    "asymmetry": "(L-R)/mean",
    "snr": "ratio",
    "cnr": "ratio",
}
MEASURE_NAMES: dict[str, str] = {
    "gm_ml": "Grey matter",
    "wm_ml": "White matter",
    "csf_ml": "CSF",
    "tiv_ml": "Total intracranial volume",
    "bpf": "Brain parenchymal fraction",
}
TISSUE_NAMES: dict[int, str] = {1: "CSF", 2: "grey matter", 3: "white matter"}


@dataclass(frozen=True)
class ReportArrays:
    """The study's arrays on one RAS-canonical grid: the de-identified volume, and the label maps
    to draw over it (None: that analysis did not run, or its map could not be read)."""

    volume: npt.NDArray[np.floating[Any]]
    zooms: tuple[float, float, float]
    tissue_labels: npt.NDArray[np.integer[Any]] | None = None
    region_labels: npt.NDArray[np.integer[Any]] | None = None
    notes: list[str] = field(default_factory=list)  # why a map is missing, for the reader


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number_text(value: Any) -> str:
    """The value as results.json writes it (json.dumps), so a printed number is the document's."""
    return json.dumps(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _measure(analysis: str, path: Sequence[str], value: Any, unit: str = "") -> str:
    if not _is_number(value):
        return '<span class="na">not available</span>'
    hook = _e(".".join((analysis, *path)))
    unit_html = f' <span class="unit">{_e(unit)}</span>' if unit else ""
    return f'<span class="num" data-measure="{hook}">{_number_text(value)}</span>{unit_html}'


def _doc(path: Sequence[str], value: Any, unit: str = "") -> str:
    if not _is_number(value):
        return '<span class="na">not available</span>'
    unit_html = f' <span class="unit">{_e(unit)}</span>' if unit else ""
    return f'<span class="num" data-doc="{_e(".".join(path))}">{_number_text(value)}</span>{unit_html}'


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    header = "".join(f"<th>{_e(cell)}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _label(key: str) -> str:
    return MEASURE_NAMES.get(key, key.replace("_", " "))


def _measures_of(document: Mapping[str, Any], analysis: str) -> Mapping[str, Any] | None:
    entry = document.get("analyses", {}).get(analysis)
    return entry.get("measures") if isinstance(entry, Mapping) else None


def _header(document: Mapping[str, Any], subject: Mapping[str, Any] | None) -> str:
    subject = subject or {}
    volume = document.get("volume", {})
    rows = [
        ("Study", _e(document.get("study_id", ""))),
        ("Attempt", _doc(("attempt",), document.get("attempt"))),
        ("Subject (pseudonymous)", _e(subject.get("subject_ref") or "not given")),
        ("Age", _e(subject["age"]) + " years" if subject.get("age") is not None else "not given"),
        ("Sex", _e(subject.get("sex") or "not given")),
        ("Completed", _e(document.get("completed_at", ""))),
        ("Input format", _e(document.get("input", {}).get("format", "unknown"))),
        (
            "Volume",
            f"{_e(' x '.join(str(n) for n in volume.get('original_shape', [])))} voxels of "
            f"{_e(' x '.join(str(z) for z in volume.get('voxel_size_mm', [])))} mm, "
            f"orientation {_e(volume.get('original_orientation', ''))}",
        ),
    ]
    body = "".join(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="facts">{body}</table>'


def _volumetrics(measures: Mapping[str, Any]) -> str:
    rows = [
        [_e(_label(key)), _measure("volumetrics", (key,), measures.get(key), UNITS[key])]
        for key in ("gm_ml", "wm_ml", "csf_ml", "tiv_ml", "bpf")
        if key in measures
    ]
    fractions = measures.get("fractions_of_tiv")
    if isinstance(fractions, Mapping):
        rows += [
            [
                f"{_e(name.upper())} / TIV",
                _measure("volumetrics", ("fractions_of_tiv", name), value, "fraction"),
            ]
            for name, value in fractions.items()
        ]
    method = (
        f'<p class="method">{_e(measures.get("method", ""))}. TIV: {_e(measures.get("tiv_method", ""))}.</p>'
    )
    return "<h3>Whole-brain volumes (volumetrics)</h3>" + _table(("Measure", "Value"), rows) + method


def _regional(measures: Mapping[str, Any]) -> str:
    regions = measures.get("regions") or {}
    rows = [
        [
            _e(key.replace("_", " ")),
            _measure("regional", ("regions", key, "volume_ml"), region.get("volume_ml"), "mL"),
            _measure("regional", ("regions", key, "fraction_of_tiv"), region.get("fraction_of_tiv")),
            _e(region.get("tissue", "")),
        ]
        for key, region in regions.items()
        if isinstance(region, Mapping)
    ]
    out = "<h3>Regional volumes (regional)</h3>" + _table(
        ("Region", "Volume", "Fraction of TIV", "Tissue"), rows
    )
    structures = measures.get("structures") or {}
    if structures:
        out += _table(
            ("Structure", "Left + right", "Asymmetry (L-R)/mean"),
            [
                [
                    _e(name.replace("_", " ")),
                    _measure("regional", ("structures", name, "total_ml"), entry.get("total_ml"), "mL"),
                    _measure("regional", ("structures", name, "asymmetry"), entry.get("asymmetry")),
                ]
                for name, entry in structures.items()
                if isinstance(entry, Mapping)
            ],
        )
    return out


def _qc(measures: Mapping[str, Any]) -> str:
    foreground = measures.get("foreground") or {}
    rows = [
        ["Signal-to-noise ratio", _measure("qc", ("snr",), measures.get("snr"))],
        ["Contrast-to-noise ratio (two classes)", _measure("qc", ("cnr",), measures.get("cnr"))],
        ["Foreground volume", _measure("qc", ("foreground", "volume_ml"), foreground.get("volume_ml"), "mL")],
    ]
    note = (measures.get("noise") or {}).get("note")
    text = f'<p class="method">Noise: {_e(note)}</p>' if note else ""
    return "<h3>Image quality (qc)</h3>" + _table(("Measure", "Value"), rows) + text


def _scalar_rows(analysis: str, measures: Mapping[str, Any]) -> list[list[str]]:
    """The numbers at the top level of an analysis's measures (an analysis the report has no
    section for, such as a registered model's)."""
    return [
        [_e(_label(key)), _measure(analysis, (key,), value, UNITS.get(key, ""))]
        for key, value in measures.items()
        if _is_number(value)
    ]


def scored_measures(normative: Mapping[str, Any]) -> list[figures.ScoredMeasure]:
    """The normative analysis's scores as it gave them: its reference (table row or equation) only."""
    form = "equations" if normative.get("form") == "equations" else "table"
    scored = []
    for measure, score in (normative.get("scores") or {}).items():
        if not isinstance(score, Mapping) or score.get("status") != "ok":
            continue
        if form == "equations":
            expected, sd = score["expected"], score["sd"]
            age_range = score["equation"]["age_range"]
        else:
            expected, sd = score["reference"]["mean"], score["reference"]["sd"]
            age_range = score["reference"]["age_range"]
        scored.append(
            figures.ScoredMeasure(
                measure=measure,
                label=_label(measure),
                value=float(score["value"]),
                z=float(score["z"]),
                percentile=float(score["percentile"]),
                expected=float(expected),
                sd=float(sd),
                age_range=(float(age_range[0]), float(age_range[1])),
                form=form,
            )
        )
    return scored


def _normative(normative: Mapping[str, Any]) -> str:
    out = "<h3>Normative scores (normative)</h3>"
    status = normative.get("status")
    if status not in ("ok", "no_scores", "no_reference_row"):
        return (
            out + f'<p class="flag">No normative scores: {_e(status)}. {_e(normative.get("message", ""))}</p>'
        )
    reference_word = "expected" if normative.get("form") == "equations" else "reference mean"
    rows = []
    for measure, score in (normative.get("scores") or {}).items():
        if not isinstance(score, Mapping):
            continue
        if score.get("status") != "ok":
            rows.append(
                [
                    _e(_label(measure)),
                    _measure("normative", ("scores", measure, "value"), score.get("value")),
                    f'<span class="na">{_e(score.get("status"))}</span>',
                    "",
                    "",
                    "",
                ]
            )
            continue
        mean_path = ("expected",) if "expected" in score else ("reference", "mean")
        sd_path = ("sd",) if "sd" in score else ("reference", "sd")
        mean = score.get("expected", (score.get("reference") or {}).get("mean"))
        sd = score.get("sd", (score.get("reference") or {}).get("sd"))
        rows.append(
            [
                _e(_label(measure)),
                _measure(
                    "normative", ("scores", measure, "value"), score.get("value"), UNITS.get(measure, "")
                ),
                _measure("normative", ("scores", measure, *mean_path), mean),
                _measure("normative", ("scores", measure, *sd_path), sd),
                _measure("normative", ("scores", measure, "z"), score.get("z")),
                _measure("normative", ("scores", measure, "percentile"), score.get("percentile")),
            ]
        )
    out += _table(("Measure", "Value", reference_word.capitalize(), "SD", "z", "Centile"), rows)
    scored = scored_measures(normative)
    age = (normative.get("subject") or {}).get("age")
    if scored and _is_number(age):
        out += (
            '<div class="figure">'
            + _image(figures.centile_figure(scored, float(age or 0)), "centile charts")
            + "</div>"
        )
        out += (
            '<p class="caption">Centile bands of the reference the normative analysis used '
            "(median, 16th-84th and 2.5th-97.5th centiles) with this study's value at the subject's age. "
            + (
                "Each equation's expected value and SD are known at the subject's age only, so its "
                "bands are drawn there."
                if normative.get("form") == "equations"
                else "A table row's mean and SD hold over its whole age band."
            )
            + "</p>"
        )
        out += '<div class="figure">' + _image(figures.z_figure(scored), "z-scores") + "</div>"
    out += f'<p class="method">{_e(normative.get("method", ""))}</p>'
    return out


def _flags(flags: Sequence[Flag]) -> str:
    if not flags:
        return (
            "<h2>Quality flags</h2><p>No quality flag was raised: "
            "the checks found nothing to qualify the measures.</p>"
        )
    items = "".join(
        f'<li class="flag {_e(flag.severity)}"><strong>{_e(flag.title)}</strong> '
        f'<span class="source">({_e(flag.source)})</span><br>{_e(flag.meaning)}'
        + (f'<br><span class="detail">Reported: {_e(flag.detail)}</span>' if flag.detail else "")
        + "</li>"
        for flag in flags
    )
    return f'<h2>Quality flags</h2><ul class="flags">{items}</ul>'


def _overlays(arrays: ReportArrays | None, document: Mapping[str, Any]) -> str:
    out = '<h2 class="break">Images</h2>'
    if arrays is None:
        return out + '<p class="na">The study\'s volume could not be read: no images.</p>'
    volume = arrays.volume
    finite = volume[np.isfinite(volume)]
    nonzero = finite[finite != 0]
    sample = nonzero if nonzero.size else finite
    low, high = (float(v) for v in np.percentile(sample, (1.0, 99.5))) if sample.size else (0.0, 1.0)
    window = (low, high if high > low else low + 1.0)
    if arrays.tissue_labels is not None:
        overlay = figures.LabelOverlay(arrays.tissue_labels, figures.TISSUE_COLOURS, TISSUE_NAMES)
        out += "<h3>Tissue segmentation (tissue-seg)</h3>"
        out += (
            '<div class="figure">'
            + _image(figures.overlay_figure(volume, arrays.zooms, overlay, window), "tissue segmentation")
            + "</div>"
        )
    if arrays.region_labels is not None:
        regions = (_measures_of(document, "regional") or {}).get("regions") or {}
        names = {
            int(r["number"]): key.replace("_", " ")
            for key, r in regions.items()
            if isinstance(r, Mapping) and "number" in r
        }
        numbers = sorted(names) or sorted({int(v) for v in np.unique(arrays.region_labels)} - {0})
        overlay = figures.LabelOverlay(arrays.region_labels, figures.region_colours(numbers), names)
        out += "<h3>Regions (regional)</h3>"
        out += (
            '<div class="figure">'
            + _image(figures.overlay_figure(volume, arrays.zooms, overlay, window), "regions")
            + "</div>"
        )
    out += (
        "<p class=\"caption\">Radiological convention: the patient's right on the viewer's left. "
        "The planes cross at the labels' centre.</p>"
    )
    out += "".join(f'<p class="na">{_e(note)}</p>' for note in arrays.notes)
    return out


def _citations(document: Mapping[str, Any]) -> str:
    """Atlases, templates and reference tables the analyses used, with their citations and licences."""
    seen: dict[str, tuple[str, str, str]] = {}
    for analysis, entry in (document.get("analyses") or {}).items():
        measures = entry.get("measures") if isinstance(entry, Mapping) else None
        if not isinstance(measures, Mapping):
            continue
        for key in ("atlas", "template", "norms"):
            item = measures.get(key)
            if isinstance(item, Mapping):
                name = str(item.get(key) or item.get("name") or key)
                version = item.get("version")
                title = f"{key}: {name}" + (f" {version}" if version else "")
                seen.setdefault(
                    title, (analysis, str(item.get("citation", "")), str(item.get("licence", "")))
                )
        for source in measures.get("sources") or []:
            seen.setdefault(f"reference: {source}", (analysis, str(source), ""))
    if not seen:
        return ""
    rows = [
        [
            _e(title),
            _e(analysis),
            f'<span class="long">{_e(citation)}</span>',
            f'<span class="long">{_e(licence)}</span>',
        ]
        for title, (analysis, citation, licence) in seen.items()
    ]
    return "<h3>Atlases, templates and reference tables</h3>" + _table(
        ("Resource", "Used by", "Citation", "Licence"), rows
    )


def _provenance(document: Mapping[str, Any]) -> str:
    provenance = document.get("provenance") or {}
    parameters = provenance.get("parameters") or {}
    versions = [
        [
            _e(name),
            _e(version),
            f"<code>{_e(json.dumps(parameters.get(name, {}), sort_keys=True))}</code>",
        ]
        for name, version in (provenance.get("analyses") or {}).items()
    ]
    out = '<h2 class="break">Provenance</h2>' + _table(("Analysis", "Version", "Parameters"), versions)
    out += _citations(document)
    libraries = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (provenance.get("libraries") or {}).items())
    out += (
        f"<p>voxelpipe {_e(provenance.get('voxelpipe_version', ''))}, "
        f"Python {_e(provenance.get('python', ''))}; "
        f"{libraries}. Input SHA-256 <code>{_e(provenance.get('input_sha256') or 'unknown')}</code>.</p>"
    )
    timings = document.get("timings_ms") or {}
    out += "<h3>Timings</h3>" + _table(
        ("Step", "Duration"),
        [[_e(step), _doc(("timings_ms", step), ms, "ms")] for step, ms in timings.items()],
    )
    cost = provenance.get("cost")
    if isinstance(cost, Mapping):
        rows = [
            [
                "Estimated cost",
                _doc(("provenance", "cost", "estimated_usd"), cost.get("estimated_usd"), "USD"),
            ],
            [
                "Lambda compute",
                _doc(("provenance", "cost", "lambda_gb_seconds"), cost.get("lambda_gb_seconds"), "GB-s"),
            ],
            ["GPU", _doc(("provenance", "cost", "gpu_seconds"), cost.get("gpu_seconds"), "s")],
        ]
        rows += [
            [f"{_e(name.replace('_', ' '))}", _doc(("provenance", "cost", "requests", name), count)]
            for name, count in (cost.get("requests") or {}).items()
        ]
        prices = cost.get("prices") or {}
        out += "<h3>Cost</h3>" + _table(("Item", "Value"), rows)
        out += (
            f'<p class="method">Prices of {_e(prices.get("region", ""))} as of '
            f"{_e(prices.get('as_of', ''))}; counted up to the report (Finalize's own share until then).</p>"
        )
    return out


CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt;
       color: #1d1d1d; margin: 0 auto; max-width: 190mm; }
h1 { font-size: 16pt; margin: 0 0 4mm; }
h2 { font-size: 13pt; border-bottom: 1px solid #888; margin: 6mm 0 2mm; }
h3 { font-size: 11pt; margin: 4mm 0 1.5mm; }
h2, h3 { break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0 2mm; break-inside: auto; }
tr { break-inside: avoid; }
th, td { border: 1px solid #ccc; padding: 1mm 2mm; overflow-wrap: break-word; text-align: left;
         vertical-align: top; font-size: 9pt; }
thead th { background: #eef1f5; }
table.facts th { width: 45mm; background: #f6f6f6; }
.num { font-variant-numeric: tabular-nums; }
.unit, .source, .detail, .caption, .method { color: #555; }
.caption, .method { font-size: 8.5pt; }
.na { color: #777; font-style: italic; }
.figure { break-inside: avoid; text-align: center; }
.figure img { max-width: 100%; }
ul.flags { padding-left: 5mm; }
li.flag { margin-bottom: 2mm; }
li.warning strong { color: #a04000; }
li.attention strong { color: #b00020; }
code { font-size: 8pt; overflow-wrap: anywhere; }
.long { overflow-wrap: anywhere; }
.break { break-before: page; }
footer { margin-top: 6mm; font-size: 8pt; color: #666; }
"""


def _tl(path: Sequence[str | int], value: Any, unit: str = "", digits: int = 2) -> str:
    """A number of the subject's timeline (GET /subjects/{ref}/timeline's document), rounded for
    reading, with the exact value and where it comes from in `data-timeline` / `data-value`."""
    if not _is_number(value):
        return '<span class="na">-</span>'
    unit_html = f' <span class="unit">{_e(unit)}</span>' if unit else ""
    hook = _e(".".join(str(p) for p in path))
    exact = _e(_number_text(value))
    return (
        f'<span class="num" data-timeline="{hook}" data-value="{exact}">{value:.{digits}f}</span>{unit_html}'
    )


# The timeline chart's lines: (region, label, colour); the whole brain's subtraction beside it.
TIMELINE_LINES: tuple[tuple[str, str, str], ...] = (
    ("brain", "whole brain (paired)", "#1f4e9c"),
    ("hippocampus_left", "left hippocampus (paired)", "#c0392b"),
    ("hippocampus_right", "right hippocampus (paired)", "#e67e22"),
)


def _timeline_chart(timeline: Mapping[str, Any]) -> str:
    span = timeline.get("first_to_last") or {}
    path = span.get("path") or []
    if len(path) < 2:
        return ""
    since = {s["study_id"]: s.get("years_since_first") for s in timeline.get("studies") or []}
    dated = all(_is_number(since.get(step["study_id"])) for step in path)
    years = [float(since[step["study_id"]]) if dated else float(i) for i, step in enumerate(path)]
    series = []
    for region, label, colour in TIMELINE_LINES:
        values = [(step.get("regions") or {}).get(region, {}).get("paired_change_pct") for step in path]
        if all(_is_number(v) for v in values):
            series.append(figures.TimelineSeries(label, years, values, colour))
    subtraction = [
        (step.get("regions") or {}).get("brain", {}).get("subtraction_change_pct") for step in path
    ]
    if all(_is_number(v) for v in subtraction):
        series.append(
            figures.TimelineSeries(
                "whole brain (volume subtraction)", years, subtraction, "#1f4e9c", dashed=True
            )
        )
    if not series:
        return ""
    x_label = "years since the first study" if dated else "study (no scan dates: in order)"
    return (
        '<div class="figure">' + _image(figures.timeline_figure(series, x_label), "timeline chart") + "</div>"
    )


def _timeline(timeline: Mapping[str, Any] | None) -> str:
    """The subject's studies over time, when it has more than this one: a chart of the change since
    the first study and a table of each study's change since the one before."""
    studies = list((timeline or {}).get("studies") or [])
    if timeline is None or len(studies) < 2:
        return ""
    out = f"<h2>Over time (subject {_e(timeline.get('subject_ref', ''))})</h2>"
    out += _timeline_chart(timeline)
    rows = []
    for index, study in enumerate(studies):
        change = study.get("change_from_prior") or {}
        brain = (change.get("regions") or {}).get("brain") or {}
        base = ("studies", index, "change_from_prior", "regions", "brain")
        z = (brain.get("rate_z") or {}).get("z")
        rows.append(
            [
                f"<code>{_e(str(study.get('study_id', ''))[:12])}</code>",
                _e(study.get("scan_date") or "not given"),
                _tl(("studies", index, "years_since_first"), study.get("years_since_first")),
                f"<code>{_e(str(change.get('prior_study_id'))[:12])}</code>"
                if change.get("prior_study_id")
                else "",
                _tl((*base, "paired_change_pct"), brain.get("paired_change_pct"), "%"),
                _tl((*base, "paired_rate_pct_per_year"), brain.get("paired_rate_pct_per_year"), "%/year"),
                _tl((*base, "subtraction_change_pct"), brain.get("subtraction_change_pct"), "%"),
                _tl((*base, "rate_z", "z"), z),
            ]
        )
    out += _table(
        (
            "Study",
            "Scan date (shifted)",
            "Years since first",
            "Compared with",
            "Whole brain, paired",
            "Annual rate",
            "By volume subtraction",
            "Rate z",
        ),
        rows,
    )
    span = timeline.get("first_to_last")
    if isinstance(span, Mapping):
        brain = (span.get("regions") or {}).get("brain") or {}
        span_base: tuple[str, ...] = ("first_to_last", "regions", "brain")
        out += (
            f"<p>First to last ({_e(span.get('pairs'))} consecutive pairs"
            + (
                f", {_tl(('first_to_last', 'interval_years'), span.get('interval_years'), 'years')}"
                if _is_number(span.get("interval_years"))
                else ""
            )
            + "): whole brain "
            + _tl((*span_base, "paired_change_pct"), brain.get("paired_change_pct"), "%")
            + ", "
            + _tl((*span_base, "paired_rate_pct_per_year"), brain.get("paired_rate_pct_per_year"), "%/year")
            + ".</p>"
        )
    out += (
        '<p class="caption">Paired change: the longitudinal analysis\'s registration-based measure between '
        "each study and the one before; first to last chains those ratios (V<sub>n</sub>/V<sub>1</sub> = "
        "Π V<sub>i</sub>/V<sub>i-1</sub>). The dashed line subtracts the two studies' cross-sectional "
        "volumes, shown for comparison: its noise exceeds a year's atrophy. Dates are shifted by the "
        "subject's secret offset, so intervals are exact but no date is real.</p>"
    )
    return out


def build_report(
    document: Mapping[str, Any],
    subject: Mapping[str, Any] | None,
    arrays: ReportArrays | None,
    timeline: Mapping[str, Any] | None = None,
) -> str:
    """The report of a completed study: its results document, the subject the study declared
    (subject_ref, age, sex; nothing else is read of it), its arrays (None: no images) and the
    subject's timeline (voxelpipe.timeline's document, this study included; None or one study:
    no timeline section)."""
    measures: dict[str, Mapping[str, Any]] = {
        name: entry["measures"]
        for name, entry in (document.get("analyses") or {}).items()
        if isinstance(entry, Mapping) and isinstance(entry.get("measures"), Mapping)
    }
    sections = ["<h2>Measures</h2>"]
    if "volumetrics" in measures:
        sections.append(_volumetrics(measures["volumetrics"]))
    if "regional" in measures:
        sections.append(_regional(measures["regional"]))
    if "normative" in measures:
        sections.append(_normative(measures["normative"]))
    if "qc" in measures:
        sections.append(_qc(measures["qc"]))
    known = {"volumetrics", "regional", "normative", "qc", "tissue-seg", "registration"}
    for name, values in measures.items():
        rows = _scalar_rows(name, values) if name not in known else []
        if rows:
            sections.append(f"<h3>{_e(name)}</h3>" + _table(("Measure", "Value"), rows))
    registration = measures.get("registration") or {}
    overlap = registration.get("overlap_with_segmentation")
    if isinstance(overlap, Mapping):
        sections.append(
            "<h3>Registration check (registration)</h3>"
            + _table(
                ("Template vs. segmentation overlap", "Dice"),
                [
                    [
                        _e(key.replace("_", " ")),
                        _measure("registration", ("overlap_with_segmentation", key), value),
                    ]
                    for key, value in overlap.items()
                ],
            )
        )
    sections.append(_timeline(timeline))
    sections.append(_flags(study_flags(document)))
    sections.append(_overlays(arrays, document))
    sections.append(_provenance(document))
    study_id = _e(document.get("study_id", ""))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>Study report {study_id}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>Study report</h1>{_header(document, subject)}"
        + "".join(sections)
        + "<footer>Produced by voxelpipe from the study's results.json. Research use: the measures are "
        "automated estimates, not a diagnosis.</footer></body></html>\n"
    )
