"""Who may read a file, from the file system: its POSIX mode, owning group and POSIX ACL,
and those of every folder from the ingested root down to it (a reader must be able to
traverse each folder, `x`, and read the file, `r`).

The ACL is read from the kernel's `system.posix_acl_access` extended attribute (its
binary form is the kernel's ABI, linux/posix_acl_xattr.h: a version, then 8-byte entries
of tag, permissions and id) with the standard library: no compiled dependency, no
`getfacl` process per file (pylibacl needs libacl's headers and a compiler to install). A
file system without ACLs (ENOTSUP, or no attribute) has the three entries of its mode.
A default ACL needs no reading: the kernel copies it into each new file's access ACL.

Readers, checked one principal at a time, fail-closed:
- `everyone`: "other" allows it on the file and every folder, and no group entry or
  named-user entry denies it (a member of a denied group is refused although "other"
  allows: POSIX checks group entries before "other").
- a group: its entries (owning group, named group), each limited by the mask; a group no
  entry names counts as `everyone`.
- a named user: its entry limited by the mask, as `user:<name>`; the file's owner is not
  a reader (files are often owned by the account that copied them).
Names are the system's (`getent group`); an id it does not know is its number.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ACL_XATTR = "system.posix_acl_access"
ACL_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
READ, TRAVERSE = 4, 1
EVERYONE = ("everyone", -1)
Principal = tuple[str, int]  # ("group", gid), ("user", uid) or EVERYONE

_NO_ACL = {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class Entries:
    """One file's or folder's access entries, in the ACL model (mode bits are an ACL of
    user, group and other with no mask)."""

    other: int
    owning_group: int
    group_obj: int
    mask: int = 7
    groups: tuple[tuple[int, int], ...] = ()  # (gid, permissions) of named-group entries
    users: tuple[tuple[int, int], ...] = ()  # (uid, permissions) of named-user entries

    def principals(self) -> set[Principal]:
        found = {("group", self.owning_group)}
        found.update(("group", gid) for gid, _ in self.groups)
        found.update(("user", uid) for uid, _ in self.users)
        return found

    def _open_to_all(self, bit: int) -> bool:
        if not self.other & bit:
            return False
        named = [p for _, p in self.groups] + [p for _, p in self.users]
        return all(p & self.mask & bit for p in [self.group_obj, *named])

    def allows(self, who: Principal, bit: int) -> bool:
        if who == EVERYONE:
            return self._open_to_all(bit)
        kind, ident = who
        if kind == "group":
            perms = [p for gid, p in self.groups if gid == ident]
            if ident == self.owning_group:
                perms.append(self.group_obj)
        else:
            perms = [p for uid, p in self.users if uid == ident]
        if perms:
            return any(p & self.mask & bit for p in perms)
        return self._open_to_all(bit)


def parse_acl(raw: bytes, mode: int, gid: int) -> Entries:
    """The entries of a `system.posix_acl_access` value; ValueError if it is not one."""
    if len(raw) < 4 or (len(raw) - 4) % 8:
        raise ValueError(f"an ACL attribute of {len(raw)} bytes")
    (version,) = struct.unpack_from("<I", raw)
    if version != ACL_VERSION:
        raise ValueError(f"ACL attribute version {version}")
    other, group_obj, mask = mode & 7, (mode >> 3) & 7, 7
    groups, users = [], []
    for tag, perm, ident in struct.iter_unpack("<HHI", raw[4:]):
        perm &= 7
        if tag == OTHER:
            other = perm
        elif tag == GROUP_OBJ:
            group_obj = perm
        elif tag == MASK:
            mask = perm
        elif tag == GROUP:
            groups.append((ident, perm))
        elif tag == USER:
            users.append((ident, perm))
        elif tag != USER_OBJ:
            raise ValueError(f"an ACL entry of unknown tag {tag:#x}")
    return Entries(other, gid, group_obj, mask, tuple(groups), tuple(users))


def read_entries(path: Path) -> Entries:
    """The access entries of a file or folder (following symlinks); OSError or
    ValueError when they cannot be read."""
    st = os.stat(path)
    try:
        raw = os.getxattr(path, ACL_XATTR)
    except OSError as exc:
        if exc.errno not in _NO_ACL:
            raise
        raw = None
    if raw is None:
        mode = st.st_mode
        return Entries(mode & 7, st.st_gid, (mode >> 3) & 7)
    return parse_acl(raw, st.st_mode, st.st_gid)


def readers(entries: Entries, folders: list[Entries]) -> set[Principal]:
    """The principals that can traverse every folder and read the file: {EVERYONE} alone
    when everybody can."""
    candidates = {EVERYONE, *entries.principals()}
    for folder in folders:
        candidates |= folder.principals()
    able = {
        who
        for who in candidates
        if entries.allows(who, READ) and all(f.allows(who, TRAVERSE) for f in folders)
    }
    return {EVERYONE} if EVERYONE in able else able


@lru_cache(maxsize=4096)
def principal_name(who: Principal) -> str:
    """A principal as the file system names it: `everyone`, a group's name, `user:<name>`;
    an id the system does not know as its number."""
    if who == EVERYONE:
        return "everyone"
    kind, ident = who
    try:
        if kind == "group":
            return grp.getgrgid(ident).gr_name
        return f"user:{pwd.getpwuid(ident).pw_name}"
    except KeyError:
        return str(ident) if kind == "group" else f"user:{ident}"


class FolderEntries:
    """The entries of the folders from `root` down to a file, each folder read once per
    run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, Entries] = {}

    def chain(self, path: Path) -> list[Entries]:
        relative = path.parent.relative_to(self.root)
        folders, here = [self.root], self.root
        for part in relative.parts:
            here = here / part
            folders.append(here)
        out = []
        for folder in folders:
            if folder not in self._cache:
                self._cache[folder] = read_entries(folder)
            out.append(self._cache[folder])
        return out
