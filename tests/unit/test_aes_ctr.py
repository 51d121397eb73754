"""WinZipCtr against pycryptodome's little-endian AES-CTR (pyzipper's cipher): the same bytes, whatever the chunking."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from Cryptodome.Cipher import AES
from Cryptodome.Util import Counter

from backup_ops.core.aes_ctr import WinZipCtr


def _reference(key: bytes, data: bytes) -> bytes:
    return AES.new(key, AES.MODE_CTR, counter=Counter.new(nbits=128, little_endian=True)).encrypt(data)


@pytest.mark.parametrize("key_bytes", [16, 24, 32])
def test_same_stream_as_pycryptodome_for_any_chunking(key_bytes: int) -> None:
    rng = random.Random(key_bytes)
    for _ in range(20):
        key = os.urandom(key_bytes)
        data = os.urandom(rng.randint(0, 200_000))
        cipher, out, position = WinZipCtr(key), [], 0
        while position < len(data):
            step = rng.choice([1, 2, 15, 16, 17, 33, 4096, 65_537, 100_000])
            out.append(cipher.encrypt(data[position:position + step]))
            position += step
        assert b"".join(out) == _reference(key, data)


def test_decrypt_inverts_encrypt_and_empty_input_is_empty() -> None:
    key = os.urandom(32)
    data = os.urandom(50_000)
    assert WinZipCtr(key).encrypt(b"") == b""
    sealed = WinZipCtr(key).encrypt(data)
    assert sealed != data
    assert WinZipCtr(key).decrypt(sealed[:7]) + WinZipCtr(key).decrypt(sealed)[7:] == data


def test_returned_bytes_are_not_overwritten_by_the_next_call() -> None:
    # pyzipper keeps what decrypt returned while it decrypts the next chunk.
    key = os.urandom(16)
    data = os.urandom(3 * 4096)
    cipher = WinZipCtr(key)
    first = cipher.decrypt(data[:4096])
    kept = bytes(first)
    cipher.decrypt(data[4096:])
    assert first == kept == _reference(key, data)[:4096]


def test_refuses_a_key_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        WinZipCtr(b"short")


def test_counters_past_the_first_65536_blocks_carry_into_the_high_bytes() -> None:
    # The template covers 65,536 blocks (1 MiB); later counters XOR their high part in.
    key = os.urandom(32)
    data = os.urandom(3 * 1024 * 1024 + 100)
    cipher = WinZipCtr(key)
    cuts = [0, 1_048_560, 1_048_577, 2_097_100, 2_097_200, len(data)]
    out = b"".join(cipher.encrypt(data[a:b]) for a, b in itertools.pairwise(cuts))
    assert out == _reference(key, data)
