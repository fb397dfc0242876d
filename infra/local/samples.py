"""Real scans that installed packages ship, for the demo, the tests and the benchmarks.

Found by path, without importing the package that ships them (nilearn would pull in scikit-learn
and pandas just to name a file); never downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the {name} package is not installed (pip install -e '.[local]')")
    return Path(spec.origin).parent


def mni152_t1_path() -> Path:
    """nilearn's MNI152 T1 (ICBM 2009a symmetric, 1 mm, 197x233x189): the demo's bundled scan."""
    return _package_dir("nilearn") / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
