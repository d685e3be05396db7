"""Nothing a cell or a spec holds ends its runner: code that does not parse or transform,
an env the process cannot hold, process settings that do not apply, an error or output a
protobuf string cannot carry. The task fails (or runs, as it would in a notebook) with
one sentence, and the same runner process serves the next job.

Each test runs a real control plane with real runner processes; a runner's pid, printed
by a cell, shows that it is still the same process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remotecell._proto import pb
from remotecell.backend.runner._workdir import RunnerWorkdir
from remotecell.client import Client
from remotecell.contract.errors import ConfigError

PID = "import os\nprint(os.getpid())\n"


def run(client: Client, code: str, **fields: object) -> tuple[pb.Finished, list[pb.JobEvent]]:
    """Runs one job to its end: how it finished and its events."""
    events: list[pb.JobEvent] = []
    stream = client.submit(pb.JobSpec(code=code, **fields))  # type: ignore[arg-type]
    try:
        for event in stream:
            events.append(event)
            if event.WhichOneof("body") == "finished":
                return event.finished, events
    finally:
        stream.close()
    raise AssertionError(f"the job's events ended without its end: {events}")


def errors(events: list[pb.JobEvent]) -> list[pb.Error]:
    return [e.error for e in events if e.WhichOneof("body") == "error"]


def stdout(events: list[pb.JobEvent]) -> str:
    return "".join(
        e.stream.text
        for e in events
        if e.WhichOneof("body") == "stream" and e.stream.name == pb.Stream.STDOUT
    )


def runner_pid(client: Client, **fields: object) -> int:
    finished, events = run(client, PID, **fields)
    assert finished.state == pb.SUCCEEDED, (finished, errors(events))
    return int(stdout(events).split()[0])


def assert_not_runner_died(events: list[pb.JobEvent]) -> None:
    died = [e for e in errors(events) if e.kind in (pb.Error.RUNNER_DIED, pb.Error.INTERNAL)]
    assert not died, died


def test_a_shell_command_that_does_not_tokenize_runs_as_in_a_notebook(client):
    pid = runner_pid(client, session="keep")
    finished, events = run(client, "!echo (", session="keep")
    assert_not_runner_died(events)
    assert finished.state == pb.SUCCEEDED, finished  # /bin/sh says what is wrong, as locally
    assert runner_pid(client, session="keep") == pid


def test_code_that_does_not_parse_fails_with_its_syntax_error_and_the_session_goes_on(client):
    pid = runner_pid(client, session="keep")
    run(client, "kept = 41", session="keep")
    for code in ("def (:", "x = (", 'x = """', "print('a'\n", "1 +\x00"):
        finished, events = run(client, code, session="keep")
        assert finished.state == pb.FAILED
        (error,) = errors(events)
        assert error.kind == pb.Error.USER_CODE, error
        assert error.type_name in ("SyntaxError", "IndentationError", "ValueError"), error
        assert finished.message.startswith(error.type_name + ": "), finished.message
        if code == "def (:":  # shown as a local cell shows it: the line, and where
            assert "def (:" in "\n".join(error.traceback), error.traceback
    finished, events = run(client, "print(kept + 1, os.getpid())", session="keep")
    assert finished.state == pb.SUCCEEDED, errors(events)
    assert stdout(events).split() == ["42", str(pid)]


def test_code_that_does_not_parse_fails_a_fresh_job_not_its_runner(client):
    pid = runner_pid(client)
    for code in ("def (:", "!echo (\nx = (", "a = [1,\n"):
        finished, events = run(client, code)
        assert_not_runner_died(events)
        assert finished.state == pb.FAILED
        assert [e.type_name for e in errors(events)] == ["SyntaxError"], errors(events)
    assert runner_pid(client) == pid


BAD_ENV = [{"A=B": "1"}, {"NUL\0KEY": "1"}, {"": "1"}]


def test_an_env_key_no_environment_can_hold_fails_the_job_naming_the_key(client):
    pid = runner_pid(client, session="keep")
    for env in [*BAD_ENV, {"GOOD": "nul\0inside"}]:
        (key,) = env
        try:
            finished, events = run(client, "1", session="keep", env=env)
        except ConfigError as err:  # the control plane refused it at submit: also right
            assert "env" in str(err), str(err)
            continue
        assert finished.state == pb.FAILED
        (error,) = errors(events)
        assert error.kind == pb.Error.SETUP, error
        assert repr(key) in error.message, error.message
        assert "nul\0inside" not in error.message  # a value is never shown
        assert error.message == finished.message
    assert runner_pid(client, session="keep") == pid


def test_the_runner_itself_refuses_an_env_it_cannot_set_whatever_the_control_plane_lets_by():
    # Defence in depth: the runner's shell, without a control plane's checks in front.
    script = textwrap.dedent(
        f"""
        import os
        from remotecell._proto import pb
        from remotecell.backend.runner._shell import CellShell

        shell = CellShell()
        for n, env in enumerate({BAD_ENV!r} + [{{"GOOD": "nul\\0inside"}}]):
            sent = []
            task = pb.Task(job_id=f"j{{n}}", spec=pb.JobSpec(code="1", session="s", env=env))
            finished = shell.run_task(task, sent.append, fetch=None, upload=lambda b: 0)
            (error,) = [b for b in sent if isinstance(b, pb.Error)]
            print(pb.JobState.Name(finished.state), pb.Error.Kind.Name(error.kind), finished.message)
        secret = pb.Task(job_id="s", secret_env={{"BAD=KEY": "v"}}, spec=pb.JobSpec(code="1"))
        print(pb.JobState.Name(shell.run_task(secret, [].append, None, lambda b: 0).state))
        task = pb.Task(job_id="k", spec=pb.JobSpec(code="x = 1", session="s", env={{"OK": "1"}}))
        print(pb.JobState.Name(shell.run_task(task, [].append, None, lambda b: 0).state))
        print("OK" in os.environ, "A" in os.environ)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7, lines
    for line, env in zip(lines[:4], [*BAD_ENV, {"GOOD": ""}], strict=True):
        (key,) = env
        assert line.startswith("FAILED SETUP "), line
        assert repr(key) in line
    assert "NUL character" in lines[3] and "inside" not in lines[3]
    assert "must not be empty or hold '='" in lines[0]
    assert lines[4:] == ["FAILED", "SUCCEEDED", "False False"]


def test_process_settings_that_do_not_apply_fail_the_job_not_its_runner(client):
    # A formatter the notebook's cell made without checking it: applied as it was.
    unchecked = {"loggers": {"app": {"level": 10, "handlers": [{"stream": "stdout", "fmt": "x"}]}}}
    pid = runner_pid(client)
    finished, events = run(client, "1", process_settings=json.dumps(unchecked))
    assert finished.state == pb.SUCCEEDED, errors(events)
    assert runner_pid(client) == pid
    # An inline figure format matplotlib does not have, once matplotlib is imported.
    pid = runner_pid(client, session="keep")
    run(client, "import matplotlib.figure", session="keep")
    bogus = json.dumps({"inline": {"figure_formats": ["no-such-format"]}})
    finished, events = run(client, "1", session="keep", process_settings=bogus)
    assert finished.state == pb.FAILED
    (error,) = errors(events)
    assert error.kind == pb.Error.SETUP, error
    assert "settings could not be applied" in error.message
    assert runner_pid(client, session="keep") == pid


def test_output_and_errors_a_protobuf_string_cannot_carry_still_arrive(client):
    code = "print(chr(0xD800))\nraise ValueError('bad ' + chr(0xDFFF))"
    finished, events = run(client, code, session="keep")
    assert finished.state == pb.FAILED
    (error,) = errors(events)
    assert (error.kind, error.type_name) == (pb.Error.USER_CODE, "ValueError"), error
    assert error.message == "bad \\udfff"
    assert stdout(events) == "\\ud800\n"


def test_an_error_whose_str_fails_is_reported_as_its_type(client):
    code = textwrap.dedent(
        """
        class Odd(Exception):
            def __str__(self):
                raise RuntimeError("no str")
        raise Odd()
        """
    )
    pid = runner_pid(client, session="keep")
    finished, events = run(client, code, session="keep")
    assert finished.state == pb.FAILED
    (error,) = errors(events)
    assert error.kind == pb.Error.USER_CODE and error.type_name.endswith("Odd"), error
    assert runner_pid(client, session="keep") == pid


FRAGMENTS = [
    "(", ")", "[", "{", ":", ";", "\n", " ", "    ", "!echo", "%%time", "%time", "def", "x",
    "=", "1", "'''", '"', "\\", "#", "lambda", "await", "async", "\0", "é", "0x", "?", "!",
]  # fmt: skip
CODE = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="!%"), max_size=40),
)
ENV = st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    max_size=3,
)


def test_no_code_or_env_ends_a_session_runner(client):
    pid = runner_pid(client, session="fuzz")

    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(code=CODE, env=ENV)
    def never_dies(code: str, env: dict[str, str]) -> None:
        try:
            finished, events = run(client, code, session="fuzz", env=env)
        except ConfigError:
            return  # refused at submit, before any runner saw it
        assert_not_runner_died(events)
        assert finished.state in (pb.SUCCEEDED, pb.FAILED), finished
        assert runner_pid(client, session="fuzz") == pid

    never_dies()


def test_a_working_directory_no_path_can_name_fails_the_task_in_one_sentence():
    sent: list[object] = []
    task = pb.Task(job_id="job-1", spec=pb.JobSpec(code="1", workdir=pb.Workdir(path="/tmp/a\0b")))
    run_task = RunnerWorkdir(lambda d: b"").around(task, lambda emit: pb.Finished())
    finished = run_task(sent.append)
    assert finished.state == pb.FAILED
    (error,) = sent
    assert isinstance(error, pb.Error) and error.type_name == "WorkdirError"
    assert "cannot be entered on the runner's machine (embedded null byte)" in error.message
