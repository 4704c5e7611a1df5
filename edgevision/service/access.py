"""What the service user can reach: file permissions computed from stat modes, and the paths the unit's
sandbox hides.

Pure functions over stat results and passwd/group files, so an installed tree (``service install --root``)
is checked exactly as the live system: every ancestor of a path must be searchable (``x``) by the service
user, the path itself readable / writable / executable as the unit needs it. POSIX ACLs are not considered.
"""

from __future__ import annotations

import grp
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Directories the unit's sandbox makes unreachable (ProtectHome=yes, PrivateTmp=yes): a venv or an editable
# checkout there gives status=203/EXEC or an ImportError at start.
HIDDEN_BY_SANDBOX = {
    "/home": "ProtectHome=yes",
    "/root": "ProtectHome=yes",
    "/run/user": "ProtectHome=yes",
    "/tmp": "PrivateTmp=yes",
    "/var/tmp": "PrivateTmp=yes",
}

_BITS = {
    "r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH),
    "w": (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH),
    "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH),
}


@dataclass(frozen=True)
class Principal:
    """A user as the kernel checks it: uid and every gid (primary and supplementary)."""

    name: str
    uid: int
    gids: frozenset[int]


def allowed(mode: int, owner: int, group: int, who: Principal, want: str) -> bool:
    """True when ``who`` has every permission in ``want`` (a subset of "rwx") on a file with these stat
    fields. The owner class alone applies to the owner, the group class to group members (POSIX semantics:
    an owner without ``r`` cannot read even if the group may)."""
    if who.uid == 0:
        return "x" not in want or bool(mode & 0o111) or stat.S_ISDIR(mode)
    cls = 0 if who.uid == owner else 1 if group in who.gids else 2
    return all(mode & _BITS[p][cls] for p in want)


def check_path(root: Path, path: str, who: Principal, want: str) -> str | None:
    """None when ``who`` can reach ``path`` (absolute, inside ``root``) with ``want``; else the reason."""
    parts = PurePosixPath(path).parts[1:]
    current = root
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = current.stat()
        except FileNotFoundError:
            return f"{path}: {PurePosixPath('/', *parts[: i + 1])} does not exist"
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        last = i == len(parts) - 1
        need = want if last else "x"
        if not allowed(st.st_mode, st.st_uid, st.st_gid, who, need):
            where = PurePosixPath("/", *parts[: i + 1])
            return (
                f"{path}: user {who.name} lacks {need} on {where} "
                f"({stat.filemode(st.st_mode)} {_name(root, st.st_uid, 'passwd')}:{_name(root, st.st_gid, 'group')})"
            )
    return None


def hidden_by_sandbox(path: str | Path) -> str | None:
    """The unit setting that hides ``path`` from the service (e.g. ``ProtectHome=yes``), or None."""
    p = PurePosixPath(str(path))
    for prefix, setting in HIDDEN_BY_SANDBOX.items():
        if p == PurePosixPath(prefix) or PurePosixPath(prefix) in p.parents:
            return f"{prefix} is hidden by {setting}"
    return None


def _entries(root: Path, db: str) -> list[list[str]]:
    """Rows of ``root/etc/passwd`` or ``root/etc/group`` (the live databases through NSS when root is /)."""
    if root == Path("/"):
        if db == "passwd":
            return [[p.pw_name, "x", str(p.pw_uid), str(p.pw_gid)] for p in pwd.getpwall()]
        return [[g.gr_name, "x", str(g.gr_gid), ",".join(g.gr_mem)] for g in grp.getgrall()]
    path = root / "etc" / db
    try:
        text = path.read_text()
    except OSError:
        return []
    return [
        line.split(":") for line in text.splitlines() if line and not line.startswith("#") and ":" in line
    ]


def _name(root: Path, ident: int, db: str) -> str:
    if ident == 0:
        return "root"
    for row in _entries(root, db):
        if len(row) > 2 and row[2] == str(ident):
            return row[0]
    return str(ident)


def group_id(root: Path, name: str) -> int | None:
    """The gid of group ``name`` on the target system (``root/etc/group``), or None when it does not exist."""
    for row in _entries(root, "group"):
        if row[0] == name and len(row) > 2:
            return int(row[2])
    return None


def user_ids(root: Path, name: str) -> tuple[int, int] | None:
    """(uid, primary gid) of ``name`` on the target system, or None."""
    for row in _entries(root, "passwd"):
        if row[0] == name and len(row) > 3:
            return int(row[2]), int(row[3])
    return None


def principal(root: Path, name: str, extra_groups: Iterable[str] = ()) -> Principal | None:
    """The service user as the unit runs it: its primary group, the groups listing it as a member and the
    unit's ``SupplementaryGroups=``."""
    ids = user_ids(root, name)
    if ids is None:
        return None
    gids = {ids[1]}
    for row in _entries(root, "group"):
        if len(row) > 3 and name in row[3].split(","):
            gids.add(int(row[2]))
    for g in extra_groups:
        gid = group_id(root, g)
        if gid is not None:
            gids.add(gid)
    return Principal(name, ids[0], frozenset(gids))


def shebang_interpreter(script: Path) -> str | None:
    """The interpreter named by a console script's ``#!`` line (pip writes the venv's python there)."""
    try:
        with script.open("rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else None
