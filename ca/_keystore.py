"""Where the CA private keys live: encrypted in the store (default) or in a PKCS#11 token.

Two backends behind one seam, :class:`KeyBackend`:

- :class:`FileKeyBackend`: the key is made here and kept in the store as PKCS#8,
  encrypted with ``ca.passphrase`` (``key_pem_encrypted``), as brokergate always did.
- :class:`Pkcs11KeyBackend`: the key pair is generated inside the token (CKA_EXTRACTABLE
  false, CKA_SENSITIVE true), never leaves it, and the store keeps only its RFC 7512
  PKCS#11 URI (``key_uri``). Signing happens in the token.

Both hand out a ``cryptography`` private key object. For a token key that is
:class:`TokenRSAKey` or :class:`TokenECKey`: subclasses of cryptography's key interfaces
whose ``sign`` calls the token and which refuse every export. cryptography's X.509 builders
call ``sign`` on such an object with the DER to-be-signed bytes (the pattern its
maintainers point to for HSM and KMS keys, pyca/cryptography#11616), so the certificate and
CRL builders are the same for both backends, and what they produce is checked by openssl
and pkilint in the tests.

:class:`CAKeys` picks the backend: new keys go to the configured one (``ca.key_store``);
an existing key is opened from wherever its row says it lives, so a CA can move from key
files into a token by rotation without a flag day.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import quote, unquote, unquote_to_bytes

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from ca._errors import KeyStoreError, WrongTokenPin
from ca._keys import PrivateKey, decrypt_key, encrypt_key, generate_key
from ca._settings import CASettings, KeyType

if TYPE_CHECKING:
    import pkcs11

_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
_CURVES: dict[str, tuple[str, ec.EllipticCurve]] = {
    "ec-p256": ("secp256r1", ec.SECP256R1()),
    "ec-p384": ("secp384r1", ec.SECP384R1()),
}
# CKA_ID of a new token key: random, so two CAs (or a test run) sharing a token never
# collide; the label is for people, the ID is the reference.
_KEY_ID_BYTES = 16


@dataclass(frozen=True, kw_only=True)
class NewKey:
    """A fresh CA key and what the store keeps to find it again (exactly one is set)."""

    key: PrivateKey
    pem_encrypted: str | None = field(default=None, repr=False)
    uri: str | None = None


class KeyBackend(Protocol):
    """Makes CA keys and opens them again."""

    def generate(self, key_type: KeyType, label: str) -> NewKey: ...


@dataclass(frozen=True)
class FileKeyBackend:
    """CA keys as passphrase-encrypted PKCS#8 in the store (the default)."""

    passphrase: str = field(repr=False)

    def generate(self, key_type: KeyType, label: str) -> NewKey:
        key = generate_key(key_type)
        return NewKey(key=key, pem_encrypted=encrypt_key(key, self.passphrase))

    def open(self, pem_encrypted: str) -> PrivateKey:
        return decrypt_key(pem_encrypted, self.passphrase)


# --- PKCS#11 -------------------------------------------------------------------------------


def key_uri(*, token_label: str, key_id: bytes, label: str) -> str:
    """The RFC 7512 URI of a private key in a token (what the store keeps)."""
    pct_id = "".join(f"%{b:02x}" for b in key_id)
    return (
        f"pkcs11:token={quote(token_label, safe='')};object={quote(label, safe='')};"
        f"id={pct_id};type=private"
    )


@dataclass(frozen=True, kw_only=True)
class TokenKeyRef:
    token_label: str
    key_id: bytes
    label: str


def parse_key_uri(uri: str) -> TokenKeyRef:
    """Read back what :func:`key_uri` wrote (token, id, object; RFC 7512 §2.3)."""
    if not uri.startswith("pkcs11:"):
        raise KeyStoreError(f"not a PKCS#11 URI: {uri!r}")
    attrs: dict[str, str] = {}
    for part in uri.removeprefix("pkcs11:").split("?")[0].split(";"):
        name, _, value = part.partition("=")
        attrs[name] = value
    if "token" not in attrs or "id" not in attrs:
        raise KeyStoreError(f"PKCS#11 URI {uri!r} names no token or no id")
    return TokenKeyRef(
        token_label=unquote(attrs["token"]),
        key_id=unquote_to_bytes(attrs["id"]),
        label=unquote(attrs.get("object", "")),
    )


class Pkcs11KeyBackend:
    """CA keys generated in, kept in and used inside one PKCS#11 token.

    Owns one logged-in read/write session, opened at first use and kept for the life of
    this object (PKCS#11 logins are per application; re-logging in for each signature
    would cost more than the signature). Every call into the token holds ``_lock``:
    a PKCS#11 session must not be used by two threads at once (PKCS#11 v2.40 §5.6).
    """

    def __init__(self, *, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._lock = threading.RLock()
        self._session: pkcs11.Session | None = None
        # Private key handles of the open session, by CKA_ID (a handle dies with its session).
        self._handles: dict[bytes, Any] = {}

    def __repr__(self) -> str:  # never the PIN
        return f"Pkcs11KeyBackend(module={self.module!r}, token_label={self.token_label!r})"

    # -- session ----------------------------------------------------------------------

    def _open_session(self) -> pkcs11.Session:
        import pkcs11
        from pkcs11 import exceptions as p11

        if not self._pin:
            raise KeyStoreError(
                f"no PIN for PKCS#11 token {self.token_label!r}; set "
                "BROKERGATE_CA__PKCS11_PIN or ca.pkcs11_pin_file"
            )
        try:
            lib = pkcs11.lib(self.module)
        except (RuntimeError, OSError) as exc:
            raise KeyStoreError(
                f"cannot load the PKCS#11 module {self.module!r} ({exc}); check "
                "ca.pkcs11_module (e.g. /usr/lib/softhsm/libsofthsm2.so from softhsm2)"
            ) from None
        try:
            token = lib.get_token(token_label=self.token_label)
        except p11.NoSuchToken:
            raise KeyStoreError(
                f"no PKCS#11 token labelled {self.token_label!r} in {self.module}; check "
                "ca.pkcs11_token_label ('softhsm2-util --show-slots' lists SoftHSM's tokens)"
            ) from None
        except p11.MultipleTokensReturned:
            raise KeyStoreError(
                f"more than one PKCS#11 token is labelled {self.token_label!r}; give the "
                "CA's token a label of its own"
            ) from None
        try:
            return token.open(rw=True, user_pin=self._pin)
        except p11.UserAlreadyLoggedIn:
            # PKCS#11 logins belong to the process, not the session (v2.40 §5.6): another CA
            # object here logged in already, and a session without a login shares it.
            return token.open(rw=True)
        except (p11.PinIncorrect, p11.PinLenRange):
            raise WrongTokenPin(self.token_label) from None
        except p11.PinLocked:
            raise KeyStoreError(
                f"the user PIN of PKCS#11 token {self.token_label!r} is locked; the token's "
                "security officer must reset it"
            ) from None

    def _call(self, action: Callable[[pkcs11.Session], Any]) -> Any:
        """Run ``action`` with the session, reopening it once if the token dropped it."""
        from pkcs11 import exceptions as p11

        with self._lock:
            for attempt in (1, 2):
                if self._session is None:
                    self._session = self._open_session()
                    self._handles.clear()
                try:
                    return action(self._session)
                except (p11.SessionHandleInvalid, p11.SessionClosed, p11.UserNotLoggedIn):
                    self._session = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Log out and close the session (optional: process exit does the same)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
                self._handles.clear()

    # -- keys -------------------------------------------------------------------------

    def generate(self, key_type: KeyType, label: str) -> NewKey:
        """A key pair generated inside the token: private half sign-only, sensitive and
        never extractable (checked after generation, since a token may ignore a template)."""
        from pkcs11 import Attribute, MechanismFlag
        from pkcs11 import KeyType as P11KeyType
        from pkcs11.util.ec import encode_named_curve_parameters

        key_id = os.urandom(_KEY_ID_BYTES)
        # SECURITY: the private key must never leave the token (issue 12).
        private_template = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
        }
        capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY

        def make(session: pkcs11.Session) -> tuple[Any, Any]:
            if key_type in _RSA_BITS:
                return session.generate_keypair(
                    P11KeyType.RSA,
                    _RSA_BITS[key_type],
                    id=key_id,
                    label=label,
                    store=True,
                    capabilities=capabilities,
                    private_template=private_template,
                    public_template={Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                )
            params = session.create_domain_parameters(
                P11KeyType.EC,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type][0])},
                local=True,
            )
            return params.generate_keypair(
                id=key_id,
                label=label,
                store=True,
                capabilities=capabilities,
                private_template=private_template,
            )

        self._call(make)
        uri = key_uri(token_label=self.token_label, key_id=key_id, label=label)
        return NewKey(key=self.open(uri), uri=uri)

    def open(self, uri: str) -> PrivateKey:
        """The token key that ``uri`` names, as a cryptography key object that signs in it.

        Raises:
            KeyStoreError: another token, no such key, or a key that could have left it.
        """
        from pkcs11 import Attribute, ObjectClass
        from pkcs11 import KeyType as P11KeyType
        from pkcs11 import exceptions as p11

        ref = parse_key_uri(uri)
        if ref.token_label != self.token_label:
            raise KeyStoreError(
                f"this CA key lives in PKCS#11 token {ref.token_label!r}, but "
                f"ca.pkcs11_token_label is {self.token_label!r}"
            )

        def find(session: pkcs11.Session) -> tuple[Any, Any]:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=ref.key_id)
            public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=ref.key_id)
            return private, public

        try:
            private, public = self._call(find)
        except p11.NoSuchKey:
            raise KeyStoreError(
                f"PKCS#11 token {self.token_label!r} holds no key {uri}; was the token "
                "re-initialised or another one given the same label?"
            ) from None
        # SECURITY: a key that was ever extractable may exist outside the token.
        flags = self._call(
            lambda _s: (
                private[Attribute.NEVER_EXTRACTABLE],
                private[Attribute.ALWAYS_SENSITIVE],
            )
        )
        if not all(flags):
            raise KeyStoreError(
                f"PKCS#11 key {uri} is or was extractable; brokergate uses only keys "
                "generated inside the token as non-extractable"
            )
        public_key = self._call(lambda _s: _public_key(public))
        if private.key_type == P11KeyType.RSA:
            assert isinstance(public_key, rsa.RSAPublicKey)
            return TokenRSAKey(backend=self, key_id=ref.key_id, public=public_key, uri=uri)
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        return TokenECKey(backend=self, key_id=ref.key_id, public=public_key, uri=uri)

    def destroy(self, uri: str) -> None:
        """Delete the key pair ``uri`` names (a key made for a step that then failed)."""
        from pkcs11 import Attribute

        ref = parse_key_uri(uri)

        def delete(session: pkcs11.Session) -> None:
            for obj in list(session.get_objects({Attribute.ID: ref.key_id})):
                obj.destroy()

        self._call(delete)

    def sign(self, key_id: bytes, data: bytes, mechanism: Any) -> bytes:
        """Sign ``data`` with the private key ``key_id`` inside the token."""
        from pkcs11 import ObjectClass

        def sign(session: pkcs11.Session) -> bytes:
            handle: Any = self._handles.get(key_id)
            if handle is None:
                handle = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=key_id)
                self._handles[key_id] = handle
            return bytes(handle.sign(data, mechanism=mechanism))

        return bytes(self._call(sign))


def _public_key(public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    from pkcs11 import KeyType as P11KeyType
    from pkcs11.util.ec import encode_ec_public_key
    from pkcs11.util.rsa import encode_rsa_public_key

    if public.key_type == P11KeyType.RSA:
        loaded = serialization.load_der_public_key(_pkcs1_to_spki(encode_rsa_public_key(public)))
    else:
        loaded = serialization.load_der_public_key(encode_ec_public_key(public))
    assert isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return loaded


def _pkcs1_to_spki(pkcs1: bytes) -> bytes:
    from asn1crypto import keys

    return bytes(
        keys.PublicKeyInfo(
            {
                "algorithm": {"algorithm": "rsa", "parameters": None},
                "public_key": keys.RSAPublicKey.load(pkcs1),
            }
        ).dump()
    )


def _no_export(what: str) -> NoReturn:
    # SECURITY: a token key has no private bytes here to hand out.
    raise TypeError(f"{what}: the CA key lives in a PKCS#11 token and cannot be exported")


class TokenRSAKey(rsa.RSAPrivateKey):
    """An RSA CA key inside a token: signs (PKCS#1 v1.5) there, exports nothing."""

    def __init__(
        self, *, backend: Pkcs11KeyBackend, key_id: bytes, public: rsa.RSAPublicKey, uri: str
    ) -> None:
        self._backend = backend
        self._key_id = key_id
        self._public = public
        self.uri = uri

    def sign(
        self,
        data: bytes,
        padding: padding.AsymmetricPadding,
        algorithm: object,  # Prehashed | HashAlgorithm | NoDigestInfo (cryptography >= 47)
    ) -> bytes:
        from pkcs11 import Mechanism

        mechanisms = {
            "sha256": Mechanism.SHA256_RSA_PKCS,
            "sha384": Mechanism.SHA384_RSA_PKCS,
            "sha512": Mechanism.SHA512_RSA_PKCS,
        }
        if not isinstance(padding, _PKCS1v15) or not isinstance(algorithm, hashes.HashAlgorithm):
            raise TypeError("token RSA keys sign with PKCS#1 v1.5 over the message only")
        if algorithm.name not in mechanisms:
            raise TypeError(f"token RSA keys do not sign with {algorithm.name}")
        return self._backend.sign(self._key_id, data, mechanisms[algorithm.name])

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise TypeError("CA keys are sign-only")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _no_export("private_numbers")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _no_export("private_bytes")

    def __copy__(self) -> TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenRSAKey:
        return self


class TokenECKey(ec.EllipticCurvePrivateKey):
    """An ECDSA CA key inside a token: signs there, exports nothing.

    PKCS#11 returns an ECDSA signature as raw r || s (PKCS#11 v2.40 §2.3.1); X.509 wants
    the DER ECDSA-Sig-Value (RFC 5480 §2.2.3 via RFC 3279), so it is re-encoded here. The
    digest is computed here and CKM_ECDSA signs it, which every token supports (the
    CKM_ECDSA_SHA* combined mechanisms are optional).
    """

    def __init__(
        self,
        *,
        backend: Pkcs11KeyBackend,
        key_id: bytes,
        public: ec.EllipticCurvePublicKey,
        uri: str,
    ) -> None:
        self._backend = backend
        self._key_id = key_id
        self._public = public
        self.uri = uri

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        from pkcs11 import Mechanism

        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("token EC keys sign ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, Prehashed):
            digest = bytes(data)
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(data)
            digest = hasher.finalize()
        raw = self._backend.sign(self._key_id, digest, Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise TypeError("CA keys are sign-only")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _no_export("private_numbers")

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _no_export("private_bytes")

    def __copy__(self) -> TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenECKey:
        return self


_PKCS1v15 = padding.PKCS1v15


# --- the CA's choice -----------------------------------------------------------------------


class CAKeys:
    """New CA keys into the configured backend; existing ones from where their row says."""

    def __init__(self, settings: CASettings) -> None:
        self._settings = settings
        self._file = FileKeyBackend(settings.passphrase)
        self._token: Pkcs11KeyBackend | None = None

    def _token_backend(self) -> Pkcs11KeyBackend:
        if self._token is None:
            s = self._settings
            if not (s.pkcs11_module and s.pkcs11_token_label):
                raise KeyStoreError(
                    "this CA key lives in a PKCS#11 token; set ca.pkcs11_module and "
                    "ca.pkcs11_token_label (and the PIN) to use it"
                )
            self._token = Pkcs11KeyBackend(
                module=s.pkcs11_module, token_label=s.pkcs11_token_label, pin=s.pkcs11_pin
            )
        return self._token

    @property
    def kind(self) -> str:
        return self._settings.key_store

    def generate(self, key_type: KeyType, label: str) -> NewKey:
        """A new CA key in the configured backend (``ca.key_store``)."""
        if self._settings.key_store == "pkcs11":
            return self._token_backend().generate(key_type, label)
        return self._file.generate(key_type, label)

    def open(self, *, pem_encrypted: str | None, uri: str | None) -> PrivateKey:
        """The key a row keeps: a token URI wins; else the encrypted PEM."""
        if uri:
            return self._token_backend().open(uri)
        if not pem_encrypted:
            raise KeyStoreError("this CA row keeps neither a key nor a PKCS#11 URI")
        return self._file.open(pem_encrypted)

    def discard(self, new: NewKey) -> None:
        """Undo :meth:`generate` for a key the store never kept (a file key needs nothing)."""
        if new.uri:
            self._token_backend().destroy(new.uri)

    def close(self) -> None:
        if self._token is not None:
            self._token.close()


def key_location(*, pem_encrypted: str | None, uri: str | None, row: str) -> str:
    """Where a CA key lives, for ``ca status``: the token and key id, or the store row."""
    if uri:
        ref = parse_key_uri(uri)
        return f"pkcs11 token {ref.token_label!r} id {ref.key_id.hex()} ({ref.label})"
    return f"file: encrypted PKCS#8 in the store ({row})"
