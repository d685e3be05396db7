"""Secrets on the control plane: stored encrypted, resolved for a job's task, masked.

Where a secret's values are at each moment:

* a stored secret (``remotecell secret create``): in the state database's ``secrets``
  table, encrypted with Fernet under a key in ``secrets.key`` (0600) beside it
  (``store``); in clear only in memory, while a request or a task is being made;
* an ad-hoc secret (``Secret.from_dict``/``from_dotenv``): in the Submit request, then
  in the controller's memory for the job's life; the stored spec keeps only its label
  (``refs``), so a job recovered after a restart that needed one fails, saying to rerun;
* on the runner: in the Task (``secret_env``), in ``os.environ`` while the task runs,
  and masked in every event the runner sends (``masking``; runner/_masking.py).
"""
