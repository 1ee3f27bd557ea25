"""A folder's listing, and what it may delete: a source that is down deletes nothing.

A folder that cannot be listed stops the run. A sub-folder that cannot be listed is
reported, and the documents indexed under it are kept. A listing that would delete every
indexed document of the folder (an empty mount point: the share is not mounted), or more
than half of them when the index holds at least MASS_DELETE_MIN of it (a half-synced
copy), stops the run before anything is written: such a deletion is done by a run with
`taimatsu ingest --allow-mass-delete`. A run without the flag never confirms it, however
often it sees the same listing: a share down across several cron runs stays indexed.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import IngestError, IngestRefused
from ingest.parsing import supported

MASS_DELETE_SHARE = 0.5  # a run may delete at most this share of a folder's documents...
MASS_DELETE_MIN = 20  # ...once the index holds this many of them (below: any but all)


@dataclass
class Listing:
    files: list[Path] = field(default_factory=list)
    unlisted: list[Path] = field(default_factory=list)  # sub-folders that could not be read


def list_folder(root: Path) -> Listing:
    """Supported files under root, sorted; hidden entries and Office lock files (~$x.docx)
    skipped; directory symlinks not followed (no loops). IngestError when root itself
    cannot be listed."""
    listing = Listing()

    def unreadable(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else root
        if folder == root:
            raise IngestError(
                f"{root} cannot be listed ({exc.strerror or exc.__class__.__name__}); "
                "nothing was changed; give the ingestion user read access and rerun"
            )
        listing.unlisted.append(folder)

    for folder, dirs, files in os.walk(root, onerror=unreadable, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(folder)  # joined per name: a third of Path(folder, name)'s cost
        for name in sorted(files):
            if name.startswith((".", "~$")):
                continue
            path = base / name
            if supported(path):
                listing.files.append(path)
    return listing


def under(source: str, folders: Collection[str]) -> bool:
    return any(source.startswith(folder + "/") for folder in folders)


def refuse_mass_delete(root: Path, indexed: int, listed: int, doomed: int, allow: bool) -> None:
    """Stop the run when its listing would delete all, or most, of the folder's indexed
    documents (see the module's docstring)."""
    if allow or not doomed:
        return
    flag = "run `taimatsu ingest --allow-mass-delete` to delete them"
    if doomed >= indexed:
        looks = "unmounted or emptied" if not listed else "replaced by another folder"
        raise IngestRefused(
            f"{root} lists {listed} documents and none of the {indexed} indexed from it: "
            f"the folder looks {looks}, so this run deleted nothing; mount or restore it, "
            f"or {flag}"
        )
    if indexed >= MASS_DELETE_MIN and doomed > indexed * MASS_DELETE_SHARE:
        raise IngestRefused(
            f"{root} lists {listed} documents and {doomed} of the {indexed} indexed from it "
            f"would be deleted (over {MASS_DELETE_SHARE:.0%}): the folder looks half-synced "
            f"or half-mounted, so this run changed nothing; check it, or {flag}"
        )
