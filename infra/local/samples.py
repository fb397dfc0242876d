"""Real scans that installed packages ship, for the demo and the tests (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import nilearn.datasets

_NILEARN_DATA = Path(nilearn.datasets.__file__).parent / "data"


def mni152_t1_path() -> Path:
    """nilearn's MNI152 T1 (ICBM 2009a symmetric, 1 mm, 197x233x189): the demo's bundled scan."""
    return _NILEARN_DATA / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
