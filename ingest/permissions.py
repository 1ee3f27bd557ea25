"""Who may read each document of a run: from the rules (the ACL file, ingest/acl.py), from
the file system (ingest/posix_access.py), or both (TAIMATSU_PERMISSIONS).

`both` keeps the groups both sources allow (the intersection; `everyone` on one side
leaves the other side's groups): a document is never more open than either source says.
Rules can say "hr and finance" but a group list cannot say "in hr and also in staff", so
the intersection of the two lists is the fail-closed form of "a reader must satisfy both".

Permissions never fail open. Rules that were in force for a folder (remembered in the
data folder's sources.json, and visible in the index as documents closed to some) and
are now missing or empty stop the run before anything is written (IngestRefused);
opening the documents to everyone takes `default = ["everyone"]` in the rules or
`taimatsu ingest --allow-open`. A file whose ACL cannot be read, or whose reader the group
map does not name, is reported and keeps the groups it had (a new one stays out).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from assistant.errors import AclError, IngestError, IngestRefused, PermissionsUnreadable
from assistant.index import DocInfo
from assistant.settings import EVERYONE, Settings
from ingest.acl import Acl
from ingest.posix_access import FolderEntries, principal_name, read_entries, readers


def load_group_map(path: Path | None) -> dict[str, list[str]] | None:
    """{file-system name: Taimatsu groups} from TAIMATSU_GROUP_MAP; None when not set."""
    if path is None:
        return None
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise IngestError(
            f"the group map {path} (TAIMATSU_GROUP_MAP) cannot be read ({exc}); fix it and rerun"
        ) from exc
    mapping: dict[str, list[str]] = {}
    for name, value in data.items():
        groups = [value] if isinstance(value, str) else value
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise IngestError(
                f"the group map {path}: {name!r} must map to a group name or a list of them "
                "([] to give that name no access)"
            )
        mapping[name] = sorted(set(groups))
    return mapping


def intersect(rules: list[str], files: list[str]) -> list[str]:
    """The groups both sources allow; `everyone` on one side means the other side's."""
    if EVERYONE in rules:
        return sorted(set(files))
    if EVERYONE in files:
        return sorted(set(rules))
    return sorted(set(rules) & set(files))


class Permissions:
    """The groups of each document of one run over `root`."""

    def __init__(self, settings: Settings, root: Path, acl: Acl, mode: str | None = None) -> None:
        """`mode`: the permission source, if not TAIMATSU_PERMISSIONS (a personal upload
        folder's are its owner's rules alone, ingest/owners.py)."""
        self.mode = mode or settings.permissions
        self.root = root
        self.acl = acl
        self.group_map = load_group_map(settings.group_map) if self.mode != "rules" else None
        self._folders = FolderEntries(root)
        if self.mode != "rules" and not hasattr(os, "getxattr"):
            raise IngestError(
                "TAIMATSU_PERMISSIONS=filesystem needs Linux (POSIX ACLs are read from "
                "extended attributes); use rules on this system"
            )

    @property
    def uses_rules(self) -> bool:
        return self.mode in ("rules", "both")

    def describe(self) -> str:
        """The permission source in force, for the run's summary and `taimatsu status`."""
        rules = f"rules from {self.acl.origin}" if self.acl.in_force else "no rules (everyone)"
        if self.mode == "rules":
            return rules
        files = "the file system" + (" with a group map" if self.group_map is not None else "")
        return files if self.mode == "filesystem" else f"{rules} and {files} (both must allow)"

    def groups_for(self, source: str, path: Path) -> list[str]:
        """Who may read the document; PermissionsUnreadable when the file system's answer
        cannot be had (the caller keeps the document's previous groups)."""
        rules = self.acl.groups_for(source) if self.uses_rules else [EVERYONE]
        if self.mode == "rules":
            return rules
        files = self._from_files(path)
        return files if self.mode == "filesystem" else intersect(rules, files)

    def _from_files(self, path: Path) -> list[str]:
        try:
            found = readers(read_entries(path), self._folders.chain(path))
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PermissionsUnreadable(
                f"its permissions cannot be read ({detail}); it keeps the groups it had"
            ) from exc
        groups: set[str] = set()
        for who in found:
            name = principal_name(who)
            if name == EVERYONE or self.group_map is None:
                groups.add(name)
            elif name in self.group_map:
                groups.update(self.group_map[name])
            else:
                raise PermissionsUnreadable(
                    f"its reader {name!r} is not in the group map (TAIMATSU_GROUP_MAP); "
                    "map it to a group, or to [] for no access; it keeps the groups it had"
                )
        return sorted(groups)


def rules_for_folder(settings: Settings, root: Path) -> Acl:
    try:
        return Acl.for_folder(root, settings.acl_file)
    except AclError as exc:
        raise IngestError(str(exc)) from exc


def refuse_lost_rules(
    permissions: Permissions,
    remembered: dict[str, object],
    indexed: dict[str, DocInfo],
    allow_open: bool,
) -> None:
    """Stop the run when rules were in force for this folder and are gone now: the run
    would make its documents readable by everyone. `indexed` is every document of the
    folder (all shards); `remembered` what the last finished run recorded."""
    if not permissions.uses_rules or permissions.acl.in_force or allow_open:
        return
    closed = sum(1 for info in indexed.values() if EVERYONE not in info.groups)
    before = remembered.get("rules")
    if not closed and not before:
        return
    why = (
        f"the rules file {before} was in force for this folder"
        if before
        else f"{closed} documents of this folder are closed to some groups"
    )
    raise IngestRefused(
        f"{why} and no rules file is in force now (missing or empty): this run would lift "
        f"those restrictions on the documents of {permissions.root}, so it changed nothing; "
        'restore the rules file, or write default = ["everyone"] in it, or run '
        "`taimatsu ingest --allow-open` to open them"
    )
