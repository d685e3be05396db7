"""The runner's side of a cell's ``input()``: the prompt goes out after the output
before it, masked; the answer, a refusal or an end of input comes back as the call's
return or error; an answer for no waiting request is dropped."""

from __future__ import annotations

import builtins
import getpass
import threading
import time

import pytest
from IPython.core.error import StdinNotImplementedError

from remotecell._proto import pb
from remotecell.backend.runner._masking import MaskedEmit
from remotecell.backend.runner._stdin import RemoteStdin
from remotecell.backend.secrets.masking import Masker
from remotecell.contract.events import Body

VALUE = "tok-Zq81xLmn0pQrsTuv"


def _answer_when_asked(stdin: RemoteStdin, sent: list[Body], answer: pb.InputAnswer) -> None:
    def run() -> None:
        while not any(isinstance(b, pb.InputRequest) for b in sent):
            time.sleep(0.01)
        stdin.answer(answer)

    threading.Thread(target=run, daemon=True).start()


def test_input_and_getpass_ask_through_the_job_and_return_the_answer() -> None:
    stdin, sent = RemoteStdin(), []
    flushed: list[int] = []
    originals = builtins.input, getpass.getpass
    with stdin.serving("j1", sent.append, lambda: flushed.append(len(sent))):
        stdin.answer(pb.InputAnswer(job_id="j1", text="early"))  # nothing waits: dropped
        _answer_when_asked(stdin, sent, pb.InputAnswer(job_id="j1", text="Ada"))
        assert input("name? ") == "Ada"
        sent.clear()
        _answer_when_asked(stdin, sent, pb.InputAnswer(job_id="j1", text="pw"))
        assert getpass.getpass() == "pw"
    assert (builtins.input, getpass.getpass) == originals  # restored as the cell ends
    assert flushed  # the cell's output went out before each prompt
    assert sent == [pb.InputRequest(prompt="Password: ", password=True)]


def test_a_refusal_or_an_end_of_input_raises_as_the_notebook_did() -> None:
    stdin, sent = RemoteStdin(), []
    with stdin.serving("j1", sent.append, lambda: None):
        _answer_when_asked(stdin, sent, pb.InputAnswer(job_id="j1", refused="no input here"))
        with pytest.raises(StdinNotImplementedError, match="no input here"):
            input()
        sent.clear()
        stdin.answer(pb.InputAnswer(job_id="other", text="x"))  # another job's: dropped
        _answer_when_asked(stdin, sent, pb.InputAnswer(job_id="j1", eof=True))
        with pytest.raises(EOFError):
            input()


def test_a_prompt_is_masked_like_any_output() -> None:
    sent: list[Body] = []
    emit = MaskedEmit(sent.append, Masker([VALUE]))
    emit(pb.InputRequest(prompt=f"token {VALUE}? ", password=True))
    (request,) = sent
    assert isinstance(request, pb.InputRequest) and request.password
    assert request.prompt.startswith("token ") and VALUE not in request.prompt
