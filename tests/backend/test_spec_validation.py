"""Every field of every request is checked by the control plane: bad input is refused
with INVALID_ARGUMENT (never UNKNOWN or INTERNAL), one sentence that names no server
path, and no job is recorded. Raw protobuf requests through the gRPC stub, against a
real `remotecell serve` process."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ControlPlane, short_tmpdir

from remotecell._proto import pb, pb_grpc

HASH = "0" * 32
LONG_HASH = "a" * 300


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    cp = ControlPlane(short_tmpdir(), ["--cancel-grace", "2"]).start()
    yield cp
    cp.stop()
    shutil.rmtree(cp.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stub(plane: ControlPlane) -> Iterator[Any]:
    assert plane.endpoint is not None
    with grpc.insecure_channel(plane.endpoint.target) as channel:
        yield pb_grpc.ControlPlaneStub(channel)


def metadata(plane: ControlPlane) -> tuple[tuple[str, str], ...]:
    assert plane.endpoint is not None
    return (("authorization", f"Bearer {plane.endpoint.token}"),)


def refusal(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)  # a stream's status comes with its end
    return caught.value


def assert_one_clean_sentence(err: grpc.RpcError, plane: ControlPlane) -> None:
    code, details = err.code(), err.details()  # type: ignore[attr-defined]
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details and "\n" not in details and len(details) < 600, details
    assert not re.search(r"[.!?]\s+[A-Z]", details), f"more than one sentence: {details}"
    assert str(plane.data_dir) not in details and "Traceback" not in details, details
    assert "Errno" not in details and "Error:" not in details, details


def spec(**fields: Any) -> pb.JobSpec:
    return pb.JobSpec(code="1", **fields)


def with_(fn: Callable[[pb.JobSpec], None]) -> pb.JobSpec:
    out = spec()
    fn(out)
    return out


BAD_SPECS = {
    "negative timeout": spec(timeout_s=-5),
    "nan timeout": spec(timeout_s=float("nan")),
    "infinite timeout": spec(timeout_s=float("inf")),
    "timeout past 30 days": spec(timeout_s=1e12),
    "retries past the bound": spec(retries=2**32 - 1),
    "memory_mb of 2**63": spec(resources=pb.Resources(memory_mb=2**63)),
    "nan cpu": spec(resources=pb.Resources(cpu=float("nan"))),
    "negative cpu": spec(resources=pb.Resources(cpu=-1)),
    "a million cores": spec(resources=pb.Resources(cpu=1e6)),
    "an empty env name": spec(env={"": "x"}),
    "'=' in an env name": spec(env={"A=B": "x"}),
    "NUL in an env name": spec(env={"A\0": "x"}),
    "NUL in an env value": spec(env={"A": "x\0y"}),
    "a bad session name": spec(session="no such/session!"),
    "a pull that is no name": spec(pull=["not a name"]),
    "an image id of 300 characters": spec(image="f" * 300),
    "an image spec id that is a path": with_(
        lambda s: s.image_spec.CopyFrom(pb.ImageSpec(id="../../etc"))
    ),
    "an unknown image base": with_(lambda s: s.image_spec.CopyFrom(pb.ImageSpec(base=99))),  # type: ignore[arg-type]
    "an image step blob of 300 characters": with_(
        lambda s: s.image_spec.CopyFrom(
            pb.ImageSpec(
                steps=[pb.ImageStep(kind=pb.ImageStep.LOCAL_FILE, blob=LONG_HASH, dest="/x")]
            )
        )
    ),
    "a closure buffer of 300 characters": spec(closure=[pb.Value(name="x", buffers=[LONG_HASH])]),
    "a closure pickle blob that is a path": spec(
        closure=[pb.Value(name="x", pickle_blob="../" + HASH)]
    ),
    "an unknown value kind": spec(closure=[pb.Value(name="x", kind=42)]),  # type: ignore[arg-type]
    "a workdir blob of 300 characters": spec(
        workdir=pb.Workdir(
            path="/w", snapshot=True, files=[pb.WorkdirFile(path="a.py", blob=LONG_HASH)]
        )
    ),
    "a secret's required key that is no variable name": spec(
        secrets=[pb.SecretRef(name="hf", required_keys=["1 BAD"])]
    ),
    "a GPU type of 100k characters": spec(
        resources=pb.Resources(gpu=[pb.GPUChoice(type="H" * 100_000, count=1)])
    ),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_a_bad_spec_field_is_refused_with_one_sentence_and_no_job(plane, stub, case):
    err = refusal(
        lambda: stub.Submit(pb.SubmitRequest(spec=BAD_SPECS[case]), metadata=metadata(plane))
    )
    assert_one_clean_sentence(err, plane)
    assert not stub.ListJobs(pb.ListJobsRequest(), metadata=metadata(plane)).jobs


@pytest.mark.parametrize("digest", [LONG_HASH, HASH[:8]], ids=["300 characters", "8 digits"])
def test_a_malformed_blob_id_is_refused_before_it_names_a_path(plane, stub, digest):
    md = metadata(plane)
    calls = [
        lambda: stub.MissingBlobs(pb.MissingBlobsRequest(hashes=[digest]), metadata=md),
        lambda: stub.GetBlob(pb.GetBlobRequest(hash=digest), metadata=md),
        lambda: stub.PutBlob(iter([pb.BlobChunk(hash=digest, data=b"x")]), metadata=md),
    ]
    for call in calls:
        assert_one_clean_sentence(refusal(call), plane)


def finished_job(plane: ControlPlane, stub: Any) -> str:
    events = [
        e
        for batch in stub.Submit(pb.SubmitRequest(spec=spec()), metadata=metadata(plane))
        for e in batch.events
    ]
    assert events[-1].WhichOneof("body") == "finished"
    return events[0].job_id


@pytest.mark.parametrize("from_seq", [2**63, 2**64 - 1])
def test_a_seq_past_the_job_log_is_refused(plane, stub, from_seq):
    job_id = finished_job(plane, stub)
    md = metadata(plane)
    attach = pb.AttachRequest(job_id=job_id, from_seq=from_seq)
    assert_one_clean_sentence(refusal(lambda: stub.Attach(attach, metadata=md)), plane)
    answer = pb.InputAnswer(job_id=job_id, seq=from_seq, text="x")
    assert_one_clean_sentence(refusal(lambda: stub.AnswerInput(answer, metadata=md)), plane)


@pytest.mark.parametrize("job_id", ["job-\0", "j" * 10_000], ids=["NUL", "10k characters"])
def test_a_malformed_job_id_is_refused(plane, stub, job_id):
    md = metadata(plane)
    calls = [
        lambda: stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md),
        lambda: stub.Cancel(pb.CancelRequest(job_id=job_id), metadata=md),
        lambda: stub.Attach(pb.AttachRequest(job_id=job_id), metadata=md),
    ]
    for call in calls:
        assert_one_clean_sentence(refusal(call), plane)


ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -5.0, 1.0, 1e300, float("nan"), float("inf"), -float("inf")]),
)
uint32 = st.integers(0, 2**32 - 1)
uint64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63, 2**64 - 1]))
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", "a\0b", "A=B", "x" * 300, "H100"]))
hashes = st.one_of(texts, st.just(HASH), st.just(LONG_HASH))
specs = st.builds(
    pb.JobSpec,
    code=st.just(""),
    timeout_s=floats,
    retries=uint32,
    session=texts,
    env=st.dictionaries(texts, texts, max_size=3),
    pull=st.lists(texts, max_size=3),
    image=st.one_of(st.just(""), hashes),
    origin=texts,
    resources=st.builds(
        pb.Resources,
        cpu=floats,
        memory_mb=uint64,
        gpu=st.lists(st.builds(pb.GPUChoice, type=texts, count=uint32), max_size=2),
    ),
    closure=st.lists(
        st.builds(pb.Value, name=texts, buffers=st.lists(hashes, max_size=2)), max_size=2
    ),
    secrets=st.lists(st.builds(pb.SecretRef, name=texts, adhoc=st.booleans()), max_size=2),
    volumes=st.lists(st.builds(pb.VolumeMount, name=texts, path=texts), max_size=2),
    process_settings=st.one_of(st.just(""), texts),
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(job=specs)
def test_no_spec_gets_an_unknown_or_internal_answer(plane, stub, job):
    md = metadata(plane)
    try:
        stream = stub.Submit(pb.SubmitRequest(spec=job), metadata=md)
        first = next(iter(stream))
        job_id = first.events[0].job_id
        stream.cancel()
        stub.Cancel(pb.CancelRequest(job_id=job_id, reason="test"), metadata=md)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())  # type: ignore[attr-defined]
