"""Cohort export's parts without AWS: measures flattened with their units, a study's rows, the
filters, the CSV and Parquet encoders, and the memory an export holds."""

from __future__ import annotations

import csv
import io
import math
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fakes import InMemoryStudyStore
from tests.fixtures.cohort import ROWS, VERSIONS, cohort_study, rows_of, summary
from voxelpipe.cohort import COLUMNS, MeasureFilter, measure_pages, study_rows
from voxelpipe.measure_rows import measure_rows, unit_of
from voxelpipe.measure_tables import csv_chunks, parquet_chunks
from voxelpipe.ports import StudyPage
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus


@pytest.mark.parametrize(
    ("path", "unit"),
    [
        ("regions.hippocampus_left.volume_ml", "mL"),
        ("regions.Left Hippocampus.volume_ml", "mL"),
        ("regions.brain.paired_change_pct", "%"),
        ("regions.brain.paired_rate_pct_per_year", "%/year"),
        ("interval_years", "year"),
        ("bpf", "fraction"),
        ("regions.hippocampus_left.fraction_of_tiv", "fraction"),
        ("fractions_of_tiv.gm", "fraction"),  # an entry without a unit of its own: its container's
        ("structures.hippocampus_ml.left.asymmetry", ""),  # ... and no further up
        ("scores.gm_ml.z", "z-score"),
        ("hippocampus_volume_z", "z-score"),
        ("scores.gm_ml.percentile", "percentile"),
        ("scores.gm_ml.value", "mL"),  # a statistic of a named measure: its unit
        ("scores.gm_ml.reference.sd", "mL"),
        ("scores.gm_ml.reference.age_range.1", "year"),
        ("header.voxel_size_mm.2", "mm"),  # a list's items: the list's unit
        ("header.voxel_volume_mm3", "mm3"),
        ("header.obliquity_deg.0", "deg"),
        ("intensity.mean", ""),  # the mean of a thing with no unit
        ("snr", ""),
        ("header.dimensions.0", ""),
        ("cortical_thickness_mm", "mm"),
        ("duration_s", "s"),
        ("_ml", ""),  # a suffix alone is no name
    ],
)
def test_a_measure_unit_comes_from_its_name(path: str, unit: str):
    assert unit_of(tuple(path.split("."))) == unit


def test_measures_flatten_to_dotted_names_of_numbers():
    measures = {
        "bpf": 0.8,
        "regions": {"Left Hippocampus": {"volume_ml": 3, "number": 17, "tissue": "gm"}},
        "header": {"voxel_size_mm": [1, 1, 1.2], "oblique": True, "orientation": "RAS"},
        "preview": {"window": [1.0, 2.0]},
        "rate_pct_per_year": None,
        "nan_ml": math.nan,
        "inf_ml": math.inf,
        "warnings": ["a warning"],
        "method": "jacobian-integration",
    }
    assert list(measure_rows(measures)) == [
        ("bpf", 0.8, "fraction"),
        ("regions.Left Hippocampus.volume_ml", 3.0, "mL"),
        ("header.voxel_size_mm.0", 1.0, "mm"),
        ("header.voxel_size_mm.1", 1.0, "mm"),
        ("header.voxel_size_mm.2", 1.2, "mm"),
        ("header.oblique", 1.0, "boolean"),
    ]
    assert list(measure_rows("not a dict")) == [] and list(measure_rows(None)) == []


def test_each_analysis_shape_gives_its_hand_counted_rows():
    for name, measures in summary(3, longitudinal=True).items():
        assert len(list(measure_rows(measures))) == ROWS[name], name


def test_a_study_gives_one_row_per_measure_with_its_subject_and_versions():
    study = cohort_study(7, "lab-a")
    rows = list(study_rows(study))
    assert len(rows) == rows_of(7) == sum(ROWS.values())
    by_name = {(row.analysis, row.measure): row for row in rows}
    rate = by_name["longitudinal", "regions.hippocampus_left.paired_rate_pct_per_year"]
    assert (rate.value, rate.unit, rate.analysis_version) == (-0.61, "%/year", VERSIONS["longitudinal"])
    assert rate._asdict() | {"value": 0} == {
        "study_id": study.study_id,
        "subject_ref": "sub-0003",
        "scan_date": "2024-01-08",
        "age": 77.0,
        "sex": "M",
        "status": "COMPLETED",
        "attempt": 2,
        "completed_at": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=12)).isoformat(),
        "analysis": "longitudinal",
        "analysis_version": "1.0.0",
        "measure": "regions.hippocampus_left.paired_rate_pct_per_year",
        "value": 0,
        "unit": "%/year",
    }
    gm = by_name["volumetrics", "gm_ml"]
    assert (gm.value, gm.unit) == (600.7, "mL")
    # Only the analyses asked for; a study finalized before versions were kept has none.
    study.analysis_versions = None
    study.subject = None
    only = list(study_rows(study, frozenset({"normative"})))
    assert len(only) == ROWS["normative"]
    assert {(r.analysis, r.analysis_version, r.subject_ref, r.age) for r in only} == {
        ("normative", None, None, None)
    }


def test_a_study_not_completed_has_no_completion_time():
    study = cohort_study(2, "lab-a", status=StudyStatus.FAILED)
    assert {row.completed_at for row in study_rows(study)} == {None}


def test_the_filters_the_index_does_not_apply():
    study = cohort_study(10, "lab-a")  # sub-0005, scanned 2024-01-11
    assert MeasureFilter().covers(study)
    assert MeasureFilter(subject_ref="sub-0005").covers(study)
    assert not MeasureFilter(subject_ref="sub-0006").covers(study)
    assert MeasureFilter(scan_from=date(2024, 1, 11), scan_to=date(2024, 1, 11)).covers(study)
    assert not MeasureFilter(scan_from=date(2024, 1, 12)).covers(study)
    assert not MeasureFilter(scan_to=date(2024, 1, 10)).covers(study)
    # No scan date (or none the record knows): outside any scan date range, inside every other.
    undated = cohort_study(10, "lab-a", scan_dates=False)
    assert MeasureFilter(subject_ref="sub-0005").covers(undated)
    assert not MeasureFilter(scan_to=date(2030, 1, 1)).covers(undated)


def _store(count: int, tenant: str = "lab-a") -> InMemoryStudyStore:
    store = InMemoryStudyStore()
    for i in range(count):
        store.studies[cohort_study(i, tenant).study_id] = cohort_study(i, tenant)
    return store


def test_rows_come_page_by_page_newest_first_with_the_filters():
    store = _store(25)
    store.studies.update({s.study_id: s for s in (cohort_study(i, "lab-b") for i in range(3))})
    pages = list(measure_pages(store, "lab-a", MeasureFilter(), page_studies=10))
    assert [len({r.study_id for r in page}) for page in pages] == [10, 10, 5]
    rows = [row for page in pages for row in page]
    assert len(rows) == sum(rows_of(i) for i in range(25))
    assert rows[0].study_id == cohort_study(24, "lab-a").study_id
    subject = list(measure_pages(store, "lab-a", MeasureFilter(subject_ref="sub-0003"), page_studies=10))
    assert {r.study_id for page in subject for r in page} == {
        cohort_study(i, "lab-a").study_id for i in (6, 7)
    }
    longitudinal = MeasureFilter(analyses=frozenset({"longitudinal"}))
    assert sum(len(p) for p in measure_pages(store, "lab-a", longitudinal)) == 12 * ROWS["longitudinal"]
    assert list(measure_pages(store, "lab-a", MeasureFilter(status=StudyStatus.FAILED))) == []


def test_csv_and_parquet_read_back_as_written():
    store = _store(6)
    pages = list(measure_pages(store, "lab-a", MeasureFilter(), page_studies=4))
    rows = [row for page in pages for row in page]
    text = b"".join(csv_chunks(pages)).decode()
    read = list(csv.DictReader(io.StringIO(text)))
    assert tuple(read[0]) == COLUMNS and len(read) == len(rows)
    assert read[0]["subject_ref"] == rows[0].subject_ref and float(read[0]["value"]) == rows[0].value
    assert {r["completed_at"] for r in read} != {""} and read[0]["analysis_version"] == "1.4.0"
    table = pq.read_table(io.BytesIO(b"".join(parquet_chunks(pages))))
    assert table.num_rows == len(rows) and table.column_names == list(COLUMNS)
    assert table.schema.field("value").type == pa.float64() and table.schema.field("age").type == pa.float64()
    assert table.to_pylist() == [row._asdict() for row in rows]
    assert pq.ParquetFile(io.BytesIO(b"".join(parquet_chunks(pages)))).num_row_groups == len(pages)
    empty = pq.read_table(io.BytesIO(b"".join(parquet_chunks([]))))
    assert empty.num_rows == 0 and empty.column_names == list(COLUMNS)
    assert b"".join(csv_chunks([])).decode().strip() == ",".join(COLUMNS)


class _GeneratedStore:
    """A tenant's `count` studies made as each page is asked for, so that nothing but the export
    holds them: the memory an export takes is the export's."""

    def __init__(self, count: int) -> None:
        self.count = count

    def tenant_studies(self, tenant: str, *, limit: int, start_key: Any, **_: Any) -> StudyPage:
        start = int(start_key["i"]) if start_key else 0
        end = min(start + limit, self.count)
        items: list[StudyRecord] = [cohort_study(i, tenant) for i in range(start, end)]
        return StudyPage(items=items, next_key={"i": end} if end < self.count else None)


def _export_peak(count: int, encode: Any) -> tuple[int, int, int]:
    """(peak bytes of Python objects while producing the export, peak bytes of Arrow's buffers,
    bytes produced)."""
    store: Any = _GeneratedStore(count)
    produced = 0
    b"".join(encode([]))  # imports done before counting
    default_pool = pa.default_memory_pool()
    arrow = pa.proxy_memory_pool(default_pool)  # counts its own peak
    pa.set_memory_pool(arrow)
    tracemalloc.start()
    try:
        for chunk in encode(measure_pages(store, "lab-a", MeasureFilter(), page_studies=20)):
            produced += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default_pool)
    return peak, arrow.max_memory() or 0, produced


@pytest.mark.parametrize("encode", [csv_chunks, parquet_chunks], ids=["csv", "parquet"])
def test_an_export_holds_one_page_whatever_the_cohort_size(encode: Any):
    small_peak, small_arrow, small = _export_peak(60, encode)
    large_peak, large_arrow, large = _export_peak(600, encode)
    assert large > 8 * small
    # Ten times the studies, about the same memory: one page (20 studies and their rows) at a time,
    # never the cohort; and for Parquet, Arrow's buffers likewise.
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert large_arrow < 1.5 * small_arrow + (1 << 20), (small_arrow, large_arrow)
    if encode is csv_chunks:
        assert large_peak < large / 2, (large_peak, large)
    else:
        assert small_arrow > 0  # the pool saw the encoder's buffers
