"""DICOM element values from the raw bytes pydicom read, and the scaling factors they carry.

The header readers (``sniff``, ``series``) keep the elements they need as pydicom read them, unconverted
(pydicom's value conversion costs more than the parse), and turn them into numbers here.  A
value that is absent or does not parse is None: a missing position or spacing is judged by the
checks that need it.

Scaling factors are the exception: Rescale Slope/Intercept (and RT Dose's Dose Grid Scaling)
turn every stored value into the real one, so one that is present but unusable rejects the
object (``bad_header``) rather than being ignored, which would hand on the raw values as if they
were the real ones.  Unusable: empty, not exactly one decimal number, not finite, or beyond
float32's range (the precision the analyses compute in: any non-zero value scaled by it would
overflow); a slope of zero too (it would erase the image).  An absent slope or intercept is the
identity (1, 0), as the standard's MR images have none.
"""

from __future__ import annotations

import math
from typing import Final, NoReturn

import numpy as np

from voxelpipe.rejections import ReasonCode, Rejected

__all__ = [
    "FLOAT32_MAX",
    "first_number",
    "integer",
    "numbers",
    "read_rescale",
    "scale_factor",
    "text",
    "ushort",
    "vector",
]

FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_SHOWN: Final = 32  # characters of an unusable value quoted back to the uploader


def text(raw: bytes) -> str:
    """A text value (UI, CS, DS, IS...), padding stripped."""
    # latin-1 never fails; the values read this way (UI, CS, DS, IS) are ASCII by definition.
    return raw.decode("latin-1").strip(" \x00")


def _parse(raw: bytes) -> list[float] | None:
    """Every value of a (multi-valued) DS/IS, finite or not; None where one does not parse."""
    value = text(raw)
    if not value:
        return None
    try:
        return [float(part) for part in value.split("\\")]
    except ValueError:
        return None


def numbers(raw: bytes) -> list[float] | None:
    """The values of a DS/IS; None if empty, or if any does not parse or is not finite."""
    values = _parse(raw)
    return values if values is not None and all(math.isfinite(v) for v in values) else None


def integer(raw: bytes) -> int | None:
    """The first value of an IS (or a DS holding a whole number)."""
    values = numbers(raw)
    if not values or values[0] != int(values[0]):
        return None
    return int(values[0])


def ushort(raw: bytes, little: bool) -> int | None:
    """A US value in the dataset's byte order."""
    if len(raw) < 2:
        return None
    return int.from_bytes(raw[:2], "little" if little else "big")


def first_number(raw: bytes | None) -> float | None:
    """The first value of a DS, if it is a finite number."""
    values = numbers(raw) if raw else None
    return values[0] if values else None


def vector(raw: bytes | None, n: int) -> tuple[float, ...] | None:
    """A DS of exactly `n` finite values (a position, orientation, spacing)."""
    values = numbers(raw) if raw else None
    return tuple(values) if values is not None and len(values) == n else None


def _unusable(name: str, problem: str, where: str) -> NoReturn:
    place = f" ({where})" if where else ""
    raise Rejected(
        ReasonCode.BAD_HEADER,
        f"{name}{place} {problem}, so the stored pixel values cannot be turned into real ones.",
    )


def scale_factor(raw: bytes | None, name: str, *, nonzero: bool, where: str = "") -> float | None:
    """A scaling factor (one DS value): None where the element is absent; Rejected(bad_header)
    where it is present but unusable (see the module's doc)."""
    if raw is None:
        return None
    values = _parse(raw)
    if values is None or len(values) != 1:
        shown = text(raw)
        if not shown:
            _unusable(name, "is present but empty", where)
        quoted = repr(shown[:_SHOWN] + ("..." if len(shown) > _SHOWN else ""))
        _unusable(name, f"is {quoted}, not one decimal number", where)
    value = values[0]
    if not math.isfinite(value):
        _unusable(name, f"is {text(raw)[:_SHOWN]!r}, not a finite number", where)
    if abs(value) > FLOAT32_MAX:
        _unusable(name, f"is {value:g}, beyond float32's range (+-{FLOAT32_MAX:.3g})", where)
    if nonzero and value == 0:
        _unusable(name, "is 0 (it would erase the image)", where)
    return value


def read_rescale(
    slope: bytes | None,
    intercept: bytes | None,
    *,
    default: tuple[float, float] = (1.0, 0.0),
    where: str = "",
) -> tuple[float, float]:
    """(slope, intercept) from Rescale Slope (0028,1053) and Rescale Intercept (0028,1052)'s raw
    values; `default`'s for an absent one. Rejected(bad_header) for an unusable one."""
    slope_value = scale_factor(slope, "Rescale Slope (0028,1053)", nonzero=True, where=where)
    intercept_value = scale_factor(intercept, "Rescale Intercept (0028,1052)", nonzero=False, where=where)
    return (
        default[0] if slope_value is None else slope_value,
        default[1] if intercept_value is None else intercept_value,
    )
