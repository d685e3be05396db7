"""ControlPlaneService: the one ControlPlane servicer, made of one servicer per capability."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from remotecell.backend.blob_service import BlobServicer
from remotecell.backend.deployments.service import DeploymentServicer
from remotecell.backend.images.service import ImageServicer
from remotecell.backend.job_service import JobServicer
from remotecell.backend.secrets.service import SecretServicer
from remotecell.backend.service import RPCS, ControlPlaneService
from remotecell.backend.volumes.service import VolumeServicer

NOTHING: Any = None  # the parts only keep what they are given until an RPC arrives


def parts() -> list[object]:
    return [
        JobServicer(NOTHING, NOTHING),
        BlobServicer(NOTHING),
        ImageServicer(NOTHING),
        VolumeServicer(NOTHING, lambda name: []),
        SecretServicer(NOTHING),
        DeploymentServicer(NOTHING),
    ]


def test_each_rpc_is_the_method_of_the_part_that_serves_it():
    jobs, blobs, images, volumes, secrets, deployments = made = parts()
    service = ControlPlaneService(*made)
    # each RPC is the part's method inside the last-resort guard
    owner = {rpc: inspect.unwrap(getattr(service, rpc)).__self__ for rpc in RPCS}
    assert owner["Submit"] is jobs and owner["RunnerSession"] is jobs
    assert owner["PutBlob"] is blobs
    assert owner["PruneImages"] is images and owner["GetImageLog"] is images
    assert owner["VolumeWrite"] is volumes
    assert owner["DeleteSecret"] is secrets
    assert owner["Invoke"] is deployments and owner["Deploy"] is deployments
    assert {id(o) for o in owner.values()} == {id(p) for p in made}  # every part serves


def test_an_rpc_no_part_serves_is_refused_at_once():
    without_secrets = [p for p in parts() if not isinstance(p, SecretServicer)]
    with pytest.raises(TypeError, match="the CreateSecret RPC must be served by one servicer"):
        ControlPlaneService(*without_secrets)


def test_an_rpc_two_parts_serve_is_refused():
    with pytest.raises(TypeError, match=r"MissingBlobs RPC .* not by BlobServicer, BlobServicer"):
        ControlPlaneService(*parts(), BlobServicer(NOTHING))


def test_a_method_named_like_an_rpc_the_proto_lacks_is_refused():
    class Misspelt:
        async def ListImage(self, request: Any, context: Any) -> None: ...

    with pytest.raises(TypeError, match="Misspelt serves ListImage, which the ControlPlane"):
        ControlPlaneService(*parts(), Misspelt())
