"""A job's secrets (``JobSpec.secrets``): checked at submit, resolved for each task.

At submit, before the job is stored or queued, every stored secret it names must
exist, decrypt and have its ``required_keys``; the ad-hoc ones are checked and their
values taken out of the spec (``take_adhoc``), so the stored spec holds only their
labels. When a task is handed to a runner, ``environment`` merges the variables in
the order the job lists its secrets (a later one wins a key an earlier one also sets),
reading stored secrets afresh (a retry gets a secret updated meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping

from remotecell._proto import pb
from remotecell.backend.secrets.store import SecretStore, SecretStoreError, missing_message
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import check_env, check_name

#: Ad-hoc values by their index in ``JobSpec.secrets``.
AdHoc = dict[int, dict[str, str]]


class SecretsUnavailable(Exception):
    """A job's secrets cannot be given to its task; the message says why and what to do."""


def take_adhoc(spec: pb.JobSpec, store: SecretStore | None, user: str = "") -> AdHoc:
    """Checks the job's secrets, as ``user`` names them (theirs, or one shared with
    them), and takes the ad-hoc values out of ``spec`` (in place).

    Raises:
        ConfigError: a bad name or value, a stored secret that is missing or cannot be
            read, or one that lacks a required key; one sentence, naming no value.
    """
    adhoc: AdHoc = {}
    for index, ref in enumerate(spec.secrets):
        if ref.adhoc:
            adhoc[index] = check_env(dict(ref.env), f"the ad-hoc secret {ref.name or index}")
            ref.ClearField("env")
            continue
        check_name(ref.name)
        if ref.env:
            raise ConfigError(
                f"the stored secret {ref.name!r} came with values; values are stored "
                "with `remotecell secret create`, not sent with a job"
            )
        if store is None:
            raise ConfigError("this control plane keeps no secrets")
        owner = store.owner_for(user, ref.name) if user else ""
        record = store.record(ref.name, owner)
        if record is None:
            raise ConfigError(missing_message(ref.name))
        store.values(ref.name, owner)  # the key is there and fits: fail now, not on the runner
        lacking = [k for k in ref.required_keys if k not in record.keys]
        if lacking:
            raise ConfigError(
                f"secret {ref.name!r} has no key {lacking[0]} (it has "
                f"{', '.join(record.keys)}); add it with `remotecell secret create "
                f"{ref.name} ... --force`"
            )
    return adhoc


def needs_adhoc(spec: pb.JobSpec) -> bool:
    return any(ref.adhoc for ref in spec.secrets)


ADHOC_LOST = (
    "this job's ad-hoc secrets (Secret.from_dict or Secret.from_dotenv) are never "
    "stored, and the control plane restarted before the job could run with them; "
    "run the cell again"
)


def environment(
    spec: pb.JobSpec,
    adhoc: Mapping[int, dict[str, str]],
    store: SecretStore | None,
    user: str = "",
) -> dict[str, str]:
    """The variables a task of ``user``'s job gets, in the job's order (a secret shared
    with them is looked up again: one no longer shared is missing).

    Raises:
        SecretsUnavailable: a stored secret went away or cannot be read, or ad-hoc
            values were lost in a control plane restart.
    """
    env: dict[str, str] = {}
    for index, ref in enumerate(spec.secrets):
        if ref.adhoc:
            values = adhoc.get(index)
            if values is None:
                raise SecretsUnavailable(ADHOC_LOST)
        else:
            try:
                if store is None:
                    raise SecretStoreError("this control plane keeps no secrets")
                owner = store.owner_for(user, ref.name) if user else ""
                values = store.values(ref.name, owner)
            except ConfigError as err:  # missing, unreadable, or shared by several
                raise SecretsUnavailable(str(err)) from None
            lacking = [k for k in ref.required_keys if k not in values]
            if lacking:
                raise SecretsUnavailable(
                    f"secret {ref.name!r} no longer has the key {lacking[0]}; add it with "
                    f"`remotecell secret create {ref.name} ... --force` and run the cell again"
                )
        env.update(values)
    return env
