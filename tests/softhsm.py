"""A real SoftHSM2 token in a folder of its own, for the tests and the benchmark.

SoftHSM reads ``SOFTHSM2_CONF`` once, when the PKCS#11 module is first initialised in a
process, so one token directory serves a whole test session; every CA key in it has a
random CKA_ID, so tests sharing the token never see each other's keys.

The token is initialised with ``softhsm2-util`` (the step docs/operations.md describes),
whose only non-interactive way takes PINs as arguments. Those are throwaway values: the
user PIN is changed at once through PKCS#11 (C_SetPIN) to the one the tests use, which
reaches brokergate only through the environment or a file, as in production.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Where Debian's softhsm2 package puts the module (the first one is the documented path).
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "brokergate-test"


def softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 module's path, or None when softhsm2 is not installed."""
    if shutil.which("softhsm2-util") is None:
        return None
    return next((path for path in MODULE_CANDIDATES if Path(path).is_file()), None)


@dataclass(frozen=True, kw_only=True)
class SoftHsmToken:
    module: str
    label: str
    config: Path
    pin: str = field(repr=False)

    def env(self) -> dict[str, str]:
        """What a subprocess needs to find the token (the PIN is passed separately)."""
        return {"SOFTHSM2_CONF": str(self.config)}


def make_token(folder: Path, module: str, label: str = TOKEN_LABEL) -> SoftHsmToken:
    """Initialise a fresh SoftHSM2 token under ``folder`` and point SOFTHSM2_CONF at it.

    Sets ``os.environ["SOFTHSM2_CONF"]`` for this process (SoftHSM has no other way to be
    told); call it before the first PKCS#11 use in the process.
    """
    tokens = folder / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    config = folder / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    initial = secrets.token_hex(8)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label,
         "--so-pin", secrets.token_hex(8), "--pin", initial],
        check=True, capture_output=True, timeout=60, env={**os.environ},
    )  # fmt: skip
    import pkcs11

    pin = secrets.token_urlsafe(16)
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=initial) as session:
        session.set_pin(initial, pin)
    return SoftHsmToken(module=module, label=label, config=config, pin=pin)


def private_keys(token: SoftHsmToken) -> dict[bytes, dict[str, bool]]:
    """Every private key in the token by CKA_ID, with its export-relevant attributes."""
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    found: dict[bytes, dict[str, bool]] = {}
    handle = pkcs11.lib(token.module).get_token(token_label=token.label)
    try:
        session = handle.open(user_pin=token.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        # A CA in this process holds the login (PKCS#11 logins are per process); a session
        # without one shares it, and closing it does not log that CA out.
        session = handle.open()
    with session as s:
        for key in s.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
            found[bytes(key[Attribute.ID])] = {
                "extractable": bool(key[Attribute.EXTRACTABLE]),
                "sensitive": bool(key[Attribute.SENSITIVE]),
                "never_extractable": bool(key[Attribute.NEVER_EXTRACTABLE]),
                "always_sensitive": bool(key[Attribute.ALWAYS_SENSITIVE]),
                "sign": bool(key[Attribute.SIGN]),
                "decrypt": bool(key[Attribute.DECRYPT]),
            }
    return found
