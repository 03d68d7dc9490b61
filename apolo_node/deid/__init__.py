"""De-identification (PS3.15 Annex E), header part: profile, actions, verifier, ``deid`` command.

May import only ``apolo_node.config``, ``apolo_node.catalog`` and ``apolo_node.pseudonym``.
"""

from apolo_node.deid.actions import Deidentifier, deidentify, is_standard_uid
from apolo_node.deid.command import (
    CleanInstance,
    DeidError,
    DeidSummary,
    FileOutcome,
    clean_instance,
    deidentify_paths,
)
from apolo_node.deid.profile import Action, Option, Profile
from apolo_node.deid.verify import PHILeakError, verify_deidentified

__all__ = [
    "Action",
    "CleanInstance",
    "DeidError",
    "DeidSummary",
    "Deidentifier",
    "FileOutcome",
    "Option",
    "PHILeakError",
    "Profile",
    "clean_instance",
    "deidentify",
    "deidentify_paths",
    "is_standard_uid",
    "verify_deidentified",
]
