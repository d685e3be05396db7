"""Volumes: named file trees that cells mount at a path, kept in an fsspec store.

* ``store``: the control plane's side: which volumes exist (SQLite,
  ``state/volumes.py``), their files in the store (a directory under the data directory
  by default, any fsspec URL with ``--volume-store``), path checks, atomic writes.
* ``service``: the volume RPCs (create, list, delete; list, read, write, remove files).
* ``mounts``: what an executor tells a runner to mount, and how.
* ``namespace``: local runners' private mount namespaces and bind mounts.
* ``sync``: a runner's copy of a volume in a store it cannot mount (pull and commit).

Mounting, by executor and store:

===============  ==========================================  ==========================
                 directory store (the default)               other store (s3, memory)
===============  ==========================================  ==========================
docker           container bind mount of the directory       bind mount of an empty
                                                             host directory, synced
local            bind mount in the runner's own mount        the same, in the runner's
                 namespace (root; or a user namespace)       own mount namespace
===============  ==========================================  ==========================

A directory store is shared live: a write in one runner is seen at once by the others
and by the notebook (POSIX semantics; ``commit``/``reload`` have nothing to do). A
synced copy is pulled before each cell and committed when it ends (``sync``): per file,
the last commit wins, and a runner that dies mid-write leaves the last committed version.
"""
