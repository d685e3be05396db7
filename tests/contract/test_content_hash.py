"""Blob ids: ``content_hash`` of whole data (leaves in threads above ``LEAF_BYTES``) and
``ContentHasher`` over the same data in pieces of any size agree."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remotecell.contract import values
from remotecell.contract.blobs import verify
from remotecell.contract.errors import BlobCorruptError
from remotecell.contract.values import ContentHasher, content_hash, is_content_hash

LEAF = 64  # small leaves, so that short data crosses many leaf boundaries


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture
def small_leaves(monkeypatch):
    monkeypatch.setattr(values, "LEAF_BYTES", LEAF)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=5 * LEAF + 7), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_an_upload_in_pieces_hashes_as_the_whole(
    small_leaves, data: bytes, cuts: list[int]
) -> None:
    hasher = ContentHasher()
    for piece in pieces(data, cuts):
        hasher.update(piece)
    assert hasher.hexdigest() == content_hash(data)
    assert is_content_hash(content_hash(data))


def test_small_data_keeps_its_plain_xxh3_and_large_data_is_hashed_as_leaves() -> None:
    small = os.urandom(values.LEAF_BYTES)
    assert content_hash(small) == xxhash.xxh3_128_hexdigest(small)
    large = os.urandom(values.LEAF_BYTES + 1)
    assert content_hash(large) != xxhash.xxh3_128_hexdigest(large)
    assert content_hash(large) != content_hash(large[:-1] + bytes([large[-1] ^ 1]))


def test_any_buffer_hashes_as_its_bytes() -> None:
    array = np.arange(3 * values.LEAF_BYTES // 8, dtype=np.float64).reshape(3, -1)
    assert content_hash(array) == content_hash(array.tobytes())
    assert content_hash(memoryview(array)) == content_hash(bytearray(array.tobytes()))


def test_verify_takes_either_form_of_a_large_blobs_id_and_refuses_a_changed_one() -> None:
    large = os.urandom(values.LEAF_BYTES * 2 + 3)
    verify(content_hash(large), large)
    verify(xxhash.xxh3_128_hexdigest(large), large)  # stored before ids hashed leaves
    changed = bytearray(large)
    changed[values.LEAF_BYTES + 1] ^= 1
    with pytest.raises(BlobCorruptError):
        verify(content_hash(large), changed)
