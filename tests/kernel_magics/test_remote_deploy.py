"""``%%remote_deploy`` and ``%remote_endpoints`` in a real IPython shell, against a
client that records what the magic sends (the control plane's side is tested with it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from remotecell._proto import pb
from remotecell.contract import values
from remotecell.contract.errors import ConfigError
from remotecell.kernel_magics import load_ipython_extension, unload_ipython_extension
from remotecell.kernel_magics._magics import RemoteMagics
from remotecell.kernel_magics._options import parse_deploy


class RecordingClient:
    def __init__(self) -> None:
        self.requests: list[pb.DeployRequest] = []
        self.uploaded: dict[str, Any] = {}

    def health(self, *args: Any, **kwargs: Any) -> pb.HealthReply:
        return pb.HealthReply(http_url="http://127.0.0.1:8080")

    def upload(self, blobs: dict[str, Any]) -> int:
        self.uploaded.update(blobs)
        return 0

    def deploy(self, request: pb.DeployRequest) -> pb.DeploymentInfo:
        self.requests.append(request)
        return self._info(request.name)

    def get_deployment(self, name: str) -> pb.DeploymentInfo:
        return self._info(name)

    def list_deployments(self) -> list[pb.DeploymentInfo]:
        return [self._info(r.name) for r in self.requests]

    def _info(self, name: str) -> pb.DeploymentInfo:
        return pb.DeploymentInfo(name=name, version=1, path=f"/endpoints/{name}", stopped=True)

    def close(self) -> None:
        pass


@pytest.fixture
def ip(
    shell: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[tuple[Any, RecordingClient]]:
    # Loading the extension starts connecting at once: to nothing here, so that it does
    # not start the user's embedded control plane (the recording client stands in).
    monkeypatch.setenv("REMOTECELL_URL", f"unix:{tmp_path}/no-control-plane.sock")
    monkeypatch.setenv("REMOTECELL_TOKEN", "unused")
    before = set(shell.user_ns)
    load_ipython_extension(shell)
    magics = shell.magics_manager.registry[RemoteMagics.__name__]
    recording = RecordingClient()
    magics._connecting = None
    magics._client = recording
    magics.cwd_snapshot = False
    yield shell, recording
    magics._client = None
    unload_ipython_extension(shell)
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]


def test_the_cell_is_the_setup_and_its_def_the_handler(ip: Any, capsys: Any) -> None:
    shell, recording = ip
    shell.user_ns["rd_scale"] = 3
    shell.run_cell_magic(
        "remote_deploy",
        'embed gpu="any" max_containers=2 concurrency=4 env={"A": "1"}',
        "model = rd_scale * 2\ndef predict(text, k=1):\n    return model * len(text) * k\n",
    )
    [request] = recording.requests
    assert request.name == "embed" and not request.ephemeral
    spec = request.spec
    assert "def predict" in spec.code and list(spec.pull) == []
    closure = values.unpack(spec.closure, recording.uploaded.__getitem__)
    assert closure == {"rd_scale": 3}
    assert (spec.serve.deployment, spec.serve.handler, spec.serve.concurrency) == ("embed", "", 4)
    assert request.settings.max_containers == 2 and request.settings.concurrency == 4
    assert [c.type for c in spec.resources.gpu] == ["any"] and dict(spec.env) == {"A": "1"}
    out = capsys.readouterr().out
    assert "endpoint: http://127.0.0.1:8080/endpoints/embed" in out
    assert (
        'curl -X POST http://127.0.0.1:8080/endpoints/embed -H "Authorization: Bearer '
        "$REMOTECELL_TOKEN\" -H 'Content-Type: application/json' "
        '-d \'{"text": "...", "k": "..."}\''
    ) in out


def test_handler_may_name_a_notebook_function(ip: Any) -> None:
    shell, recording = ip
    shell.run_cell("def rd_handler(x):\n    return x + 1\n")
    shell.run_cell_magic("remote_deploy", "plus handler=rd_handler", "import math\n")
    spec = recording.requests[-1].spec
    assert spec.serve.handler == "rd_handler"
    loaded = values.unpack(spec.closure, recording.uploaded.__getitem__)
    assert loaded["rd_handler"](1) == 2
    shell.run_cell_magic("remote_deploy", 'two handler="b"', "def a(): pass\ndef b(y): pass\n")
    assert recording.requests[-1].spec.serve.handler == "b"


def test_remote_endpoints_prints_the_table(ip: Any, capsys: Any) -> None:
    shell, recording = ip
    recording.requests.append(pb.DeployRequest(name="embed"))
    shell.run_line_magic("remote_endpoints", "")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("NAME") and out[1].startswith("embed")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("", "usage: %%remote_deploy NAME"),
        ("gpu='any'", "usage: %%remote_deploy NAME"),
        ("Bad_Name", "not a valid deployment name"),
        (
            "embed max_conatiners=3",
            "unknown %%remote_deploy option 'max_conatiners'; did you mean max_containers",
        ),
        ("embed timeout=5", "unknown %%remote_deploy option 'timeout'"),
        ("embed min_containers=5 max_containers=2", "min_containers=5 is above max_containers=2"),
        ("embed concurrency=0", "concurrency=0 is not a whole number"),
        ("embed handler=3", "bad value for %%remote_deploy option handler=3"),
        ("embed gpu=3", "gpu=3 names no GPU type"),
        ("embed secrets=['hf']", "bad value for %%remote_deploy option secrets="),
        ("embed cpu=-1", "bad value for %%remote_deploy option cpu=-1"),
    ],
)
def test_bad_lines_are_one_sentence(line: str, match: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_deploy(line, {})
    assert match in str(err.value)
    if "Valid options" not in str(err.value):
        assert "\n" not in str(err.value)


def test_a_good_line() -> None:
    options = parse_deploy("llm-v2 public=True call_timeout=30 scaledown_window=5", {})
    assert options.name == "llm-v2" and options.handler is None
    assert options.settings.public and options.settings.call_timeout == 30
