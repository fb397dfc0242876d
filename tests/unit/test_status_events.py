"""The status- and step-change events: their documented schemas and examples match the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from voxelpipe.status_events import DeliveryOutcome, StudyStatusChanged, StudyStepChanged
from voxelpipe.wiring import DELIVERY_FAILED, EVENT_SOURCE, STATUS_CHANGED, STEP_CHANGED, STUDY_DELIVERED

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


def test_the_published_step_schema_is_the_models():
    published = json.loads((EVENTS / "study_step_changed.schema.json").read_text())
    published.pop("$id")
    published.pop("description")
    generated = StudyStepChanged.model_json_schema()
    generated.pop("description", None)
    assert published == generated


def test_the_example_step_event_parses_and_is_not_a_status_change():
    example = json.loads((EVENTS / "study_step_changed.json").read_text())
    assert (example["source"], example["detail-type"]) == (EVENT_SOURCE, STEP_CHANGED)
    detail = StudyStepChanged.model_validate(example["detail"])
    assert (detail.step, detail.status, detail.progress) == ("prepare", "RUNNING", 60)
    # The push function tells the two apart by shape: a step's detail is no status change.
    with pytest.raises(ValidationError):
        StudyStatusChanged.model_validate(example["detail"])


def test_the_published_delivery_schema_is_the_models():
    published = json.loads((EVENTS / "delivery_outcome.schema.json").read_text())
    published.pop("$id")
    published.pop("description")
    generated = DeliveryOutcome.model_json_schema()
    generated.pop("description", None)
    assert published == generated


@pytest.mark.parametrize(
    ("example", "detail_type", "status"),
    [
        ("study_delivered.json", STUDY_DELIVERED, "DELIVERED"),
        ("delivery_failed.json", DELIVERY_FAILED, "FAILED"),
    ],
)
def test_the_example_delivery_events_parse_and_are_no_status_change(
    example: str, detail_type: str, status: str
):
    event = json.loads((EVENTS / example).read_text())
    assert (event["source"], event["detail-type"]) == (EVENT_SOURCE, detail_type)
    detail = DeliveryOutcome.model_validate(event["detail"])
    assert detail.status == status and detail.detail_type == detail_type
    with pytest.raises(ValidationError):
        StudyStatusChanged.model_validate(event["detail"])
