"""What an executor tells a runner about its volumes, and how.

The controller gives an executor one ``LaunchVolume`` per volume of the runner's pool:
its ``Mount`` (``remotecell.contract.volumes``: mount path, name, id), and the store's
directory when the volume lives in a directory on this machine. Every executor then provides a directory at the mount path:

* a volume in a directory store: that directory itself (a bind mount), shared live
  with every other runner and with the control plane;
* any other store: a fresh, empty directory of the runner's own (created by the
  executor, removed when the runner ends), which the runner fills from the store and
  commits back (``remotecell.backend.volumes.sync``).

The docker executor does the mounting itself (container bind mounts); the local
executor leaves it to the runner, which mounts in a private namespace of its own
(``namespace``). The runner learns its mounts as ``RunnerMount``s (in its launch
contract, ``remotecell.backend.runner.launch``), where ``source`` is the directory the
runner must bind-mount at ``path`` itself ("" when the executor already did) and ``sync``
says it is a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from remotecell.contract.volumes import Mount


@dataclass(frozen=True)
class LaunchVolume:
    mount: Mount
    #: The store's directory for this volume; "" when the store is not a directory here.
    shared_dir: str = ""


@dataclass(frozen=True)
class RunnerMount:
    mount: Mount
    source: str = ""  # a directory the runner bind-mounts at the mount path; "": mounted already
    sync: bool = False  # a copy: pulled from the store and committed back
