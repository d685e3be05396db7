"""Users, their tokens and runners' own credentials, against a real control plane with
real runners: a runner's credential (which a cell can reach) grants nothing beyond its
own job, a user's token cannot act as a runner, users see only their own jobs, a runner
never serves two users, and tokens are kept only as hashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from test_executor_local import finished, read_until, stdout_of

from remotecell._proto import pb, pb_grpc
from remotecell.client import Client, Endpoint, transport
from remotecell.contract.errors import (
    AuthError,
    ConfigError,
    JobNotFoundError,
    VolumeNotFoundError,
)

# What a cell can find in its runner's memory: the runner's own credential.
STEAL = (
    "import gc\n"
    "from remotecell.client import Endpoint\n"
    "found = [o for o in gc.get_objects() if isinstance(o, Endpoint)]\n"
    "print('ENDPOINT', found[0].url, found[0].token)\n"
    "import os\n"
    "print('PID', os.getpid())\n"
)


def token_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", "token", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def user_client(control_plane, name: str) -> Client:
    made = token_cli(control_plane.data_dir, "create", name)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    return Client(Endpoint(control_plane.endpoint.url, token))


def run(client: Client, code: str) -> list[pb.JobEvent]:
    return read_until(client.submit(pb.JobSpec(code=code)), finished)


def stolen(client: Client) -> tuple[Endpoint, int]:
    """The credential a cell finds in its runner, and the runner's pid."""
    out = stdout_of(run(client, STEAL))
    (line,) = [x for x in out.splitlines() if x.startswith("ENDPOINT ")]
    _, url, token = line.split(" ")
    (pid_line,) = [x for x in out.splitlines() if x.startswith("PID ")]
    return Endpoint(url, token), int(pid_line.split()[1])


def raw(endpoint: Endpoint):
    channel = transport.blocking_channel(endpoint)
    return channel, pb_grpc.ControlPlaneStub(channel), transport.metadata(endpoint)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_a_users_token_cannot_open_the_runner_channel(control_plane):
    channel, stub, metadata = raw(control_plane.endpoint)
    try:
        hello = pb.RunnerMessage(hello=pb.RunnerHello(runner_id="r-anything"))
        replies = stub.RunnerSession(iter([hello]), metadata=metadata)
        with pytest.raises(grpc.RpcError) as caught:
            next(replies)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "a user's token cannot open it" in caught.value.details()
    finally:
        channel.close()


def test_a_runner_credential_a_cell_finds_grants_nothing_beyond_its_own_job(control_plane, client):
    runner, _ = stolen(client)
    assert runner.token != control_plane.endpoint.token
    channel, stub, metadata = raw(runner)
    try:
        for call in (
            lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=metadata),
            lambda: stub.GetJob(pb.GetJobRequest(job_id="job-0000000000"), metadata=metadata),
            lambda: stub.ListSecrets(pb.SecretListRequest(), metadata=metadata),
            lambda: stub.VolumeList(pb.VolumeListRequest(), metadata=metadata),
            lambda: next(
                stub.Submit(pb.SubmitRequest(spec=pb.JobSpec(code="1")), metadata=metadata)
            ),
        ):
            assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED
        # It connects as its own runner only: not as another one.
        other = pb.RunnerMessage(hello=pb.RunnerHello(runner_id="r-someone-else"))
        replies = stub.RunnerSession(iter([other]), metadata=metadata)
        assert code_of(lambda: next(replies)) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        channel.close()
    # The runner that held it still serves its user.
    assert "2" in stdout_of(run(client, "print(1 + 1)"))


def test_a_runner_cannot_write_into_or_end_another_users_job(control_plane, client):
    bob = user_client(control_plane, "bob")
    try:
        runner, _ = stolen(client)  # alice's (the data dir owner's) runner
        victim = bob.submit(pb.JobSpec(code="import time\nprint('started')\ntime.sleep(60)"))
        first = read_until(victim, lambda ev: "started" in stdout_of(ev))
        job_id = first[0].job_id
        channel, stub, metadata = raw(runner)
        try:
            own_id = next(
                j.runner_id for j in client.list_jobs() if j.summary.startswith("import gc")
            )
            forged = [
                pb.JobEvent(
                    job_id=job_id, seq=90, stream=pb.Stream(name=pb.Stream.STDOUT, text="forged")
                ),
                pb.JobEvent(job_id=job_id, seq=91, finished=pb.Finished(state=pb.SUCCEEDED)),
            ]
            messages = iter(
                [
                    pb.RunnerMessage(hello=pb.RunnerHello(runner_id=own_id, pid=os.getpid())),
                    pb.RunnerMessage(events=pb.JobEvents(events=forged)),
                ]
            )
            replies = stub.RunnerSession(messages, metadata=metadata)
            time.sleep(1.0)  # the forged events have been read (not a timing assertion)
            replies.cancel()
        finally:
            channel.close()
        info = bob.get_job(job_id)
        assert info.state == pb.RUNNING
        bob.cancel(job_id)
        events = read_until(bob.attach(job_id), finished)
        assert "forged" not in stdout_of(events)
        assert events[-1].finished.state == pb.CANCELLED
    finally:
        bob.close()


def test_users_see_and_act_on_their_own_jobs_only(control_plane, client):
    bob = user_client(control_plane, "bob")
    try:
        events = run(client, "print('mine')")
        job_id = events[0].job_id
        assert job_id in {j.job_id for j in client.list_jobs()}
        assert job_id not in {j.job_id for j in bob.list_jobs()}
        with pytest.raises(JobNotFoundError):
            bob.get_job(job_id)
        with pytest.raises(JobNotFoundError):
            bob.cancel(job_id)
        with pytest.raises(JobNotFoundError):
            read_until(bob.attach(job_id), finished)
        bobs = run(bob, "print('his')")[0].job_id
        assert {j.job_id for j in bob.list_jobs()} == {bobs}
        assert bobs not in {j.job_id for j in client.list_jobs()}
    finally:
        bob.close()


def test_a_runner_never_serves_two_users(control_plane, client):
    bob = user_client(control_plane, "bob")
    try:
        pid = "import os\nprint(os.getpid())"
        alice_first = stdout_of(run(client, pid)).strip()
        bob_first = stdout_of(run(bob, pid)).strip()
        alice_again = stdout_of(run(client, pid)).strip()
        assert bob_first != alice_first
        assert alice_again == alice_first  # warm reuse within one user's pool
    finally:
        bob.close()


def test_tokens_are_kept_only_as_hashes_and_revoking_ends_them(control_plane):
    bob = user_client(control_plane, "bob")
    try:
        assert bob.list_jobs() == []
        listed = token_cli(control_plane.data_dir, "ls")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
        assert rows["bob"] == "no" and "yes" in rows.values()
        stored = b"".join(
            p.read_bytes() for p in control_plane.data_dir.glob("state.sqlite3*") if p.is_file()
        )
        assert bob.endpoint.token.encode() not in stored
        assert control_plane.endpoint.token.encode() not in stored

        revoked = token_cli(control_plane.data_dir, "revoke", "bob")
        assert revoked.returncode == 0 and "revoked 1 token of bob" in revoked.stdout
        with pytest.raises(AuthError):
            bob.list_jobs()
    finally:
        bob.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create", "Bob Smith"), "'Bob Smith' is not a valid user name: use 1-64 lowercase"),
        (("revoke", "nobody"), "no user 'nobody': `remotecell token ls` lists them"),
    ],
)
def test_token_commands_refuse_bad_input_in_one_sentence(control_plane, args, says):
    done = token_cli(control_plane.data_dir, *args)
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"Error: {says}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_token_commands_on_a_directory_without_a_control_plane_say_so(tmp_path):
    done = token_cli(tmp_path, "ls")
    assert done.returncode == 1
    assert "holds no control plane state" in done.stderr
    assert not (tmp_path / "state.sqlite3").exists()


def with_secret(code: str, *names: str) -> pb.JobSpec:
    return pb.JobSpec(code=code, secrets=[pb.SecretRef(name=n) for n in names])


def test_secrets_are_their_owners_and_shared_only_by_name(control_plane, client):
    bob = user_client(control_plane, "bob")
    carol = user_client(control_plane, "carol")
    try:
        client.create_secret("hf", {"HF_TOKEN": "alices"})
        assert [s.name for s in bob.list_secrets()] == []
        with pytest.raises(ConfigError, match="no secret named 'hf'"):
            bob.submit(with_secret("1", "hf")).next(timeout=30)
        bob.create_secret("hf", {"HF_TOKEN": "bobs"})  # his own, same name: no clash
        show = "import os\nprint(os.environ['HF_TOKEN'][::-1])"  # a value itself is masked
        assert (
            stdout_of(read_until(bob.submit(with_secret(show, "hf")), finished)).strip() == "sbob"
        )

        assert client.share_secret("hf", "carol") == ["carol"]
        (listed,) = carol.list_secrets()
        assert (listed.name, listed.owner) == ("hf", control_plane_owner(client))
        out = read_until(carol.submit(with_secret(show, "hf")), finished)
        assert stdout_of(out).strip() == "secila"
        with pytest.raises(ConfigError, match="no secret named 'hf'"):
            carol.delete_secret("hf")  # shared with her, not hers
        with pytest.raises(ConfigError, match="no user 'nobody'"):
            client.share_secret("hf", "nobody")

        assert client.share_secret("hf", "carol", revoke=True) == []
        assert carol.list_secrets() == []
        with pytest.raises(ConfigError, match="no secret named 'hf'"):
            carol.submit(with_secret(show, "hf")).next(timeout=30)
    finally:
        bob.close()
        carol.close()


def control_plane_owner(client: Client) -> str:
    (mine,) = [s for s in client.list_secrets() if s.name == "hf"]
    return mine.owner


def test_volumes_are_their_owners_and_shared_only_by_name(control_plane, client):
    import io

    bob = user_client(control_plane, "bob")
    try:
        client.create_volume("data")
        client.write_volume_file("data", "a.txt", io.BytesIO(b"alice's"), 7)
        assert bob.list_volumes() == []
        with pytest.raises(VolumeNotFoundError):
            bob.read_volume_file("data", "a.txt")
        mount = [pb.VolumeMount(path="/mnt/data", name="data")]
        with pytest.raises((ConfigError, VolumeNotFoundError), match="no volume 'data'"):
            bob.submit(pb.JobSpec(code="1", volumes=mount)).next(timeout=30)

        assert client.share_volume("data", "bob") == ["bob"]
        assert [v.name for v in bob.list_volumes()] == ["data"]
        assert b"".join(bob.read_volume_file("data", "a.txt")[1]) == b"alice's"
        read = "print(open('/mnt/data/a.txt').read())"
        out = read_until(bob.submit(pb.JobSpec(code=read, volumes=mount)), finished)
        assert stdout_of(out).strip() == "alice's"
        with pytest.raises(VolumeNotFoundError):
            bob.delete_volume("data")  # shared with him, not his to delete
        assert client.share_volume("data", "bob", revoke=True) == []
        with pytest.raises(VolumeNotFoundError):
            bob.read_volume_file("data", "a.txt")
    finally:
        bob.close()


def test_a_runner_credential_reaches_only_the_volumes_mounted_in_it(control_plane, client):
    import io

    client.create_volume("mounted")
    client.create_volume("other")
    client.write_volume_file("other", "x", io.BytesIO(b"x"), 1)
    mount = [pb.VolumeMount(path="/mnt/m", name="mounted")]
    out = read_until(client.submit(pb.JobSpec(code=STEAL, volumes=mount)), finished)
    (line,) = [x for x in stdout_of(out).splitlines() if x.startswith("ENDPOINT ")]
    _, url, token = line.split(" ")
    runner = Client(Endpoint(url, token))
    try:
        assert runner.list_volume_files("mounted") == []
        with pytest.raises(AuthError, match="not mounted in this runner"):
            runner.read_volume_file("other", "x")
    finally:
        runner.close()


def test_images_are_their_users_and_pruning_takes_an_admin(control_plane, client):
    from remotecell.backend.server import local_user
    from remotecell.backend.state.images import ImageStore

    image_id = "ab" + "0" * 30
    store = ImageStore(control_plane.data_dir / "state.sqlite3")
    try:
        store.building(image_id, "venv")
        store.failed(image_id, "venv", "pip failed")
        store.claim(image_id, local_user())  # as a job of the data dir's owner would
    finally:
        store.close()
    bob = user_client(control_plane, "bob")
    try:
        assert [i.image_id for i in client.list_images()] == [image_id]
        assert bob.list_images() == []
        with pytest.raises(JobNotFoundError, match="no image 'ab00'"):
            bob.remove_images(["ab00"])
        with pytest.raises(AuthError, match="takes an admin's token"):
            bob.prune_images(30)
        assert [r.image.image_id for r in client.remove_images(["ab00"])] == [image_id]
    finally:
        bob.close()


def test_the_share_commands_say_whom_a_secret_or_volume_is_shared_with(control_plane, client):
    user_client(control_plane, "bob").close()
    client.create_secret("hf", {"HF_TOKEN": "x"})
    client.create_volume("data")
    env = {**os.environ, **control_plane.env()}

    def share(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "remotecell", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    for kind, name in (("secret", "hf"), ("volume", "data")):
        done = share(kind, "share", name, "bob")
        assert (done.returncode, done.stdout) == (0, f"{name} is shared with: bob\n"), done.stderr
        done = share(kind, "share", name, "bob", "--revoke")
        assert done.stdout == f"{name} is shared with: no one\n"
        done = share(kind, "share", name, "nobody")
        assert done.returncode == 1
        assert done.stderr.strip() == "Error: no user 'nobody': `remotecell token ls` lists them"
