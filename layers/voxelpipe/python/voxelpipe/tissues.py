"""The tissue classes of tissue-seg and their label values: plain data, importable without torch."""

from __future__ import annotations

TISSUES: tuple[str, str, str] = ("csf", "gm", "wm")
# Label values in the label map: 0 is background (outside the brain mask).
LABELS: dict[str, int] = {"background": 0, "csf": 1, "gm": 2, "wm": 3}
# How each tissue is named and painted wherever its labels are shown: the previews, the viewer's
# legend, the report's overlays (RGB, 0-255).
NAMES: dict[str, str] = {"csf": "CSF", "gm": "Grey matter", "wm": "White matter"}
COLOURS: dict[str, tuple[int, int, int]] = {"csf": (40, 120, 255), "gm": (40, 200, 80), "wm": (255, 210, 40)}
# The EM's default strength of its spatial (MRF) prior; 0 turns it off.
DEFAULT_MRF_BETA = 2.0
