"""Atlases: label maps in a template's space, with their label tables, licences and citations."""

from voxelpipe.atlases.atlas import (
    MAX_LABEL,
    REGION_NUMBERS,
    REGIONS,
    RIGHT_SHADE,
    STRUCTURE_COLOURS,
    STRUCTURES,
    Atlas,
    AtlasError,
    AtlasLabel,
    Region,
    atlas_from_files,
    label_table_csv,
    parse_label_table,
    region_colour,
)

__all__ = [
    "MAX_LABEL",
    "REGIONS",
    "REGION_NUMBERS",
    "RIGHT_SHADE",
    "STRUCTURES",
    "STRUCTURE_COLOURS",
    "Atlas",
    "AtlasError",
    "AtlasLabel",
    "Region",
    "atlas_from_files",
    "label_table_csv",
    "parse_label_table",
    "region_colour",
]
