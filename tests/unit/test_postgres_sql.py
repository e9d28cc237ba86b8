"""The stores write one SQL dialect; the PostgreSQL connection respells only what PostgreSQL needs.

(Every statement is also run against a real PostgreSQL server by the memory and HTTP suites; these pin
the rules themselves.)"""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from driftrec.config import Settings
from driftrec.memory.db import open_database_url
from driftrec.memory.postgres import asyncpg_arguments, numbered, redact, translate


def test_placeholders_and_the_user_column_are_respelled_outside_literals() -> None:
    assert translate("SELECT body FROM summaries WHERE user = ? AND applied = 0") == (
        'SELECT body FROM summaries WHERE "user" = %s AND applied = 0'
    )
    assert translate("ON CONFLICT(user) DO UPDATE SET version = excluded.version") == (
        'ON CONFLICT("user") DO UPDATE SET version = excluded.version'
    )
    # a literal keeps its text: the role 'user', a question mark; a percent sign is doubled when psycopg will
    # read placeholders (it does not parse literals), kept as is when the statement has no parameters
    sql = "SELECT 1 FROM chat_turns WHERE role = 'user' AND content = 'why?' AND x LIKE 'a%' AND y = ?"
    assert translate(sql) == (
        "SELECT 1 FROM chat_turns WHERE role = 'user' AND content = 'why?' AND x LIKE 'a%%' AND y = %s"
    )
    assert translate("SELECT 1 WHERE x LIKE 'a%'", parameters=False) == "SELECT 1 WHERE x LIKE 'a%'"
    # names that merely contain "user" are not columns called user
    assert translate("SELECT users, user_id, current_user FROM api_keys_user") == (
        "SELECT users, user_id, current_user FROM api_keys_user"
    )
    assert translate('SELECT "user" FROM events') == 'SELECT "user" FROM events'  # already quoted


def test_the_asynchronous_driver_gets_numbered_placeholders() -> None:
    sql = "SELECT COUNT(*) FROM events WHERE user = ? AND ts >= ? AND note <> 'why?' AND role = 'user'"
    assert numbered(sql) == (
        "SELECT COUNT(*) FROM events WHERE \"user\" = $1 AND ts >= $2 AND note <> 'why?' AND role = 'user'"
    )
    assert numbered("SELECT 1 WHERE x LIKE 'a%' AND y = ?") == "SELECT 1 WHERE x LIKE 'a%' AND y = $1"


def test_the_asynchronous_reads_connect_where_libpq_would_or_not_at_all() -> None:
    # a local server's socket directory (what pgserver gives), parsed by libpq's own rules
    assert asyncpg_arguments("postgresql://postgres:@/postgres?host=/tmp/pg") == {
        "user": "postgres",
        "database": "postgres",
        "host": "/tmp/pg",
    }
    tls = "postgresql://app:p%40ss@db.example:5433/driftrec?sslmode=verify-full&connect_timeout=5&application_name=api"
    assert asyncpg_arguments(tls) == {
        "user": "app",
        "password": "p@ss",  # percent-decoded, as libpq does
        "host": "db.example",
        "port": 5433,
        "database": "driftrec",
        "ssl": "verify-full",
        "server_settings": {"application_name": "api"},
    }
    # what asyncpg cannot take the same way: the reads stay on psycopg, in worker threads
    assert asyncpg_arguments("postgresql://app@db/driftrec?sslcert=/etc/client.crt") is None
    assert asyncpg_arguments("postgresql://app@db/driftrec?options=-c%20search_path%3Dx") is None
    assert asyncpg_arguments("postgresql://app@db1,db2/driftrec") is None


def test_passwords_never_reach_logs() -> None:
    assert redact("postgresql://app:s3cret@db:5432/driftrec") == "postgresql://app:***@db:5432/driftrec"
    assert redact("postgresql://app@db/driftrec") == "postgresql://app@db/driftrec"


def test_the_database_url_is_checked_and_kept_secret() -> None:
    with pytest.raises(ValidationError, match="database_url"):
        Settings(database_url=SecretStr("mysql://x"))
    shown = Settings(database_url=SecretStr("postgresql://app:s3cret@db/d")).model_dump_json()
    assert "s3cret" not in shown
    with pytest.raises(ValueError, match="database_url"):
        open_database_url("oracle://x", None)  # type: ignore[arg-type]


def test_one_schema_text_serves_both_backends() -> None:
    from driftrec.memory.db import SCHEMA
    from driftrec.memory.postgres import MIGRATIONS, postgres_ddl

    assert MIGRATIONS[3] == postgres_ddl(SCHEMA)  # a new database starts at SQLite's v4 schema
    assert MIGRATIONS[4] == 'CREATE INDEX IF NOT EXISTS events_user_seq ON events ("user", seq)'
    ddl = postgres_ddl("CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, ts REAL, n INTEGER, v BLOB)")
    assert ddl == (
        'CREATE TABLE t (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "user" TEXT, ts DOUBLE PRECISION, '
        "n BIGINT, v BYTEA)"
    )
