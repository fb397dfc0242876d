"""The local cloud's cached template (infra/local/template.py) is served only while nothing that
shaped it changed. The synthesizer here stands in for the CDK (real synthesis runs in the
integration tier: test_local_cloud.py checks the cache's record of what synthesis imported)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.local.template import cached_template


class CountingSynthesizer:
    """Returns a template naming the call, and the files a synthesis of this tree imports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls = 0

    def __call__(self, context: dict[str, Any] | None) -> tuple[dict[str, Any], list[Path]]:
        self.calls += 1
        imported = [self.root / "infra" / "stack.py", self.root / "voxelpipe" / "wiring.py"]
        return {"synthesis": self.calls, "context": context or {}}, imported


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "infra").mkdir()
    (tmp_path / "voxelpipe").mkdir()
    (tmp_path / "infra" / "stack.py").write_text("MEMORY = 512\n")
    (tmp_path / "voxelpipe" / "wiring.py").write_text("BUCKET = 'ingest'\n")
    (tmp_path / "voxelpipe" / "analysis.py").write_text("THRESHOLD = 0.5\n")  # not imported by synthesis
    (tmp_path / "cdk.json").write_text('{"context": {"retention_days": 30}}')
    return tmp_path


def _template(tree: Path, synthesizer: CountingSynthesizer, context: dict[str, Any] | None = None) -> Any:
    return cached_template(context, root=tree, cache_dir=tree / "build" / "local", synthesize=synthesizer)


def test_an_unchanged_tree_is_served_from_the_cache(tree: Path):
    synthesizer = CountingSynthesizer(tree)
    first = _template(tree, synthesizer)
    assert _template(tree, synthesizer) == first
    assert synthesizer.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda tree: (tree / "infra" / "stack.py").write_text("MEMORY = 1024\n"), id="infra source"
        ),
        pytest.param(
            lambda tree: (tree / "voxelpipe" / "wiring.py").write_text("BUCKET = 'other'\n"),
            id="voxelpipe module synthesis imported",
        ),
        pytest.param(lambda tree: (tree / "cdk.json").write_text('{"context": {}}'), id="cdk.json"),
        pytest.param(
            lambda tree: (tree / "infra" / "new_construct.py").write_text(""), id="infra module added"
        ),
        pytest.param(lambda tree: (tree / "voxelpipe" / "wiring.py").unlink(), id="imported module removed"),
    ],
)
def test_a_change_to_what_shaped_the_template_synthesizes_again(tree: Path, change: Any):
    synthesizer = CountingSynthesizer(tree)
    _template(tree, synthesizer)
    change(tree)
    assert _template(tree, synthesizer)["synthesis"] == 2
    assert _template(tree, synthesizer)["synthesis"] == 2  # and that one is cached in turn


def test_the_cdk_context_from_the_environment_invalidates(tree: Path, monkeypatch: pytest.MonkeyPatch):
    synthesizer = CountingSynthesizer(tree)
    _template(tree, synthesizer)
    monkeypatch.setenv("CDK_CONTEXT_JSON", '{"alarm_email": "ops@example.org"}')
    assert _template(tree, synthesizer)["synthesis"] == 2


def test_a_module_synthesis_does_not_import_leaves_the_cache_alone(tree: Path):
    synthesizer = CountingSynthesizer(tree)
    _template(tree, synthesizer)
    (tree / "voxelpipe" / "analysis.py").write_text("THRESHOLD = 0.7\n")
    assert _template(tree, synthesizer)["synthesis"] == 1


def test_each_context_has_its_own_entry(tree: Path):
    synthesizer = CountingSynthesizer(tree)
    default = _template(tree, synthesizer)
    gpu = _template(tree, synthesizer, {"gpu_heartbeat_s": 5})
    assert gpu == {"synthesis": 2, "context": {"gpu_heartbeat_s": 5}}
    assert _template(tree, synthesizer) == default
    assert _template(tree, synthesizer, {"gpu_heartbeat_s": 5}) == gpu
    assert synthesizer.calls == 2


def test_an_unreadable_cache_entry_is_synthesized_again(tree: Path):
    synthesizer = CountingSynthesizer(tree)
    _template(tree, synthesizer)
    (tree / "build" / "local" / "template.json").write_text("{not json")
    assert _template(tree, synthesizer)["synthesis"] == 2


def test_a_source_changed_while_synthesis_ran_is_not_cached(tree: Path):
    """Digests taken after synthesis must not vouch for a template made from an older file."""
    synthesizer = CountingSynthesizer(tree)

    def editing_meanwhile(context: dict[str, Any] | None) -> tuple[dict[str, Any], list[Path]]:
        result = synthesizer(context)
        (tree / "infra" / "stack.py").write_text("MEMORY = 2048\n")  # a merge lands mid-synthesis
        return result

    first = cached_template(None, root=tree, cache_dir=tree / "build" / "local", synthesize=editing_meanwhile)
    assert first["synthesis"] == 1
    assert _template(tree, synthesizer)["synthesis"] == 2  # not served the stale one
