"""The ONE cache tables (``sessions.pqt``, ``datasets.pqt``) of a folder of ALF sessions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from .spec import session_eid

__all__ = ["SESSIONS_PROJECT", "TASK_PROTOCOL", "write_one_cache"]

SESSIONS_PROJECT = "ibl_neuropixel_brainwide_01"
TASK_PROTOCOL = "_iblrig_tasks_ephysChoiceWorld6.6.2"
SESSION_COLUMNS = ("id", "lab", "subject", "date", "number", "task_protocol", "projects")
DATASET_COLUMNS = (
    "eid",
    "id",
    "rel_path",
    "file_size",
    "hash",
    "exists",
    "qc",
    "default_revision",
)


def _session_folders(root: Path) -> list[Path]:
    from one.alf.path import session_path_parts

    folders = []
    for candidate in sorted(root.glob("*/Subjects/*/*/*")):
        if not candidate.is_dir():
            continue
        try:
            session_path_parts(candidate.relative_to(root).as_posix(), assert_valid=True)
        except ValueError:
            continue
        folders.append(candidate)
    return folders


def write_one_cache(root: str | Path) -> pd.DataFrame:
    """Index every ALF session under ``root`` into ONE cache tables; returns the sessions table.

    Writes ``sessions.pqt`` and ``datasets.pqt`` at ``root`` the way ONE's own tables are
    written (``iblutil.io.parquet.save`` with ``date_created`` metadata, ``qc`` as the ordered
    ``QC_TYPE`` categorical, ``hash=None`` so no md5 check runs, sorted index). Each dataset is
    ``default_revision`` when it is the newest revision of its collection and name, so loads
    without a revision pick the newest without warnings. Session ids are
    :func:`~neds_hf.data.synthetic.spec.session_eid` of the relative session path.
    """
    from iblutil.io import parquet

    root = Path(root)
    session_rows = []
    dataset_rows = []
    for folder in _session_folders(root):
        rel = folder.relative_to(root).as_posix()
        lab, _, subject, date, number = rel.split("/")
        eid = session_eid(rel)
        session_rows.append(
            {
                "id": eid,
                "lab": lab,
                "subject": subject,
                "date": pd.Timestamp(date).date(),
                "number": int(number),
                "task_protocol": TASK_PROTOCOL,
                "projects": SESSIONS_PROJECT,
            }
        )
        dataset_rows.extend(_dataset_rows(folder, eid))
    sessions = pd.DataFrame(session_rows, columns=list(SESSION_COLUMNS)).set_index("id")
    metadata = {
        "date_created": pd.Timestamp.now().isoformat(sep=" ", timespec="minutes"),
        "origin": "local",
    }
    parquet.save(root / "sessions.pqt", sessions.sort_index(), metadata)
    parquet.save(root / "datasets.pqt", _datasets_table(dataset_rows), metadata)
    return sessions.sort_index()


def _dataset_rows(folder: Path, eid: str) -> list[dict[str, Any]]:
    """One ``datasets.pqt`` row per file of a session, ``default_revision`` set per name."""
    from one.alf.path import ALFPath, rel_path_parts

    rows = []
    for dataset in sorted(ALFPath(folder).iter_datasets(recursive=True)):
        rel_path = dataset.relative_to_session().as_posix()
        collection, revision, *_ = rel_path_parts(rel_path, assert_valid=False)
        rows.append(
            {
                "eid": eid,
                "id": str(uuid.uuid5(uuid.UUID(eid), rel_path)),
                "rel_path": rel_path,
                "file_size": dataset.stat().st_size,
                "hash": None,
                "exists": True,
                "qc": "NOT_SET",
                "_key": f"{collection or ''}/{dataset.name}",
                "_revision": revision or "",
            }
        )
    newest: dict[str, str] = {}
    for row in rows:
        newest[row["_key"]] = max(newest.get(row["_key"], ""), row["_revision"])
    for row in rows:
        row["default_revision"] = row["_revision"] == newest[row["_key"]]
        del row["_key"], row["_revision"]
    return rows


def _datasets_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ``datasets.pqt`` table with ONE's dtypes and ``(eid, id)`` index."""
    from one.alf.cache import QC_TYPE

    datasets = pd.DataFrame(rows, columns=list(DATASET_COLUMNS))
    datasets = datasets.astype({"qc": QC_TYPE, "file_size": "UInt64", "exists": bool})
    datasets["default_revision"] = datasets["default_revision"].astype(bool)
    return datasets.set_index(["eid", "id"]).sort_index()
