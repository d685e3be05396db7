"""Masking secret values in a job's output (``backend/secrets/masking.py``, ``runner/_masking.py``)."""

from __future__ import annotations

import json

import pytest

from remotecell._proto import pb
from remotecell.backend.runner._masking import MaskedEmit
from remotecell.backend.secrets.masking import MASK, Masker
from remotecell.contract.events import Body, job_event

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


def test_values_and_their_escaped_forms_are_masked() -> None:
    quoted = 'pa"ss\\wörd'
    masker = Masker([VALUE, quoted, "abc"])  # "abc": too short to mask
    assert masker.mask(f"token={VALUE}, again {VALUE}.") == f"token={MASK}, again {MASK}."
    assert masker.mask(repr({"P": quoted})) == "{'P': '" + MASK + "'}"
    assert masker.mask(json.dumps({"P": quoted})) == '{"P": "' + MASK + '"}'
    assert masker.mask("abc stays") == "abc stays"


def test_each_line_of_a_multiline_value_is_masked() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = Masker([pem])
    printed = "\n".join(pem.splitlines()) + "\n"
    assert "MIIEvQ" not in masker.mask(printed)
    assert masker.mask(pem) == MASK


def test_overlapping_values_are_masked_together() -> None:
    masker = Masker(["abcdef", "defghi"])
    assert masker.mask("xx abcdefghi yy") == f"xx {MASK} yy"


@pytest.mark.parametrize("text", [f"before {VALUE} after\n", f"{VALUE}{VALUE}", f"h{VALUE}hf_"])
def test_a_value_split_anywhere_across_chunks_is_masked(text: str) -> None:
    masker = Masker([VALUE, "hf_Zq81-other"])
    whole = masker.mask(text)
    assert VALUE not in whole
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            stream = masker.stream()
            out = stream.feed(text[:i]) + stream.feed(text[i:j]) + stream.feed(text[j:])
            out += stream.flush()
            assert out == whole, (i, j)


def test_a_stream_keeps_back_only_what_could_begin_a_value() -> None:
    stream = Masker([VALUE]).stream()
    assert stream.feed("plain line\n") == "plain line\n"
    assert stream.feed("ends with hf_Z") == "ends with "
    assert stream.feed("ebra\n") == "hf_Zebra\n"
    assert stream.feed("hf_Zq8") == ""
    assert stream.flush() == "hf_Zq8"  # the stream ended: what was kept back is shown


def test_bytes_search_for_pulled_values_and_the_log() -> None:
    masker = Masker([VALUE, "wörd-long"])
    assert masker.found_in(b"pickle..." + VALUE.encode() + b"...")
    assert masker.found_in(memoryview(bytearray("x wörd-long".encode())))
    assert not masker.found_in(b"nothing here")
    assert masker.mask_bytes(f"log: {VALUE}\n".encode()) == f"log: {MASK}\n".encode()
    assert not Masker([]).found_in(VALUE.encode())


def test_masked_emit_masks_every_kind_of_event_and_keeps_their_order() -> None:
    sent: list[Body] = []
    emit = MaskedEmit(sent.append, Masker([VALUE]))
    emit(pb.Stream(name=pb.Stream.STDOUT, text="part hf_Zq81"))
    emit(pb.Stream(name=pb.Stream.STDOUT, text="xLmn0pQrsTuvWxyz done\nhf"))
    emit(pb.Stream(name=pb.Stream.STDERR, text=f"err {VALUE}\n"))
    emit(pb.Display(data_json=json.dumps({"text/plain": f"'{VALUE}'"}), display_id="d"))
    emit(
        pb.Error(
            kind=pb.Error.USER_CODE,
            type_name="ValueError",
            message=f"bad token {VALUE}",
            traceback=["\x1b[31mValueError\x1b[0m: bad token " + VALUE],
        )
    )
    emit(pb.Result(skipped=[f"`x`: {VALUE}"]))
    emit(pb.Finished(state=pb.FAILED, message=f"ValueError: bad token {VALUE}"))
    assert VALUE.encode() not in b"".join(job_event("j", body).SerializeToString() for body in sent)
    kinds = [type(body).__name__ for body in sent]
    # the "hf" held back on stdout is shown before the display that follows it
    assert kinds == [
        "Stream",
        "Stream",
        "Stream",
        "Stream",
        "Display",
        "Error",
        "Result",
        "Finished",
    ]
    texts = [body.text for body in sent if isinstance(body, pb.Stream)]
    assert texts == ["part ", f"{MASK} done\n", f"err {MASK}\n", "hf"]
    display, error = sent[4], sent[5]
    assert isinstance(display, pb.Display) and isinstance(error, pb.Error)
    assert json.loads(display.data_json) == {"text/plain": f"'{MASK}'"}
    assert error.traceback == [f"\x1b[31mValueError\x1b[0m: bad token {MASK}"]


def test_binary_data_is_left_alone_where_a_short_value_would_match_by_chance() -> None:
    masker = Masker(["AAAA", VALUE])
    png = "iVBORw0KGgoAAAANSUhEUg"  # base64 of binary data: holds "AAAA" by chance
    sent: list[Body] = []
    MaskedEmit(sent.append, masker)(
        pb.Display(data_json=json.dumps({"image/png": png, "text/plain": "x AAAA"}))
    )
    display = sent[0]
    assert isinstance(display, pb.Display)
    assert json.loads(display.data_json) == {"image/png": png, "text/plain": f"x {MASK}"}
    # in an array's raw buffer only values of 8 bytes or more are looked for
    assert not masker.found_in(b"\x00AAAA\x00", binary=True)
    assert masker.found_in(b"\x00AAAA\x00")
    assert masker.found_in(b"\x00" + VALUE.encode(), binary=True)


def test_values_may_come_from_a_generator() -> None:
    masker = Masker(v for v in [VALUE])
    assert masker.mask(VALUE) == MASK and masker.found_in(VALUE.encode())


def test_log_cut_holds_back_what_could_begin_a_value_and_never_splits_one() -> None:
    masker = Masker(["hunter2-secret"])
    assert masker.log_cut(b"plain output\n") == len(b"plain output\n")
    # An end that could begin the value waits for the rest.
    assert masker.log_cut(b"token: hunt") == len(b"token: ")
    data = b"token: hunter2-secret and more"
    assert masker.log_cut(data) == len(data)
    assert masker.mask_bytes(data) == b"token: ******** and more"
    assert Masker([]).log_cut(b"abc hunt") == len(b"abc hunt")
