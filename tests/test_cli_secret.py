"""`remotecell secret create | ls | rm` against a real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from remotecell._proto import pb

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


def cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", "secret", *args],
        env={**os.environ, **env},
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_ls_rm_round_trip(control_plane, client, tmp_path: Path):
    env = control_plane.env()
    assert cli("ls", env=env).stdout.startswith("no secrets; create one with")

    made = cli("create", "hf", f"HF_TOKEN={VALUE}", "HF_USER=me-myself", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "created secret 'hf' (keys: HF_TOKEN, HF_USER)\n"

    # values from standard input (one line per bare KEY) and from a dotenv file
    piped = cli("create", "piped", "PIPED_ONE", "PIPED_TWO", env=env, stdin="first-one\nsecond\n")
    assert piped.returncode == 0, piped.stderr
    dotenv = tmp_path / "db.env"
    dotenv.write_text("DB_USER=admin\nDB_PASSWORD='pass word'\n")
    from_file = cli("create", "db", "--from-dotenv", str(dotenv), "EXTRA=ab", env=env)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == "created secret 'db' (keys: DB_PASSWORD, DB_USER, EXTRA)\n"
    assert from_file.stderr == (
        "note: EXTRA has a value shorter than 4 characters, which are not masked in cells' output\n"
    )
    from_stdin = cli("create", "stdin-env", "--from-dotenv", "-", env=env, stdin="A_KEY=a-value\n")
    assert from_stdin.returncode == 0, from_stdin.stderr

    listing = cli("ls", env=env)
    assert listing.returncode == 0
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "OWNER", "UPDATED", "CREATED", "KEYS"]
    assert [row.split()[0] for row in rows] == ["db", "hf", "piped", "stdin-env"]
    assert rows[1].endswith("HF_TOKEN, HF_USER")
    for value in (VALUE, "me-myself", "first-one", "pass word", "a-value"):
        assert value not in listing.stdout + listing.stderr

    # what the cells get is what was given
    spec = pb.JobSpec(
        code="import os\nprint(os.environ['PIPED_TWO'] == 'second', "
        "os.environ['DB_PASSWORD'] == 'pass word', os.environ['HF_TOKEN'] == " + repr(VALUE) + ")",
        secrets=[pb.SecretRef(name=n) for n in ("piped", "db", "hf")],
    )
    events = list(client.submit(spec))
    assert "".join(e.stream.text for e in events if e.HasField("stream")) == "True True True\n"

    again = cli("create", "hf", "HF_TOKEN=other-value", env=env)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        "Error: a secret named 'hf' exists already; pass --force (overwrite=True) to replace "
        "it, or remove it first"
    ]
    forced = cli("create", "hf", "HF_TOKEN=other-value", "--force", env=env)
    assert forced.stdout == "replaced secret 'hf' (keys: HF_TOKEN)\n"

    removed = cli("rm", "hf", "db", env=env)
    assert removed.returncode == 0
    assert removed.stdout == "removed secret 'hf'\nremoved secret 'db'\n"
    assert [r.split()[0] for r in cli("ls", env=env).stdout.splitlines()[1:]] == [
        "piped",
        "stdin-env",
    ]
    missing = cli("rm", "hf", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "Error: no secret named 'hf' on this control plane; create it with "
        "`remotecell secret create hf KEY=VALUE` (`remotecell secret ls` lists them)"
    ]


def test_bad_input_is_one_line_and_never_shows_a_value(control_plane, tmp_path: Path):
    env = control_plane.env()
    cases = [
        (("create", "bad name", f"K={VALUE}"), "is not a valid secret name"),
        (("create", "ok", f"1K={VALUE}"), "is not an environment variable name"),
        (("create", "ok"), "has no variables: give at least one KEY=VALUE"),
        (("create", "ok", f"K={VALUE}", "K=again-value"), "K is given twice"),
        (("create", "ok", "--from-dotenv", str(tmp_path / "none.env")), "does not exist"),
        (("create", "ok", "K"), "standard input ended before the value of K"),
    ]
    for args, expected in cases:
        done = cli(*args, env=env)
        assert done.returncode in (1, 2), args
        assert expected in done.stderr, (args, done.stderr)
        assert VALUE not in done.stderr and "again-value" not in done.stderr
    assert cli("ls", env=env).stdout.startswith("no secrets")
