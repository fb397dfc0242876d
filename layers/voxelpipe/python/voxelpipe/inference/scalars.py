"""A whole-volume model's output vector as results: named scalars with units (regression), class
probabilities (classification).

numpy only (no torch): the conversion is pure, and every way the vector can disagree with the spec
is a `ModelOutputMismatch` that names what was declared and what came.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelpipe.inference.spec import ModelSpec, RegressionOutput

# Values are float32 out of the network: seven significant digits are all they hold.
_SIGNIFICANT = 7
# How far given probabilities may stray from [0, 1] and from summing to 1 (float32 rounding).
_PROBABILITY_TOLERANCE = 1e-3


class ModelOutputMismatch(ValueError):
    """The network's output is not what its spec declares (length, finiteness, probabilities)."""


def _rounded(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def _vector(values: npt.ArrayLike, names: Sequence[str], what: str) -> npt.NDArray[np.float64]:
    """The output as one float64 value per declared name, or ModelOutputMismatch."""
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.size != len(names):
        raise ModelOutputMismatch(
            f"the network gave {vector.size} value{'s' if vector.size != 1 else ''} per volume; the "
            f"spec declares {len(names)} {what} ({', '.join(names)})"
        )
    bad = [f"{name} ({value})" for name, value in zip(names, vector, strict=True) if not math.isfinite(value)]
    if bad:
        raise ModelOutputMismatch(f"the network gave non-finite values for {', '.join(bad)}")
    return vector


def _subject_value(subject: Mapping[str, Any], field: str) -> float | None:
    """A numeric subject field (the uploader's declaration), None when not declared."""
    value = subject.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def regression_measures(
    values: npt.ArrayLike, outputs: Sequence[RegressionOutput], subject: Mapping[str, Any]
) -> dict[str, Any]:
    """`outputs`: each declared scalar with its unit, and each gap (predicted - the subject's value,
    in the output's unit) whose subject field the study declares."""
    vector = _vector(values, [output.name for output in outputs], "outputs")
    scalars: dict[str, Any] = {}
    for output, value in zip(outputs, vector, strict=True):
        scalars[output.name] = {"value": _rounded(value), "unit": output.unit}
    for output, value in zip(outputs, vector, strict=True):
        if output.compare_to is None or output.gap is None:
            continue
        reference = _subject_value(subject, output.compare_to)
        if reference is None:
            continue
        scalars[output.gap] = {
            "value": _rounded(value - reference),
            "unit": output.unit,
            "of": output.name,
            "compared_to": output.compare_to,
            "subject_value": reference,
        }
    return {"outputs": scalars}


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits)
    exponentials = np.exp(shifted)
    result: npt.NDArray[np.float64] = exponentials / exponentials.sum()
    return result


def classification_measures(values: npt.ArrayLike, classes: Sequence[str], scores: str) -> dict[str, Any]:
    """`probabilities` per class (a softmax of logits, or the network's own probabilities, checked),
    the most probable class and its probability."""
    vector = _vector(values, classes, "classes")
    if scores == "logits":
        probabilities = softmax(vector)
    else:
        low, high, total = float(vector.min()), float(vector.max()), float(vector.sum())
        tolerance = _PROBABILITY_TOLERANCE
        if low < -tolerance or high > 1 + tolerance or abs(total - 1) > tolerance:
            raise ModelOutputMismatch(
                f"the spec says the network outputs probabilities, but it gave values in "
                f"[{low:.4g}, {high:.4g}] summing to {total:.4g} (declare scores: logits for a softmax)"
            )
        probabilities = np.clip(vector, 0.0, 1.0)
    best = int(np.argmax(probabilities))
    return {
        "probabilities": {name: _rounded(p) for name, p in zip(classes, probabilities, strict=True)},
        "predicted_class": classes[best],
        "probability": _rounded(float(probabilities[best])),
    }


def scalar_measures(values: npt.ArrayLike, spec: ModelSpec, subject: Mapping[str, Any]) -> dict[str, Any]:
    """The results of a whole-volume model (regression or classification) from its output vector."""
    if spec.kind == "regression" and spec.outputs is not None:
        return regression_measures(values, spec.outputs, subject)
    if spec.kind == "classification" and spec.classes is not None:
        return classification_measures(values, spec.classes, spec.scores)
    raise ValueError(f"a {spec.kind} model's output is not a vector of scalars")
