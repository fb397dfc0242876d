"""Atlases: label maps in a template's space, with their label tables, licences and citations."""

from voxelpipe.atlases.atlas import (
    MAX_LABEL,
    REGIONS,
    STRUCTURES,
    Atlas,
    AtlasError,
    AtlasLabel,
    Region,
    atlas_from_files,
    label_table_csv,
    parse_label_table,
)

__all__ = [
    "MAX_LABEL",
    "REGIONS",
    "STRUCTURES",
    "Atlas",
    "AtlasError",
    "AtlasLabel",
    "Region",
    "atlas_from_files",
    "label_table_csv",
    "parse_label_table",
]
