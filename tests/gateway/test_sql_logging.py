"""A failed SQL statement never carries its parameters into a log line (an organisation's cache salt, a key's
secret hash, a partner's end-user ids), on PostgreSQL and SQLite, through SQLAlchemy and the ledger's raw
driver path."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from billing.ledger.writer import LedgerWriter
from billing.usage_record import UsageRecord
from gateway.config import Settings
from gateway.db import engine as db
from gateway.db.gateway_tables import ApiKey, Organization
from gateway.services.keys import Conflict, KeyService, hash_secret
from tests.conftest import Backend

log = logging.getLogger("gateway.test")


async def test_a_failed_insert_logs_no_parameters(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    url = Settings(database_url=backend.database_url).sqlalchemy_url
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        keys = KeyService(db.sessionmaker(engine))
        org = await keys.create_org("logs-" + secrets.token_hex(3))
        created = await keys.create_key(org.id, "k")
        salt, secret_hash = secrets.token_hex(16), hash_secret("a-secret-" + secrets.token_hex(8))
        with caplog.at_level(logging.DEBUG):
            async with db.sessionmaker(engine)() as s:  # the organisation's name is taken
                s.add(Organization(id="org_" + secrets.token_hex(8), name=org.name, cache_salt=salt,
                                   cache_isolation=True, created_at=datetime.now(UTC)))
                with pytest.raises(IntegrityError) as dup_org:
                    await s.commit()
            log.error("insert failed: %s", dup_org.value, exc_info=dup_org.value)
            async with db.sessionmaker(engine)() as s:  # no name: PostgreSQL's DETAIL quotes the failing row
                s.add(Organization(id="org_" + secrets.token_hex(8), name=None, cache_salt=salt,
                                   cache_isolation=True, created_at=datetime.now(UTC)))
                with pytest.raises(IntegrityError) as no_name:
                    await s.commit()
            log.error("insert failed: %s", no_name.value, exc_info=no_name.value)
            async with db.sessionmaker(engine)() as s:  # the key's lookup is taken
                s.add(ApiKey(id="key_" + secrets.token_hex(8), org_id=org.id, name="dup",
                             lookup=created.view.prefix.removeprefix("sk-gw-"), secret_hash=secret_hash,
                             created_at=datetime.now(UTC)))
                with pytest.raises(IntegrityError) as dup_key:
                    await s.commit()
            log.exception("insert failed", exc_info=dup_key.value)
            if backend.name == "shared":  # a value of the wrong type: asyncpg's message quotes it
                async with db.sessionmaker(engine)() as s:
                    s.add(ApiKey(id="key_" + secrets.token_hex(8), org_id=org.id, name="typo",
                                 lookup=secrets.token_hex(8), secret_hash=secret_hash, created_at=datetime.now(UTC),
                                 rpm=salt))
                    with pytest.raises(DBAPIError) as wrong_type:
                        await s.commit()
                log.error("insert failed: %s", wrong_type.value, exc_info=wrong_type.value)
            with pytest.raises(Conflict) as conflict:  # the service's own insert, chained to the driver's error
                await keys.create_org(org.name)
            log.error("create failed", exc_info=conflict.value)
        assert "INSERT INTO" in caplog.text  # the statements are logged ...
        for secret in (salt, secret_hash):
            assert secret not in caplog.text  # ... never their values
        assert "[parameters:" not in caplog.text
    finally:
        await engine.dispose()


def _record(end_user: object) -> UsageRecord:
    return UsageRecord(request_id="req_" + secrets.token_hex(6), org_id="org", key_id="key", model="m",
                       requested_model="m", worker="w", prompt_tokens=1, cached_tokens=0, output_tokens=1,
                       reasoning_tokens=0, list_ticks=0, billed_ticks=0, plan="", started_at_ms=1_700_000_000_000,
                       ttfb_ms=0, duration_ms=0, status="ok", http_status=200, reported=True, stream=False,
                       end_user=end_user)  # type: ignore[arg-type]


async def test_a_failed_ledger_batch_logs_no_values(pg_database: str, caplog: pytest.LogCaptureFixture) -> None:
    """The PostgreSQL batch goes through asyncpg directly, whose message quotes the whole offending column."""
    url = Settings(database_url=pg_database).sqlalchemy_url
    await db.upgrade(url)
    engine = db.make_engine(url)
    end_user = "end-user-" + secrets.token_hex(6)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(SQLAlchemyError) as failed:
            await LedgerWriter(engine).write([_record(end_user), _record(424242)])  # one record is broken
        log.error("ledger write failed: %s", failed.value, exc_info=failed.value)
        assert "end_user" in caplog.text  # which column failed is told ...
        assert end_user not in caplog.text  # ... not what the batch held
        async with engine.begin() as conn:  # a constraint PostgreSQL reports with the failing row in its DETAIL
            await conn.exec_driver_sql("ALTER TABLE usage_ledger ADD CONSTRAINT test_no_minus CHECK (ttfb_ms >= 0)")
        broken = _record(end_user)
        broken.ttfb_ms = -1
        try:
            with pytest.raises(SQLAlchemyError) as failed:
                await LedgerWriter(engine).write([broken])
        finally:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("ALTER TABLE usage_ledger DROP CONSTRAINT test_no_minus")
        log.error("ledger write failed: %s", failed.value, exc_info=failed.value)
        assert "test_no_minus" in caplog.text and end_user not in caplog.text
    finally:
        await engine.dispose()
