"""The tissue classes of tissue-seg and their label values: plain data, importable without torch."""

from __future__ import annotations

TISSUES: tuple[str, str, str] = ("csf", "gm", "wm")
# Label values in the label map: 0 is background (outside the brain mask).
LABELS: dict[str, int] = {"background": 0, "csf": 1, "gm": 2, "wm": 3}
# The EM's default strength of its spatial (MRF) prior; 0 turns it off.
DEFAULT_MRF_BETA = 2.0
