"""The README's curl session works as written (against `voxelpipe serve`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def _curl_session() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return next(block for block in blocks if "TOKEN=$(.venv/bin/voxelpipe token" in block)


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("curl") is None, reason="needs curl and jq")
def test_the_readme_curl_session(server: str, tmp_path: Path):
    root = README.parent
    script = _curl_session().replace("localhost:8000", server.removeprefix("http://"))
    script = script.replace(".venv/bin/", f"{root}/.venv/bin/")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert '"status": "COMPLETED"' in run.stdout
    assert '"dimensions": [' in run.stdout
    assert (tmp_path / "preview_axial.png").read_bytes().startswith(b"\x89PNG")
