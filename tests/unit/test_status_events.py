"""The status-change event: its documented schema and example match the model."""

from __future__ import annotations

import json
from pathlib import Path

from voxelpipe.status_events import StudyStatusChanged
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_the_published_schema_is_the_models():
    published = json.loads((EVENTS / "study_status_changed.schema.json").read_text())
    published.pop("$id")
    published.pop("description")
    generated = StudyStatusChanged.model_json_schema()
    generated.pop("description", None)
    assert published == generated


def test_the_example_event_parses_and_names_source_and_detail_type():
    example = json.loads((EVENTS / "study_status_changed.json").read_text())
    assert (example["source"], example["detail-type"]) == (EVENT_SOURCE, STATUS_CHANGED)
    detail = StudyStatusChanged.model_validate(example["detail"])
    assert detail.status == "FAILED" and detail.previous == "RUNNING" and detail.error["type"] == "Stuck"
