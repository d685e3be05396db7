"""Secrets through a real `remotecell serve`: the RPCs, submit-time checks, what a runner
gets, and ad-hoc values across a control-plane restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time

import grpc
import pytest
from support import wait_until

from remotecell._proto import pb, pb_grpc
from remotecell.client import AsyncClient, ConfigError

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


def kind(event: pb.JobEvent) -> str:
    return event.WhichOneof("body")


def run_job(client, spec: pb.JobSpec, timeout: float = 60) -> list[pb.JobEvent]:
    stream = client.submit(spec)
    events: list[pb.JobEvent] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            event = stream.next(timeout=0.5)
            if event is not None:
                events.append(event)
                if kind(event) == "finished":
                    return events
    finally:
        stream.close()
    raise AssertionError(f"the job did not finish in {timeout} s: {events}")


def stdout_of(events: list[pb.JobEvent]) -> str:
    return "".join(e.stream.text for e in events if kind(e) == "stream")


def test_create_list_delete(client):
    reply = client.create_secret("hf", {"HF_TOKEN": VALUE, "HF_USER": "me-myself"})
    assert not reply.replaced and list(reply.secret.keys) == ["HF_TOKEN", "HF_USER"]
    with pytest.raises(ConfigError) as err:
        client.create_secret("hf", {"HF_TOKEN": "other"})
    assert "a secret named 'hf' exists already" in str(err.value)
    assert client.create_secret("hf", {"HF_TOKEN": VALUE}, overwrite=True).replaced
    listed = client.list_secrets()
    assert [(s.name, list(s.keys)) for s in listed] == [("hf", ["HF_TOKEN"])]
    assert listed[0].updated >= listed[0].created > 0
    assert VALUE.encode() not in pb.SecretListReply(secrets=listed).SerializeToString()
    client.delete_secret("hf")
    assert client.list_secrets() == []
    with pytest.raises(ConfigError) as err:
        client.delete_secret("hf")
    assert str(err.value).startswith("no secret named 'hf' on this control plane")
    with pytest.raises(ConfigError, match="is not a valid secret name"):
        client.create_secret("no such/name", {"A": VALUE})


def test_the_async_client_too(control_plane):
    async def go():
        client = AsyncClient(control_plane.endpoint)
        try:
            await client.create_secret("a", {"A_KEY": VALUE})
            names = [s.name for s in await client.list_secrets()]
            await client.delete_secret("a")
            return names, await client.list_secrets()
        finally:
            await client.close()

    assert asyncio.run(go()) == (["a"], [])


def test_secret_rpcs_refuse_a_wrong_token(control_plane, client):
    client.create_secret("hf", {"HF_TOKEN": VALUE})

    async def calls():
        async with grpc.aio.insecure_channel(control_plane.endpoint.target) as channel:
            stub = pb_grpc.ControlPlaneStub(channel)
            md = (("authorization", "Bearer wrong"),)
            codes = []
            for call, request in [
                (stub.ListSecrets, pb.SecretListRequest()),
                (stub.CreateSecret, pb.SecretCreateRequest(name="x", env={"A": "bbbb"})),
                (stub.DeleteSecret, pb.SecretDeleteRequest(name="hf")),
            ]:
                try:
                    await call(request, metadata=md)
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
            return codes

    assert asyncio.run(calls()) == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert [s.name for s in client.list_secrets()] == ["hf"]


def test_a_job_gets_its_secrets_as_variables_in_order_masked(client):
    client.create_secret("hf", {"HF_TOKEN": VALUE, "SHARED": "from-the-stored-one"})
    code = (
        "import os\n"
        "print(os.environ['HF_TOKEN'][:3], len(os.environ['HF_TOKEN']))\n"
        "print(os.environ['SHARED'] == 'from-the-adhoc-one', os.environ['PLAIN'])\n"
        "print(os.environ['HF_TOKEN'])\n"
    )
    spec = pb.JobSpec(
        code=code,
        env={"PLAIN": "plain-env", "SHARED": "from-env"},
        secrets=[
            pb.SecretRef(name="hf", required_keys=["HF_TOKEN"]),
            pb.SecretRef(name="d", adhoc=True, env={"SHARED": "from-the-adhoc-one"}),
        ],
    )
    events = run_job(client, spec)
    assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
    assert stdout_of(events) == f"hf_ {len(VALUE)}\nTrue plain-env\n********\n"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (pb.SecretRef(name="nope"), "no secret named 'nope' on this control plane; create it"),
        (pb.SecretRef(name="hf", required_keys=["HF_USER"]), "secret 'hf' has no key HF_USER"),
        (pb.SecretRef(name="bad name!"), "is not a valid secret name"),
    ],
)
def test_submit_refuses_bad_secrets_before_the_job_exists(client, ref, expected):
    client.create_secret("hf", {"HF_TOKEN": VALUE})
    before = len(client.list_jobs())
    with pytest.raises(ConfigError) as err:
        run_job(client, pb.JobSpec(code="print('ran')", secrets=[ref]))
    assert expected in str(err.value)
    assert len(client.list_jobs()) == before


def test_adhoc_values_are_not_kept_across_a_restart(make_control_plane):
    cp = make_control_plane("--max-runners", "1", "--reconnect-grace", "10")
    client = cp.client()
    try:
        # The first job holds the one runner until it is cancelled, so the second one is
        # still queued when the control plane is killed, however slow this machine is.
        first = client.submit(
            pb.JobSpec(code="import time\nprint('first', flush=True)\ntime.sleep(300)")
        )
        first_id = wait_until(lambda: (e := first.next(0.2)) is not None and e.job_id, 10)
        wait_until(lambda: (e := first.next(0.2)) is not None and kind(e) == "stream", 60)
        queued = client.submit(
            pb.JobSpec(
                code="print('needs the ad-hoc one')",
                secrets=[pb.SecretRef(name="from_dict", adhoc=True, env={"K": VALUE})],
            )
        )
        job_id = wait_until(lambda: (e := queued.next(0.2)) is not None and e.job_id, 10)
        first.close()
        queued.close()
        assert client.get_job(job_id).state == pb.QUEUED
        assert VALUE.encode() not in (cp.data_dir / "state.sqlite3-wal").read_bytes()

        cp.kill()
        cp.start()
        after = cp.client()
        try:
            events = run_attach(after, job_id)
            assert events[-1].finished.state == pb.FAILED
            error = next(e.error for e in events if kind(e) == "error")
            assert error.type_name == "SecretError"
            assert "are never stored" in error.message and "run the cell again" in error.message
            assert "needs the ad-hoc one" not in stdout_of(events)
        finally:
            after.cancel(first_id, "the test is over")
            after.close()
    finally:
        client.close()


def run_attach(client, job_id: str, timeout: float = 60) -> list[pb.JobEvent]:
    stream = client.attach(job_id)
    events: list[pb.JobEvent] = []
    try:
        wait_until(
            lambda: (
                (e := stream.next(0.2)) is not None and (events.append(e) or kind(e) == "finished")
            ),
            timeout,
        )
    finally:
        stream.close()
    return events


def test_a_volume_commits_note_masks_secret_values(make_control_plane):
    """A copied volume's commit note names the cell's files, and a file's name can hold a
    secret's value: the note is masked like the cell's own output."""
    cp = make_control_plane("--volume-store", f"memory://mask-{secrets.token_hex(4)}")
    client = cp.client()
    mount = f"/mnt/remotecell-test-{secrets.token_hex(4)}"
    try:
        client.create_volume("shared")
        client.create_secret("hf", {"HF_TOKEN": VALUE})
        code = f"import os\nos.symlink('/etc', '{mount}/link-' + os.environ['HF_TOKEN'])"
        spec = pb.JobSpec(
            code=code,
            secrets=[pb.SecretRef(name="hf")],
            volumes=[pb.VolumeMount(name="shared", path=mount)],
        )
        events = run_job(client, spec)
        assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
        note = stdout_of(events)
        assert "not committed to volume 'shared': link-********: a symlink" in note
        assert VALUE not in str(events)
    finally:
        client.close()
        with contextlib.suppress(OSError):
            os.rmdir(mount)
