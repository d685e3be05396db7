"""The rules for a job as it travels: every field of a ``JobSpec``, and the ids, sequence
numbers and counts that the job RPCs carry.

The kernel applies the rules it can see first (``kernel_magics/_options.py`` uses the
bounds and ``env_problem`` here), and the control plane applies all of them again in
:func:`check_spec` before a job is recorded, so that a spec no notebook would send is
refused with one sentence instead of failing later on a runner. Each message names what is
wrong and what to send instead, and quotes at most a short start of what was sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from remotecell._proto import pb
from remotecell.contract import process_settings, workdir
from remotecell.contract.blobs import check_blob_id
from remotecell.contract.errors import ConfigError
from remotecell.contract.resources import check_resources
from remotecell.contract.secrets import ENV_KEY, MAX_KEYS
from remotecell.contract.secrets import check_name as check_secret_name
from remotecell.contract.values import PULL_STAR, is_content_hash
from remotecell.contract.volumes import MAX_MOUNTS

#: More retries than this is a mistake (and the wire's uint32 has a limit too).
MAX_RETRIES = 100
#: The longest ``timeout=`` a cell may have: 30 days.
MAX_TIMEOUT_S = 30 * 86400.0
#: A session name: what ``session=`` takes.
SESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: ``env=``: at most this many variables, each value at most this many bytes (Linux
#: refuses a longer environment string when it starts the runner).
MAX_ENV_VARS = 1000
MAX_ENV_VALUE_BYTES = 128 * 1024
#: The largest seq (and from_seq) a request may name: the job log's integers are int64.
MAX_SEQ = 2**63 - 1
#: The longest answer to a cell's ``input()``.
MAX_ANSWER_CHARS = 1 << 20
#: The most jobs one ListJobs returns.
MAX_LIST_LIMIT = 10_000
#: Bounds on the other parts of a spec, far above what a notebook sends.
MAX_CODE_BYTES = 1 << 20
MAX_VALUES = 100_000
MAX_NAME_CHARS = 1024
MAX_TEXT_CHARS = 4096
MAX_STEPS = 1000
MAX_ARGS = 10_000
MAX_DOCKERFILE_BYTES = 1 << 20
MAX_SECRETS = 100
#: A job id as the control plane makes them ("job-" and 10 hex digits), with room to grow.
MAX_JOB_ID_CHARS = 64


def _shown(text: str, limit: int = 40) -> str:
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def env_problem(env: Mapping[Any, Any], what: str = "env=") -> str | None:
    """Why ``env`` cannot be a cell's environment variables (a sentence), or None.

    A name is a non-empty string without '=' or NUL (what the OS takes); a value is a
    string without NUL, at most ``MAX_ENV_VALUE_BYTES``; at most ``MAX_ENV_VARS`` of them.
    """
    if len(env) > MAX_ENV_VARS:
        return f"{what} holds {len(env)} variables; give at most {MAX_ENV_VARS}"
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            shown = _shown(key) if isinstance(key, str) else f"a {type(key).__name__}"
            return (
                f"{what} names the variable {shown}; a name must be a non-empty string "
                "without '=' or NUL, such as HF_HOME"
            )
        if not isinstance(value, str) or "\0" in value:
            return (
                f"the value of {_shown(key)} in {what} is not a string without NUL characters; "
                "give a string an environment variable can hold"
            )
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ENV_VALUE_BYTES:
            return (
                f"the value of {_shown(key)} in {what} is over {MAX_ENV_VALUE_BYTES // 1024} KiB; "
                "put large data in a file or a volume instead"
            )
    return None


def timeout_ok(seconds: float) -> bool:
    """Whether ``seconds`` is a timeout a cell may have (0 on the wire: none)."""
    return math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S


def check_job_id(job_id: str) -> str:
    """``job_id`` if it could name a job (a well-formed id that no job has is the
    caller's NOT_FOUND).

    Raises:
        ConfigError: empty, too long, or holding characters no job id has.
    """
    if not job_id or len(job_id) > MAX_JOB_ID_CHARS or not job_id.isprintable():
        raise ConfigError(
            f"{_shown(job_id)} is not a job id; give one such as job-1a2b3c4d5e "
            "(`remotecell jobs` lists them)"
        )
    return job_id


def check_seq(seq: int, what: str = "seq") -> int:
    """``seq`` if it is a sequence number the job log can hold.

    Raises:
        ConfigError: it is above ``MAX_SEQ``.
    """
    if seq > MAX_SEQ:
        raise ConfigError(
            f"{what} {seq} is past the largest event number ({MAX_SEQ}); "
            "give the number of an event of the job, or 0 for all of them"
        )
    return seq


def check_text(text: str, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` if it is at most ``limit`` characters without NUL.

    Raises:
        ConfigError: it is longer, or holds a NUL.
    """
    if len(text) > limit or "\0" in text:
        raise ConfigError(
            f"{what} is over {limit} characters or holds a NUL character; send a shorter text"
        )
    return text


def check_spec(spec: pb.JobSpec) -> None:
    """Checks every field of a job's spec as the control plane receives it, before
    anything is recorded (the volumes, secrets and GPUs against what this control plane
    has are checked after, by the controller).

    Raises:
        ConfigError: one sentence saying which field is wrong and what to send.
    """
    if len(spec.code.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES:
        raise ConfigError(
            f"the cell is over {MAX_CODE_BYTES >> 20} MiB of code; move data out of the "
            "cell's text into variables or files"
        )
    check_values(spec.closure, "the cell's closure")
    if len(spec.pull) > MAX_VALUES:
        raise ConfigError(f"pull= names {len(spec.pull)} names; name at most {MAX_VALUES}")
    for name in spec.pull:
        if name != PULL_STAR and not name.isidentifier():
            raise ConfigError(
                f"pull= names {_shown(name)}, which is not a Python name; "
                "name variables such as pull=['model']"
            )
    if spec.timeout_s != 0 and not timeout_ok(spec.timeout_s):
        raise ConfigError(
            f"timeout={spec.timeout_s} is not a number of seconds above 0, at most "
            f"{MAX_TIMEOUT_S:.0f} (30 days); give one such as timeout=3600, or none"
        )
    if spec.retries > MAX_RETRIES:
        raise ConfigError(f"retries={spec.retries} is too many; give 0 to {MAX_RETRIES}")
    if spec.session and not SESSION.match(spec.session):
        raise ConfigError(
            f"session={_shown(spec.session)} is not a session name; use 1-64 letters, "
            "digits, '_', '.' or '-', starting with a letter or digit, such as session='train'"
        )
    problem = env_problem(spec.env)
    if problem:
        raise ConfigError(problem)
    check_resources(spec.resources)
    if spec.image and not is_content_hash(spec.image):
        raise ConfigError(
            f"image {_shown(spec.image)} is not an image id (32 lowercase hex digits); "
            "pass a remotecell.Image as image="
        )
    check_text(spec.origin, "the job's origin", MAX_NAME_CHARS)
    if spec.HasField("image_spec"):
        check_image_spec(spec.image_spec)
    if len(spec.volumes) > MAX_MOUNTS:
        raise ConfigError(
            f"the cell mounts {len(spec.volumes)} volumes; mount at most {MAX_MOUNTS}"
        )
    for mount in spec.volumes:
        check_text(mount.volume_id, "a mount's volume id", MAX_NAME_CHARS)
    check_secret_refs(spec.secrets)
    workdir.check(spec.workdir)
    process_settings.check(spec.process_settings)
    if spec.HasField("notebook"):
        if spec.HasField("serve"):
            raise ConfigError("a job is a notebook run or a deployment's replica, not both")
        check_blob_id(spec.notebook.notebook_blob, "a notebook run's notebook")
        timeout = spec.notebook.cell_timeout_s
        if timeout != 0 and not timeout_ok(timeout):
            raise ConfigError(
                f"a notebook run's cell timeout of {timeout} is not a number of seconds "
                f"above 0, at most {MAX_TIMEOUT_S:.0f}"
            )


def check_values(values: Iterable[pb.Value], what: str) -> None:
    """Checks wire values (a closure): kinds, names, and the blob ids they name.

    Raises:
        ConfigError: an unknown kind, a name or text too long, or a malformed blob id.
    """
    kinds = set(pb.Value.Kind.values())
    for count, value in enumerate(values, 1):
        if count > MAX_VALUES:
            raise ConfigError(f"{what} holds over {MAX_VALUES} values; send fewer names")
        if value.kind not in kinds:
            raise ConfigError(
                f"{what} holds a value of unknown kind {value.kind}; "
                "update remotecell in the notebook to the control plane's version"
            )
        check_text(value.name, f"a name in {what}", MAX_NAME_CHARS)
        check_text(value.module, f"a module name in {what}", MAX_NAME_CHARS)
        check_text(value.type_name, f"a type name in {what}", MAX_TEXT_CHARS)
        if len(value.names) > MAX_VALUES:
            raise ConfigError(f"{what} holds over {MAX_VALUES} names; send fewer names")
        for name in value.names:
            check_text(name, f"a name in {what}", MAX_NAME_CHARS)
        if value.pickle_blob:
            check_blob_id(value.pickle_blob, f"a value in {what} names")
        if len(value.buffers) > MAX_VALUES:
            raise ConfigError(f"{what} holds over {MAX_VALUES} buffers; send fewer values")
        for buffer in value.buffers:
            check_blob_id(buffer, f"a buffer in {what} is")


def check_image_spec(image: pb.ImageSpec) -> None:
    """Checks an image spec's fields (its id against its content is the image cache's).

    Raises:
        ConfigError: an unknown base or step kind, a malformed id or blob id, or a
            field over its bound or holding a NUL.
    """
    if image.base not in pb.ImageSpec.Base.values():
        raise ConfigError(
            f"the image has an unknown base {image.base}; update remotecell in the notebook "
            "to the control plane's version"
        )
    if image.id and not is_content_hash(image.id):
        raise ConfigError(
            f"the image's id {_shown(image.id)} is not 32 lowercase hex digits; "
            "build the spec with remotecell.Image"
        )
    check_text(image.python, "the image's python version", 64)
    check_text(image.base_ref, "the image's base reference", MAX_TEXT_CHARS)
    check_text(image.dockerfile, "the image's Dockerfile", MAX_DOCKERFILE_BYTES)
    if len(image.steps) > MAX_STEPS:
        raise ConfigError(f"the image has {len(image.steps)} steps; give at most {MAX_STEPS}")
    kinds = set(pb.ImageStep.Kind.values())
    for step in image.steps:
        if step.kind not in kinds:
            raise ConfigError(
                f"the image has a step of unknown kind {step.kind}; update remotecell "
                "in the notebook to the control plane's version"
            )
        if len(step.args) > MAX_ARGS or len(step.options) > MAX_ARGS:
            raise ConfigError(f"an image step has over {MAX_ARGS} arguments; split it")
        for arg in step.args:
            check_text(arg, "an image step's argument", MAX_DOCKERFILE_BYTES)
        for key, option in step.options.items():
            check_text(key, "an image step's option name", MAX_NAME_CHARS)
            check_text(option, f"the image step's option {_shown(key)}", MAX_TEXT_CHARS)
        problem = env_problem(step.env, "an image's env step")
        if problem:
            raise ConfigError(problem)
        if step.blob:
            check_blob_id(step.blob, "an image step's file")
        check_text(step.dest, "an image step's destination", MAX_TEXT_CHARS)


def check_secret_refs(refs: Iterable[pb.SecretRef]) -> None:
    """Checks the secrets a job names, as names and keys (their values, and whether a
    stored one exists, are the secret store's to check).

    Raises:
        ConfigError: too many, a bad name or label, or a required key that is not a
            variable name.
    """
    refs = list(refs)
    if len(refs) > MAX_SECRETS:
        raise ConfigError(f"the cell names {len(refs)} secrets; name at most {MAX_SECRETS}")
    for ref in refs:
        if ref.adhoc:
            check_text(ref.name, "an ad-hoc secret's label", MAX_NAME_CHARS)
        else:
            check_secret_name(ref.name)
        if len(ref.required_keys) > MAX_KEYS:
            raise ConfigError(
                f"secret {_shown(ref.name)} requires {len(ref.required_keys)} keys; "
                f"require at most {MAX_KEYS}"
            )
        for key in ref.required_keys:
            if not ENV_KEY.match(key):
                raise ConfigError(
                    f"secret {_shown(ref.name)} requires the key {_shown(key)}, which is not "
                    "an environment variable name; use letters, digits and '_', such as HF_TOKEN"
                )
