"""A failing statement's parameters stay out of exception texts and logs."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError


def test_failed_statements_do_not_carry_their_parameters(engine: Engine) -> None:
    """SQLAlchemy puts a failed statement's parameters into the exception text, which the
    gateway logs (and the refresh loop logs with its traceback). Parameters include
    password hashes (rehash on login, activation), TOTP secrets (sealed) and session
    ids; the engine now hides them, keeping the statement itself for diagnosis."""
    secret = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LWhhc2gtdmFsdWU"
    with pytest.raises(DBAPIError) as caught, engine.connect() as connection:
        connection.execute(text("UPDATE no_such_table SET password_hash = :hash"), {"hash": secret})
    message = str(caught.value)
    assert "no_such_table" in message  # still says what failed
    assert secret not in message
