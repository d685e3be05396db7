"""The notebook's working directory for a remote cell: its path, or a snapshot of it.

Relative paths in a remote cell (``open("data.csv")``, ``Image(filename="x.png")``)
resolve as they do in the notebook. Where the runner sees the kernel's files (the local
executor, and this kernel shares the control plane's filesystem), the job names the
kernel's cwd and the runner works in it. Elsewhere (containers, other nodes) the job
carries a snapshot of the cwd's small files as content-addressed blobs: unchanged files
are neither hashed again (a stat cache) nor sent again (the control plane has them).
``remotecell.contract.workdir`` has the rules, the limits and why the kernel decides.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remotecell._proto import pb
from remotecell.contract import workdir as rules
from remotecell.contract.blobs import ID_FILE
from remotecell.contract.values import content_hash

if TYPE_CHECKING:
    import pathspec

#: How many entries a walk looks at before it gives up (a home directory, say).
MAX_ENTRIES = 20 * rules.MAX_FILES


@dataclass
class Snapshot:
    files: list[pb.WorkdirFile] = field(default_factory=list)
    #: Contents read while hashing (files that changed since the last snapshot).
    fresh: dict[str, bytes] = field(default_factory=dict)
    #: Where each blob's content can be read again.
    sources: dict[str, Path] = field(default_factory=dict)
    #: Files over the per-file limit, left out.
    too_large: list[str] = field(default_factory=list)
    #: Why there is no snapshot ("" when there is one).
    problem: str = ""


class Snapshots:
    """Takes snapshots of directories, remembering the hashes of files that did not change
    (by size, mtime and inode) so a cell in an unchanged directory reads no file."""

    def __init__(
        self,
        max_file: int = rules.MAX_FILE_BYTES,
        max_total: int = rules.MAX_TOTAL_BYTES,
        max_files: int = rules.MAX_FILES,
    ) -> None:
        self.max_file = max_file
        self.max_total = max_total
        self.max_files = max_files
        self._hashes: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._shares: tuple[int, bool] | None = None  # (id(client), runners see our files)

    def take(self, root: Path) -> Snapshot:
        """A snapshot of ``root``'s small files, less what the ignore rules leave out."""
        snap = Snapshot()
        ignore = _ignore_spec(root)
        total = 0
        entries = 0
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            rel_dir = here.relative_to(root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            entries += len(dirnames) + len(filenames)
            if entries > MAX_ENTRIES:
                snap.problem = f"it holds more than {MAX_ENTRIES} files and directories"
                return snap
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not ignore.match_file(prefix + d + "/")
                and not (here / d / "pyvenv.cfg").exists()
                and not (here / d).is_symlink()
            )
            for name in sorted(filenames):
                rel = prefix + name
                if ignore.match_file(rel):
                    continue
                path = here / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # a dangling link, or gone since the listing
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_size > self.max_file:
                    snap.too_large.append(rel)
                    continue
                total += st.st_size
                if total > self.max_total:
                    snap.problem = (
                        f"its small files add up to more than {rules.size_text(self.max_total)}"
                    )
                    return snap
                if len(snap.files) >= self.max_files:
                    snap.problem = f"it holds more than {self.max_files} files"
                    return snap
                digest = self._hash(path, st, snap)
                if digest is None:
                    continue
                snap.sources.setdefault(digest, path)
                snap.files.append(
                    pb.WorkdirFile(
                        path=rel,
                        blob=digest,
                        size=st.st_size,
                        executable=bool(st.st_mode & stat.S_IXUSR),
                    )
                )
        return snap

    def _hash(self, path: Path, st: os.stat_result, snap: Snapshot) -> str | None:
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        known = self._hashes.get(str(path))
        if known is not None and known[0] == key:
            return known[1]
        try:
            data = path.read_bytes()
        except OSError:
            return None  # unreadable: left out, as git would fail to add it
        digest = content_hash(data)
        self._hashes[str(path)] = (key, digest)
        snap.fresh[digest] = data
        return digest

    def runners_share_files(self, client: Any) -> bool:
        """Whether the control plane's runners see this kernel's files at the same paths:
        it says its runners share its filesystem, and this kernel reads its blob
        directory's id back."""
        if self._shares is None or self._shares[0] != id(client):
            health = client.health()
            self._shares = (id(client), health.runners_share_filesystem and _reads_id(health))
        return self._shares[1]


def offer(spec: pb.JobSpec, client: Any, snapshots: Snapshots, snapshot_on: bool = True) -> str:
    """Names the notebook's working directory in ``spec`` (uploading a snapshot's blobs
    through ``client`` where the runner needs one); returns a line for the cell's output
    when the runner will not see the notebook's files ("" otherwise)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""  # the notebook's directory was removed: nothing to offer
    if any(step.kind == pb.ImageStep.WORKDIR for step in spec.image_spec.steps):
        return ""  # the image names the directory its cells run in
    if snapshots.runners_share_files(client):
        spec.workdir.path = cwd
        return ""
    if not snapshot_on:
        return (
            "remotecell: the notebook's directory is not copied to the runner "
            "(RemoteMagics.cwd_snapshot is off): relative paths resolve in the runner's own "
            "directory\n"
        )
    snap = snapshots.take(Path(cwd))
    if snap.problem:
        return (
            f"remotecell: the notebook's directory {cwd} is not copied to the runner: "
            f"{snap.problem}; relative paths resolve in the runner's own directory "
            f"(list what to leave out in {rules.IGNORE_FILE})\n"
        )
    _upload(client, snap)
    spec.workdir.path = cwd
    spec.workdir.snapshot = True
    spec.workdir.files.extend(snap.files)
    if not snap.too_large:
        return ""
    shown = ", ".join(snap.too_large[:5]) + (", ..." if len(snap.too_large) > 5 else "")
    return (
        f"remotecell: {len(snap.too_large)} file(s) over {rules.size_text(snapshots.max_file)} are not "
        f"copied to the runner with the notebook's directory: {shown}\n"
    )


def _upload(client: Any, snap: Snapshot) -> None:
    digests = sorted({f.blob for f in snap.files})
    if not digests:
        return
    missing = client.missing_blobs(digests)
    blobs: dict[str, bytes] = {}
    for digest in missing:
        data = snap.fresh.get(digest)
        if data is None:
            data = snap.sources[digest].read_bytes()
            if content_hash(data) != digest:
                # Changed since it was hashed: send what the manifest says it holds.
                raise OSError(
                    f"{snap.sources[digest]} changed while the cell was being sent; "
                    "run the cell again"
                )
        blobs[digest] = data
    client.upload(blobs)


def _ignore_spec(root: Path) -> pathspec.PathSpec:
    import pathspec  # only for a snapshot (runners on another filesystem)

    lines = list(rules.DEFAULT_IGNORES)
    try:
        lines += (root / rules.IGNORE_FILE).read_text(errors="replace").splitlines()
    except OSError:
        pass
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _reads_id(health: pb.HealthReply) -> bool:
    if not health.blob_dir or not health.blob_dir_id:
        return False
    try:
        return (Path(health.blob_dir) / ID_FILE).read_text().strip() == health.blob_dir_id
    except OSError:
        return False
