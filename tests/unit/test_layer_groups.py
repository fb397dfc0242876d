"""The dependency groups the layers are built from: every pinned dependency in one group, every
zip function with the core group (tests/integration/test_layers.py builds and imports them)."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from infra.layers import LayerBuildError, group_requirements, pinned_requirements
from voxelpipe.function_specs import DEPENDENCY_GROUPS, FUNCTIONS, DependencyGroup


def test_every_pinned_dependency_is_in_exactly_one_group():
    grouped = group_requirements(pinned_requirements())
    assert set(grouped) == set(DependencyGroup)
    names = [req.name for reqs in grouped.values() for req in reqs]
    assert len(names) == len(set(names)) == len(pinned_requirements())


def test_a_dependency_left_out_of_the_groups_is_refused():
    with pytest.raises(LayerBuildError, match="in no group"):
        group_requirements([*pinned_requirements(), Requirement("six==1.17.0")])
    with pytest.raises(LayerBuildError, match="lack"):
        group_requirements(pinned_requirements(), {**DEPENDENCY_GROUPS, DependencyGroup.WEB: ("flask",)})


def test_every_zip_function_gets_the_core_group_and_images_none():
    for spec in FUNCTIONS:
        if spec.image:
            assert spec.dependencies == (), spec.name
        else:
            assert spec.dependencies[0] is DependencyGroup.CORE, spec.name
            assert len(set(spec.dependencies)) == len(spec.dependencies), spec.name
