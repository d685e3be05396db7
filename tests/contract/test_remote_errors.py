"""An exception a remote cell raised is raised in the notebook as its own type (a
RemoteError too), so ``except`` clauses and the saved error match a local run."""

from __future__ import annotations

import json

import pytest

from remotecell.contract.errors import ConfigError, RemoteError, remote_error

TRACEBACK = ["Cell In[3], line 2", "----> 2 raise ValueError('bad')", "ValueError: bad"]


def test_a_builtin_type_is_caught_as_itself_and_reads_as_the_remote_error() -> None:
    err = remote_error("ValueError", "bad value ✗", TRACEBACK, job_id="job-1")
    assert isinstance(err, RemoteError) and isinstance(err, ValueError)
    assert type(err).__name__ == "ValueError" and str(err) == "bad value ✗"
    assert err._render_traceback_() == TRACEBACK
    assert (err.type_name, err.message, err.traceback, err.kind, err.job_id) == (
        "ValueError",
        "bad value ✗",
        TRACEBACK,
        "user_code",
        "job-1",
    )
    with pytest.raises(ValueError, match="bad value"):
        raise err
    assert type(remote_error("ValueError", "again")) is type(err)  # one class per type


def test_os_errors_keep_their_own_fields_empty() -> None:
    err = remote_error("FileNotFoundError", "[Errno 2] No such file: 'x'")
    assert isinstance(err, FileNotFoundError) and err.errno is None
    assert str(err) == "[Errno 2] No such file: 'x'"


def test_a_notebook_class_is_subclassed_and_its_init_is_not_called() -> None:
    class NotebookError(Exception):
        def __init__(self, code: int) -> None:
            super().__init__(code)

    err = remote_error(
        "__main__.NotebookError",
        "defined in the notebook",
        namespace={"NotebookError": NotebookError},
    )
    assert isinstance(err, NotebookError) and isinstance(err, RemoteError)
    assert type(err).__name__ == "NotebookError" and str(err) == "defined in the notebook"
    assert err._render_traceback_() == ["NotebookError: defined in the notebook"]


def test_a_class_of_an_imported_module_is_found() -> None:
    err = remote_error("json.decoder.JSONDecodeError", "Expecting value: line 1 column 1")
    assert isinstance(err, json.JSONDecodeError) and isinstance(err, RemoteError)
    err = remote_error("remotecell.contract.errors.ConfigError", "volume 'v' is not mounted")
    assert isinstance(err, ConfigError) and type(err).__name__ == "ConfigError"


@pytest.mark.parametrize(
    "type_name",
    [
        "no_such_module_xyz.Failure",  # not imported in the kernel: never imported for this
        "__main__.Missing",
        "UnicodeDecodeError",  # its __init__ insists on five arguments
        "KeyboardInterrupt",  # not an Exception: the kernel must not take it for one
        "__main__.f.<locals>.Inner",
    ],
)
def test_a_type_the_notebook_lacks_is_a_remote_error_named_as_it(type_name: str) -> None:
    err = remote_error(type_name, "it failed", namespace={})
    assert type(err).__mro__[1] is RemoteError
    assert type(err).__name__ == type_name.rpartition(".")[2]
    assert str(err) == "it failed"
