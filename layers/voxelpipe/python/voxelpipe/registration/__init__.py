"""Registration to template space: a template (MNI ICBM 2009a) registered to a subject, affine then
deformable, with SimpleITK; the transforms as files; template-space maps warped onto the subject."""

from voxelpipe.registration.register import (
    TRANSFORM_FILES,
    LocalRefinement,
    Method,
    Registration,
    RegistrationSettings,
    refine_locally,
    register,
    registration_from_files,
    transform_files,
    warp_label_map,
    warp_probability_map,
)
from voxelpipe.registration.template import Template, mni152_2009_template

__all__ = [
    "TRANSFORM_FILES",
    "LocalRefinement",
    "Method",
    "Registration",
    "RegistrationSettings",
    "Template",
    "mni152_2009_template",
    "refine_locally",
    "register",
    "registration_from_files",
    "transform_files",
    "warp_label_map",
    "warp_probability_map",
]
