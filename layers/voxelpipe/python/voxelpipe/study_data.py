"""A study's data in the bucket as a whole: where it lies, and removing all of it.

Deleting a study removes every object of it (all versions), its task and object rows and its identity
map (the honest broker's: docs/dicom.md); a step that
was still running when the study was deleted removes what it wrote when it ends (`writing_for`), and
the reaper purges deleted studies again once every step they had can have ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from voxelpipe.keys import derived_key, quarantine_key, upload_prefix, work_prefix
from voxelpipe.ports import IdentityMaps, ObjectStorage, StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import Prefix


def study_prefix(study: StudyRecord, prefix: Prefix) -> str:
    """Where the study's objects lie under one of the bucket's prefixes."""
    if prefix in (Prefix.UPLOADS, Prefix.QUARANTINE):
        uploads = upload_prefix(study.tenant, study.study_id)
        return uploads if prefix is Prefix.UPLOADS else quarantine_key(uploads)
    if prefix is Prefix.DERIVED:
        return derived_key(study.study_id) + "/"
    if prefix is Prefix.WORK:
        return work_prefix(study.study_id)
    raise ValueError(f"no study's objects lie under {prefix}")


STUDY_PREFIXES = (Prefix.UPLOADS, Prefix.QUARANTINE, Prefix.DERIVED, Prefix.WORK)


def purge_study(
    store: StudyStore, storage: ObjectStorage, identity_maps: IdentityMaps, study: StudyRecord
) -> int:
    """Remove every object (all versions), every task and object row and the identity map of a
    deleted study; the count (of objects and rows). Idempotent: run again after a late writer (a
    step still running when the study was deleted, Prepare writing its map), it removes what that
    writer left."""
    removed = sum(storage.delete_all_versions(study_prefix(study, prefix)) for prefix in STUDY_PREFIXES)
    identity_maps.forget(study.study_id)
    return removed + store.forget_tasks(study.study_id) + store.forget_objects(study.study_id)


@contextmanager
def writing_for(
    store: StudyStore, storage: ObjectStorage, study_id: str, writes: Iterable[Prefix]
) -> Iterator[None]:
    """Around a step that writes a study's objects under `writes`: when it ends, returning or
    raising, and the study was deleted meanwhile, what it wrote there (and its task rows) is removed
    at once. (In AWS, stopping a deleted study's execution does not stop a Lambda or a GPU task
    already running.) Each step removes only what it may write; the reaper purges deleted studies
    whole once every step they had can have ended, for writers that die before this runs."""
    try:
        yield
    finally:
        study = store.get_study(study_id)
        if study is not None and study.status == StudyStatus.DELETED:
            for prefix in writes:
                storage.delete_all_versions(study_prefix(study, prefix))
            store.forget_tasks(study_id)
