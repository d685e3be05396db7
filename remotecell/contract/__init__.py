"""The rules the notebook side and the back end share, one place each.

* ``errors``: the exception hierarchy a user sees, and how gRPC status maps to it.
* ``resources``: GPU types, ``gpu=`` requests and fallbacks, prices and cost.
* ``values``: how variables travel (pickle protocol 5, out-of-band buffers, dill for
  notebook code) and ``content_hash``, the hash blobs are stored under.
* ``blobs``: where a blob lives in a store, and the sentence for one that is gone.
* ``volumes``: volume names, paths inside a volume, mount paths, and the metadata key
  that tells a missing volume from a missing file.
* ``secrets``: secret names, keys and values, and the shortest value that is masked.
* ``users``: user names (``remotecell token create NAME``).
* ``images``: an image spec's id, and the deterministic tar local files travel as.
* ``jobs``: every field of a job's spec, job ids, seq numbers and counts, checked by the
  kernel where it can and again by the control plane before a job is recorded.
* ``events``: a job event's typed body, which event ends a job, which are telemetry samples.

This package imports the standard library, third-party libraries and ``remotecell._proto``
only: never ``remotecell.client`` or ``remotecell.backend``. Nothing is imported here, so
importing one rule does not load the others.
"""
