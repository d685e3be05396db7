"""The runner: the process that executes cells inside an image.

``python -m remotecell.backend.runner --runner-id ID --url ADDRESS`` (the token in
``REMOTECELL_RUNNER_TOKEN``) connects back to the control plane, takes tasks one at a
time, runs each cell in an IPython shell and streams its events back. Every executor
starts this same process; only where it runs differs. Its command line and environment
are its launch contract, ``launch``: executors build them with ``launch.build``, the
runner reads them with ``launch.parse``, and the runner imports nothing of the executors.
"""
