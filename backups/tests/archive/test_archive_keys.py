"""The archive's keys: rotation, configuration errors that fail closed, identity helpers, and the
escrow key (it decrypts but cannot authenticate). No database, no Django.
"""

import io
import json
import os

import pytest
from pyrage import x25519

from backups.archive import (
    ArchiveAuthError,
    ArchiveWrongKey,
    KeyConfigError,
    generate_identity,
    identity_public_key,
    open_archive,
    verify_archive,
    write_archive,
)
from backups.tests.archive.helpers import (
    ESCROW,
    K1,
    K2,
    MANIFEST,
    age_plaintext,
    doc_auth,
    doc_key_id,
    forge,
    make,
    read_all,
    tar_members,
)

# --- keys ------------------------------------------------------------------------------


def test_key_rotation():
    payload = os.urandom(3000)
    data, summary = make(payload, identities=[K1])
    assert read_all(data, identities=[K2, K1])[0] == payload
    with pytest.raises(ArchiveWrongKey, match="no longer has"):
        verify_archive(io.BytesIO(data), identities=[K2])
    # After rotation the first key encrypts and authenticates; the old one is only a fallback.
    data2, summary2 = make(payload, identities=[K2, K1])
    assert summary2.key_id == doc_key_id(K2) != summary.key_id
    assert verify_archive(io.BytesIO(data2), identities=[K2]).payload_sha256 == summary.payload_sha256
    with pytest.raises(ArchiveWrongKey):
        verify_archive(io.BytesIO(data2), identities=[K1])


def test_key_configuration_errors_fail_closed():
    class Untouchable:
        def read(self, n):
            raise AssertionError("the stream must not be read")

        def write(self, b):
            raise AssertionError("the output must not be written")

    for call in (
        lambda ids: write_archive(Untouchable(), Untouchable(), manifest=MANIFEST, identities=ids),
        lambda ids: open_archive(Untouchable(), identities=ids),
        lambda ids: verify_archive(Untouchable(), identities=ids),
    ):
        with pytest.raises(KeyConfigError, match="no archive key"):
            call([])
        bad = "AGE-SECRET-KEY-1NOTAREALKEYATALLQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
        with pytest.raises(KeyConfigError) as info:
            call([K1, bad])
        assert bad not in str(info.value) and "#2" in str(info.value)
        with pytest.raises(TypeError):
            call(K1)  # a bare string is not a list of keys
    with pytest.raises(KeyConfigError) as info:
        make(b"", extra=[ESCROW])  # a secret key where a public key belongs: not echoed
    assert ESCROW not in str(info.value)
    with pytest.raises(KeyConfigError):
        make(b"", extra=["age1notakey"])
    with pytest.raises(KeyConfigError):
        identity_public_key("not a key")


def test_identity_helpers_and_canonical_form():
    identity = generate_identity()
    assert identity.startswith("AGE-SECRET-KEY-1")
    assert identity_public_key(identity) == str(x25519.Identity.from_str(identity).to_public())
    assert identity_public_key(identity).startswith("age1")
    # Surrounding whitespace (a key read from a file) and lower case name the same key.
    data, summary = make(b"abc", identities=[f"  {identity.lower()}\n"])
    assert summary.key_id == doc_key_id(identity)
    assert read_all(data, identities=[identity])[0] == b"abc"


# --- escrow ----------------------------------------------------------------------------


def test_escrow_can_decrypt_but_not_authenticate():
    payload = os.urandom(2500)
    data, summary = make(payload, extra=[identity_public_key(ESCROW)])
    members = tar_members(age_plaintext(data, ESCROW))
    assert b"".join(b for n, b in members if n.startswith("payload/")) == payload
    with pytest.raises(ArchiveAuthError, match="key this deployment does not have"):
        verify_archive(io.BytesIO(data), identities=[ESCROW])
    assert verify_archive(io.BytesIO(data), identities=[K1]) == summary


def _escrow_tamper(auth_for):
    """The escrow holder decrypts, edits the payload and re-encrypts to the deployment's key."""
    data, _ = make(b"A" * 2500, extra=[identity_public_key(ESCROW)])
    members = tar_members(age_plaintext(data, ESCROW))
    members = [(n, b.replace(b"A", b"B", 1) if n == "payload/000002" else b) for n, b in members]
    body, auth = members[:-1], members[-1][1]
    return forge([*body, ("auth.json", auth_for(body, auth))], recipients=[K1, ESCROW])


@pytest.mark.parametrize(
    "auth_for",
    [
        pytest.param(lambda body, auth: auth, id="auth-unchanged"),
        pytest.param(lambda body, auth: doc_auth(body, ESCROW), id="mac-with-escrow-key"),
        pytest.param(lambda body, auth: doc_auth(body, ESCROW, key_id=doc_key_id(K1)), id="escrow-mac-deploy-keyid"),
        pytest.param(
            lambda body, auth: json.dumps(
                {**json.loads(doc_auth(body, ESCROW)), "key_id": doc_key_id(K1), "mac": json.loads(auth)["mac"]}
            ).encode(),
            id="hashes-updated-old-mac",
        ),
    ],
)
def test_escrow_tampering_is_refused(auth_for):
    forged = _escrow_tamper(auth_for)
    with pytest.raises(ArchiveAuthError):
        verify_archive(io.BytesIO(forged), identities=[K1])
