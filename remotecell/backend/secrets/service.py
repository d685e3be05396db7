"""The secret RPCs of the control plane: values go in, never out (see ``store``).

The store checks names and variables (``contract.secrets``); what it refuses is
INVALID_ARGUMENT, with its sentence.
"""

from __future__ import annotations

import grpc

from remotecell._proto import pb
from remotecell.backend.secrets.store import (
    SecretRecord,
    SecretStore,
    SecretStoreError,
    missing_message,
)
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import check_name


class SecretServicer:
    """CreateSecret, ListSecrets, DeleteSecret over the secret store (None: it keeps none)."""

    def __init__(self, store: SecretStore | None) -> None:
        self.store = store

    def _store(self) -> SecretStore:
        if self.store is None:
            raise SecretStoreError("this control plane keeps no secrets")
        return self.store

    async def CreateSecret(
        self, request: pb.SecretCreateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretCreateReply:
        try:
            record, replaced = self._store().create(
                request.name, dict(request.env), overwrite=request.overwrite
            )
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretCreateReply(secret=_secret_info(record), replaced=replaced)

    async def ListSecrets(
        self, request: pb.SecretListRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretListReply:
        try:
            records = self._store().records()
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretListReply(secrets=[_secret_info(r) for r in records])

    async def DeleteSecret(
        self, request: pb.SecretDeleteRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretDeleteReply:
        try:
            if not self._store().delete(check_name(request.name)):
                raise SecretStoreError(missing_message(request.name))
        except ConfigError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.SecretDeleteReply()


def _secret_info(record: SecretRecord) -> pb.SecretInfo:
    return pb.SecretInfo(
        name=record.name, keys=record.keys, created=record.created, updated=record.updated
    )
