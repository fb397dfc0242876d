"""Within-subject change between two T1 scans: halfway-space registration and Jacobian integration
(`paired`), and the two scans' cross-sectional volumes subtracted (`subtraction`)."""

from voxelpipe.longitudinal.halfway import RigidFit, half_of, halfway_grid, register_rigid
from voxelpipe.longitudinal.paired import BRAIN, PairedChange, PairedSettings, paired_change

__all__ = [
    "BRAIN",
    "PairedChange",
    "PairedSettings",
    "RigidFit",
    "half_of",
    "halfway_grid",
    "paired_change",
    "register_rigid",
]
