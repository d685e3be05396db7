"""The secret RPCs of the control plane: values go in, never out (see ``store``).

Each user's secrets are their own (``state/owned.py``): a caller lists their own and
those shared with them, and creates, deletes and shares only their own. The store
checks names and variables (``contract.secrets``); what it refuses is
INVALID_ARGUMENT, with its sentence.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from remotecell._proto import pb
from remotecell.backend import auth
from remotecell.backend.secrets.store import (
    SecretRecord,
    SecretStore,
    SecretStoreError,
    missing_message,
)
from remotecell.backend.state import owned
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import check_name


class SecretServicer:
    """CreateSecret, ListSecrets, DeleteSecret, ShareSecret over the secret store (None:
    it keeps none). ``user_exists`` says whether a user name is one of this control
    plane's users (whom a secret may be shared with)."""

    def __init__(
        self, store: SecretStore | None, user_exists: Callable[[str], bool] = lambda name: False
    ) -> None:
        self.store = store
        self._user_exists = user_exists

    def _store(self) -> SecretStore:
        if self.store is None:
            raise SecretStoreError("this control plane keeps no secrets")
        return self.store

    async def CreateSecret(
        self, request: pb.SecretCreateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretCreateReply:
        try:
            record, replaced = self._store().create(
                request.name, dict(request.env), request.overwrite, auth.caller().user
            )
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretCreateReply(secret=_secret_info(record), replaced=replaced)

    async def ListSecrets(
        self, request: pb.SecretListRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretListReply:
        try:
            records = self._store().records(auth.caller().user)
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretListReply(secrets=[_secret_info(r) for r in records])

    async def DeleteSecret(
        self, request: pb.SecretDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretDeleteReply:
        try:
            if not self._store().delete(check_name(request.name), auth.caller().user):
                raise SecretStoreError(missing_message(request.name))
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretDeleteReply()

    async def ShareSecret(
        self, request: pb.ShareRequest, context: grpc.aio.ServicerContext
    ) -> pb.ShareReply:
        owner = auth.caller().user
        try:
            store = self._store()
            name = check_name(request.name)
            if store.record(name, owner) is None:
                raise SecretStoreError(missing_message(name))
            users = store.shares.change(
                owned.SECRET, owner, name, request.user, request.revoke, self._user_exists
            )
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.ShareReply(users=users)


def _secret_info(record: SecretRecord) -> pb.SecretInfo:
    return pb.SecretInfo(
        name=record.name,
        keys=record.keys,
        created=record.created,
        updated=record.updated,
        owner=record.owner,
    )
