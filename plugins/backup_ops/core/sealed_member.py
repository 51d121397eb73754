"""A dump encrypted as it streams out of pg_dump: the archive member's encrypted bytes, staged ready to copy.

With an encrypted archive (``backup.encryption`` aes128/192/256), a plain dump compressed in-process and
staging in a bucket (``s3://``), the dump step writes the dump already encrypted, exactly as the dump's
member will hold it in the zip:

====================  =============================================================
salt                  8, 12 or 16 bytes (AES-128/192/256), fresh and random
password verifier     2 bytes (PBKDF2-HMAC-SHA1 of the password and salt, 1000 rounds)
ciphertext            AES-CTR (WinZip's little-endian counter) of the compressed dump:
                      as many bytes as the compressed dump
authentication code   10 bytes: HMAC-SHA1 of the ciphertext, truncated
====================  =============================================================

That is a WinZip AES (AE-2) stored member's data, so the archive step copies it behind the member's
local header without decrypting or encrypting anything (``core.archive``), checking its authentication
code as it copies (the code was computed here, not by the archive's writer). The dump step hashes the
compressed bytes before encrypting them (the manifest's sha256); the archive's verification decrypts
the member with the configured password and compares that sha256, as for every member.

So the bucket never holds the dump in the clear. Local staging does not seal (``backup_steps.dump_job``):
the dump's thread shares the two busy cores with pg_dump and its server, and the encryption made the
dump as much slower as it made the archive step faster.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from backup_ops.core.aes_ctr import WinZipCtr
from backup_ops.core.aes_keys import SALT_BYTES, VERIFIER_BYTES, derive_key, derive_key_for_salt

SEALED_SUFFIX = ".aes"
"""Added to a sealed dump's staged file name (``postgresql-app.sql.gz.aes``): its bytes are not gzip's."""

HMAC_BYTES = 10


def sealed_overhead(nbits: int) -> int:
    """Bytes a sealed file has beyond the compressed dump: salt, password verifier, authentication code."""
    return SALT_BYTES[nbits] + VERIFIER_BYTES + HMAC_BYTES


def header_length(nbits: int) -> int:
    """Bytes before the ciphertext: salt and password verifier."""
    return SALT_BYTES[nbits] + VERIFIER_BYTES


class MemberSealer:
    """Encrypts one member's bytes as they stream: ``header`` first, then ``seal`` each piece, then ``trailer``."""

    def __init__(self, password: bytes, nbits: int) -> None:
        key = derive_key(password, nbits)
        key_bytes = nbits // 8
        self.nbits = nbits
        self.header = key.salt + key.material[2 * key_bytes:]
        self._cipher = WinZipCtr(key.material[:key_bytes])
        self._mac = hmac.new(key.material[key_bytes:2 * key_bytes], digestmod="sha1")

    def seal(self, data: bytes) -> bytearray:
        """The encrypted bytes of the next piece, authenticated as they are returned."""
        sealed = self._cipher.encrypt(data)
        self._mac.update(sealed)
        return sealed

    def trailer(self) -> bytes:
        """The authentication code of everything sealed; call it once, after the last piece."""
        return self._mac.digest()[:HMAC_BYTES]


def password_matches(header: bytes, password: bytes, nbits: int) -> bool:
    """Whether a sealed member's ``header`` (salt and verifier) was made with ``password`` at ``nbits``."""
    return sealed_mac(header, password, nbits) is not None


def sealed_mac(header: bytes, password: bytes, nbits: int) -> Any | None:
    """A fresh HMAC-SHA1 to check a sealed member's code with, keyed from ``password`` and the ``header``'s salt;
    None when the header's verifier says another password (or key size) made it."""
    salt_bytes = SALT_BYTES[nbits]
    if len(header) != salt_bytes + VERIFIER_BYTES:
        return None
    material = derive_key_for_salt(password, header[:salt_bytes], nbits).material
    key_bytes = nbits // 8
    if not hmac.compare_digest(material[2 * key_bytes:], header[salt_bytes:]):
        return None
    return hmac.new(material[key_bytes:2 * key_bytes], digestmod="sha1")


@dataclass(frozen=True)
class Sealing:
    """What the dump step seals with: the archive's password and key size (``backup.encryption``)."""

    password: bytes = field(repr=False)
    nbits: int

    def __post_init__(self) -> None:
        if self.nbits not in SALT_BYTES or not self.password:
            raise ValueError("Sealing needs a password and a key size of 128, 192 or 256 bits.")
