"""The control plane's gRPC surface against a real `remotecell serve` process."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from remotecell._proto import pb, pb_grpc
from remotecell.client import (
    AsyncClient,
    AuthError,
    Client,
    ConfigError,
    Endpoint,
    JobNotFoundError,
)
from remotecell.client.volume import Volume
from remotecell.contract.resources import parse_gpu
from remotecell.contract.values import content_hash
from remotecell.contract.volumes import Mount
from remotecell.kernel_magics import _options as options


def run(coro):
    return asyncio.run(coro)


def test_every_kind_of_rpc_refuses_a_wrong_or_missing_token(control_plane):
    target = control_plane.endpoint.target

    async def calls(metadata):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.ControlPlaneStub(channel)
            codes = []
            attempts = [
                lambda: stub.Health(pb.HealthRequest(), metadata=metadata),
                lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=metadata),
            ]
            for attempt in attempts:
                try:
                    await attempt()
                except grpc.aio.AioRpcError as err:
                    codes.append(err.code())
            try:  # server streaming
                async for _ in stub.Submit(
                    pb.SubmitRequest(spec=pb.JobSpec(code="1")), metadata=metadata
                ):
                    pass
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())

            async def chunks():
                yield pb.BlobChunk(hash="00" * 16, data=b"")

            try:  # client streaming
                await stub.PutBlob(chunks(), metadata=metadata)
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())

            async def hello():
                yield pb.RunnerMessage(hello=pb.RunnerHello(runner_id="r-intruder"))

            try:  # bidirectional: a runner without the token gets no tasks
                async for _ in stub.RunnerSession(hello(), metadata=metadata):
                    pass
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
            return codes

    for metadata in [
        (),
        (("authorization", "Bearer wrong"),),
        (("authorization", "token-without-bearer"),),
    ]:
        assert run(calls(metadata)) == [grpc.StatusCode.UNAUTHENTICATED] * 5
    # nothing was submitted, and no runner joined, through the refused calls
    client = control_plane.client()
    try:
        assert client.list_jobs() == []
        assert client.health().runners == 0
    finally:
        client.close()


def test_a_wrong_token_is_one_clear_sentence(control_plane):
    client = Client(Endpoint(control_plane.endpoint.url, "not-the-token"))
    try:
        with pytest.raises(AuthError, match=r"refused the token.*REMOTECELL_TOKEN"):
            client.health()
    finally:
        client.close()


def test_health_says_where_blobs_live(client, control_plane):
    health = client.health()
    assert health.blob_dir == str(control_plane.data_dir / "blobs")
    assert len(health.blob_dir_id) == 32


def test_blobs_over_grpc_are_content_addressed_and_verified(control_plane):
    data = bytes(range(256)) * 40_000  # 10 MB: several chunks
    digest = content_hash(data)

    async def scenario():
        c = AsyncClient(control_plane.endpoint)
        try:
            assert await c.missing_blobs([digest]) == [digest]
            await c.put_blob(digest, data)
            assert await c.missing_blobs([digest]) == []
            assert bytes(await c.get_blob(digest)) == data
            with pytest.raises(ConfigError, match="does not match its hash"):
                await c.put_blob("ab" * 16, b"other content")
            with pytest.raises(ConfigError, match="not a blob hash"):
                await c.missing_blobs(["../../etc/passwd"])
        finally:
            await c.close()

    run(scenario())


def test_submit_refuses_a_job_whose_blobs_were_never_uploaded(client):
    spec = pb.JobSpec(
        code="x", closure=[pb.Value(kind=pb.Value.NAMESPACE, names=["x"], buffers=["cd" * 16])]
    )
    with pytest.raises(ConfigError, match="never uploaded"):
        next(client.submit(spec))


def test_submit_refuses_a_gpu_request_that_is_not_valid(client):
    spec = pb.JobSpec(code="1", resources=pb.Resources(gpu=[pb.GPUChoice(type="H1000", count=1)]))
    with pytest.raises(ConfigError, match='unknown GPU type "H1000"'):
        next(client.submit(spec))
    spec = pb.JobSpec(code="1", resources=pb.Resources(gpu=[pb.GPUChoice(type="H100", count=0)]))
    with pytest.raises(ConfigError, match="asks for 0 GPUs"):
        next(client.submit(spec))
    # Fallbacks too, with the kernel's sentence.
    any_first = [pb.GPUChoice(type="any", count=1), pb.GPUChoice(type="T4", count=1)]
    with pytest.raises(ConfigError) as in_control_plane:
        next(client.submit(pb.JobSpec(code="1", resources=pb.Resources(gpu=any_first))))
    with pytest.raises(ConfigError) as in_kernel:
        parse_gpu(["any", "T4"])
    assert str(in_control_plane.value) == str(in_kernel.value)


@pytest.mark.parametrize(
    "mounts",
    [
        [("/models", "a"), ("/models/llama", "b")],
        [("/models", "a"), ("/data", "a")],
        [("models", "a")],
        [("/usr/share/models", "a")],
    ],
    ids=["nested", "one volume twice", "relative", "a system directory"],
)
def test_submit_refuses_bad_mounts_with_the_sentence_the_kernel_gives(client, mounts):
    source = "{" + ", ".join(f"{path!r}: {name}" for path, name in mounts) + "}"
    with pytest.raises(ConfigError) as in_kernel:
        options.parse(f"volumes={source}", {"a": Volume("a"), "b": Volume("b")})
    spec = pb.JobSpec(code="1", volumes=[Mount(path, name).to_proto() for path, name in mounts])
    with pytest.raises(ConfigError) as in_control_plane:
        next(client.submit(spec))
    prefix = f"bad value for %%remote option volumes={source}: "
    assert str(in_kernel.value) == prefix + str(in_control_plane.value)


def test_unknown_jobs_are_not_found(client):
    with pytest.raises(JobNotFoundError, match="no job 'job-nope'"):
        client.get_job("job-nope")
    with pytest.raises(JobNotFoundError):
        next(client.attach("job-nope"))
    with pytest.raises(JobNotFoundError):
        client.cancel("job-nope")


def test_a_job_streams_numbered_events_and_can_be_replayed(client):
    everything = list(client.submit(pb.JobSpec(code="print('a')\nprint('b')\n6 * 7", pull=[])))
    # Telemetry samples are unnumbered (tests/backend/test_metrics.py); the rest is numbered.
    events = [e for e in everything if not e.HasField("metrics")]
    assert [e.seq for e in events] == list(range(len(events)))
    kinds = [e.WhichOneof("body") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "finished"
    assert "".join(e.stream.text for e in events if e.HasField("stream")) == "a\nb\n"
    assert events[-1].finished.state == pb.SUCCEEDED
    job_id = events[0].job_id
    assert [e for e in client.attach(job_id) if not e.HasField("metrics")] == events
    assert list(client.attach(job_id, from_seq=2)) == events[2:]
    info = client.get_job(job_id)
    assert (
        info.state == pb.SUCCEEDED and info.events == len(events) and info.summary == "print('a')"
    )
    assert job_id in [j.job_id for j in client.list_jobs()]


def test_a_control_plane_can_also_listen_on_loopback_tcp(make_control_plane):
    import json

    cp = make_control_plane("--listen", "127.0.0.1:0")
    urls = json.loads((cp.data_dir / "server.json").read_text())["urls"]
    assert urls[0] == cp.socket and urls[1].startswith("127.0.0.1:")
    client = Client(Endpoint(urls[1], cp.endpoint.token))
    try:
        events = list(client.submit(pb.JobSpec(code="'over tcp'")))
        assert events[-1].finished.state == pb.SUCCEEDED
    finally:
        client.close()
