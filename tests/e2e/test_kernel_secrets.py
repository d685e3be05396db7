"""Secrets end to end through a real Jupyter kernel and a real control plane: the job
sees the variables, its output shows them masked, and no file of the control plane
holds a value in clear."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
from support import wait_until

pytestmark = pytest.mark.kernel

MASK = "********"


def fresh_value(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def forms(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]


def assert_nowhere_in_the_data_dir(control_plane, value: str, runner_logs: bool = True) -> None:
    """Reads every file under the control plane's data directory (the SQLite file with
    its -wal and -shm, the blob store, the runner and control-plane logs) as bytes."""
    files = [p for p in control_plane.data_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"state.sqlite3", "state.sqlite3-wal", "serve.log"} <= names, names
    if runner_logs:  # local runners log to files there; docker runners to the engine
        assert any(p.name.startswith("r-") and "runners" in p.parts for p in files), names
    for path in files:
        data = path.read_bytes()
        for form in forms(value):
            assert form not in data, f"{form!r} found in {path}"


def assert_not_in(run, value: str) -> None:
    assert value not in json.dumps([m["content"] for m in run.messages])


def test_a_stored_secret_is_an_environment_variable_masked_in_all_output(
    control_plane, client, kernel
):
    value = fresh_value("hf_")
    client.create_secret("hf", {"HF_TOKEN": value})
    kernel.ok('import remotecell\nhf = remotecell.Secret.from_name("hf")')
    run = kernel.execute(
        "%%remote secrets=[hf] pull=[]\n"
        "import os, subprocess, sys\n"
        "from IPython.display import display\n"
        "token = os.environ['HF_TOKEN']\n"
        "print('seen', token[:3], len(token))\n"
        "print('print', token)\n"
        "print('stderr', token, file=sys.stderr)\n"
        "sys.stdout.write('split ' + token[:5]); sys.stdout.flush(); print(token[5:])\n"
        "!echo shell $HF_TOKEN\n"
        "os.system('echo system $HF_TOKEN')\n"
        "subprocess.run(['sh', '-c', 'echo subprocess $HF_TOKEN >&2'])\n"
        "display({'token': token})\n"
        "raise ValueError('bad token ' + token)"
    )
    assert run.reply["status"] == "error"
    assert_not_in(run, value)
    assert run.stdout == (
        f"seen hf_ {len(value)}\nprint {MASK}\nsplit {MASK}\nshell {MASK}\nsystem {MASK}\n"
    )
    assert run.stderr == f"stderr {MASK}\nsubprocess {MASK}\n"
    displayed = [c["data"]["text/plain"] for c in run.of_type("display_data")]
    assert f"{{'token': '{MASK}'}}" in displayed
    assert run.error["ename"] == "ValueError"
    assert run.error["evalue"] == f"bad token {MASK}"
    assert f"bad token {MASK}" in "\n".join(run.error["traceback"])
    # the stored events say the same: a replay shows the masked output
    replay = kernel.execute("%remote_attach " + client.list_jobs(1)[0].job_id)
    assert f"print {MASK}" in replay.stdout
    assert_not_in(replay, value)
    assert_nowhere_in_the_data_dir(control_plane, value)


def test_a_value_the_cell_assigns_is_not_brought_back(control_plane, client, kernel):
    value = fresh_value("tok-")
    client.create_secret("api", {"API_TOKEN": value})
    kernel.ok("import remotecell")
    run = kernel.ok(
        "%%remote secrets=[remotecell.Secret.from_name('api')]\n"
        "import os\n"
        "token = os.environ['API_TOKEN']\n"
        "length = len(token)\n"
        "{'token': token}"
    )
    assert run.result is None
    assert "not brought back: `token` (str): it holds a secret's value" in run.stderr
    assert "not brought back: the cell's result (dict)" in run.stderr
    assert kernel.value("length") == len(value)
    assert kernel.execute("token").error["ename"] == "NameError"
    assert_not_in(run, value)
    assert_nowhere_in_the_data_dir(control_plane, value)


def test_an_adhoc_secret_from_a_dict_reaches_the_job_and_is_never_stored(control_plane, kernel):
    value = fresh_value("adhoc-")
    kernel.ok(
        f"import remotecell\ncreds = remotecell.Secret.from_dict({{'DB_PASSWORD': {value!r}}})"
    )
    kernel.ok(f"import hashlib\ndigest = hashlib.sha256({value!r}.encode()).hexdigest()")
    run = kernel.ok(
        "%%remote secrets=[creds] pull=[]\n"
        "import hashlib, os\n"
        "password = os.environ['DB_PASSWORD']\n"
        "print(hashlib.sha256(password.encode()).hexdigest() == digest, password)"
    )
    assert run.stdout == f"True {MASK}\n"
    assert_not_in(run, value)
    # the Secret object itself does not travel as a variable
    failed = kernel.execute("%%remote\nprint(creds)")
    assert failed.error["ename"] == "ClosureError"
    assert "is not sent as a variable" in failed.error["evalue"]
    assert_nowhere_in_the_data_dir(control_plane, value)


def test_a_reused_runner_keeps_no_secret_for_a_later_job(client, kernel):
    value = fresh_value("hf_")
    client.create_secret("hf", {"HF_TOKEN": value})
    kernel.ok("import remotecell, os\nos.environ['HF_TOKEN'] = 'the-kernel-own'")
    first = kernel.ok(
        "%%remote secrets=[remotecell.Secret.from_name('hf')] pull=[]\n"
        "import os\nos.getpid(), 'HF_TOKEN' in os.environ"
    )
    second = kernel.ok("%%remote pull=[]\nimport os\nos.getpid(), os.environ.get('HF_TOKEN')")
    first_pid, had = eval(first.result["text/plain"])
    second_pid, left = eval(second.result["text/plain"])
    assert had is True
    assert second_pid == first_pid  # the same warm runner
    assert left is None
    # the notebook's own variable never went to the runner, and was not changed
    assert kernel.value("os.environ['HF_TOKEN']") == "the-kernel-own"


def test_missing_secrets_and_bad_names_fail_before_the_cell_runs(client, kernel):
    client.create_secret("hf", {"HF_TOKEN": fresh_value("hf_")})
    kernel.ok("import remotecell")
    jobs_before = len(client.list_jobs())

    run = kernel.execute("%%remote secrets=[remotecell.Secret.from_name('nope')]\nprint('ran')")
    assert run.error["ename"] == "ConfigError"
    assert run.error["evalue"] == (
        "no secret named 'nope' on this control plane; create it with "
        "`remotecell secret create nope KEY=VALUE` (`remotecell secret ls` lists them)"
    )
    assert "ran" not in run.stdout

    run = kernel.execute(
        "%%remote secrets=[remotecell.Secret.from_name('hf', required_keys=['HF_USER'])]\n"
        "print('ran')"
    )
    assert run.error["ename"] == "ConfigError"
    assert "secret 'hf' has no key HF_USER (it has HF_TOKEN)" in run.error["evalue"]

    run = kernel.execute("remotecell.Secret.from_name('no such name')")
    assert run.error["ename"] == "ConfigError"
    assert "'no such name' is not a valid secret name" in run.error["evalue"]

    run = kernel.execute("%%remote secrets=['hf']\nprint('ran')")
    assert run.error["ename"] == "ConfigError"
    assert "remotecell.Secret.from_name" in run.error["evalue"]

    run = kernel.execute("remotecell.Secret.from_dict({'1BAD': 'x'})")
    assert run.error["ename"] == "ConfigError"
    assert "is not an environment variable name" in run.error["evalue"]
    for failed in (run,):
        assert len(failed.error["traceback"]) == 1  # one sentence, no remotecell frames
    assert len(client.list_jobs()) == jobs_before


@pytest.mark.parametrize(
    "writes",
    [
        # one write
        "    os.write(1, ('late ' + token + ' end' + chr(10)).encode())\n",
        # two writes: two reads of the pipe, the value split between them
        "    os.write(1, ('late ' + token[:6]).encode())\n"
        "    time.sleep(0.2)\n"
        "    os.write(1, (token[6:] + ' end' + chr(10)).encode())\n",
    ],
    ids=["whole", "in-two-pieces"],
)
def test_output_after_the_cell_ended_reaches_the_runner_log_masked(
    control_plane, client, kernel, writes
):
    value = fresh_value("late-")
    client.create_secret("late", {"LATE_TOKEN": value})
    kernel.ok("import remotecell")
    kernel.ok(
        "%%remote secrets=[remotecell.Secret.from_name('late')] pull=[]\n"
        "import os, threading, time\n"
        "token = os.environ['LATE_TOKEN']\n"
        "def late(token=token, os=os, time=time):  # the namespace is cleared after the cell\n"
        "    time.sleep(0.5)\n" + writes + "threading.Thread(target=late).start()"
    )
    logs = control_plane.data_dir / "logs" / "runners"

    def logged() -> bool:
        return any(f"late {MASK} end" in p.read_text() for p in logs.glob("r-*.log"))

    wait_until(logged, 10, what="the late output in the runner's log")
    assert_nowhere_in_the_data_dir(control_plane, value)


def test_docker_runners_get_secrets_over_their_link_not_in_the_container(
    make_control_plane, make_kernel
):
    from docker_engine import require_engine

    from remotecell.backend.executors.docker import RUNNER_ID_LABEL

    engine = require_engine()
    try:
        cp = make_control_plane("--executor", "docker", "--cancel-grace", "2")
        value = fresh_value("hf_")
        client = cp.client()
        client.create_secret("hf", {"HF_TOKEN": value})
        client.close()
        kernel = make_kernel(cp.env())
        kernel.ok("%load_ext remotecell\nimport remotecell")
        run = kernel.ok(
            "%%remote secrets=[remotecell.Secret.from_name('hf')] pull=[]\n"
            "import os\n"
            "print(os.path.exists('/.dockerenv'), len(os.environ['HF_TOKEN']), "
            "os.environ['HF_TOKEN'])",
            timeout=600,
        )
        assert run.stdout == f"True {len(value)} {MASK}\n"
        containers = engine.containers.list(filters={"label": RUNNER_ID_LABEL})
        assert containers
        for container in containers:
            assert value not in " ".join(container.attrs["Config"]["Env"] or [])
            assert value.encode() not in container.logs()
        assert_nowhere_in_the_data_dir(cp, value, runner_logs=False)
    finally:
        engine.close()
