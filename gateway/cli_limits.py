"""CLI verbs for plans, an organisation's plan, key limits and key rotation: the same service functions
as the admin API (``gateway plans ...``, ``gateway orgs ...``, ``gateway keys rotate|limits ...``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

import typer

from gateway.config import Settings

plans_app = typer.Typer(help="Rate-limit plans", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations", no_args_is_help=True)

Limit = Annotated[int | None, typer.Option(min=1)]


@contextlib.asynccontextmanager
async def _services() -> AsyncIterator[tuple[Any, Any]]:
    from gateway.db import engine as db
    from gateway.services.keys import KeyService
    from gateway.services.plans import PlanService

    settings = Settings()
    await db.upgrade(settings.sqlalchemy_url)
    engine = db.make_engine(settings.sqlalchemy_url)
    sessions = db.sessionmaker(engine)
    try:
        yield KeyService(sessions), PlanService(sessions)
    finally:
        await engine.dispose()


def _run(work: Callable[[Any, Any], Coroutine[Any, Any, str]]) -> None:
    from gateway.services.keys import Conflict, NotFound
    from gateway.services.plans import PlanConflict, PlanNotFound

    async def main() -> str:
        async with _services() as (keys, plans):
            return await work(keys, plans)

    try:
        typer.echo(asyncio.run(main()))
    except (NotFound, PlanNotFound, Conflict, PlanConflict, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


@plans_app.command("create")
def plans_create(
    name: Annotated[str, typer.Argument(help="Plan name")],
    rpm: Limit = None, tpm: Limit = None, tpd: Limit = None, concurrency: Limit = None,
    key_rpm: Limit = None, key_tpm: Limit = None, key_tpd: Limit = None, key_concurrency: Limit = None,
    fail_closed: Annotated[bool, typer.Option(help="Answer 503 while Redis is down (default: fail open)")] = False,
) -> None:
    """Create a plan: limits on the whole organisation and default limits on each of its keys."""
    async def work(_: Any, plans: Any) -> str:
        p = await plans.create(name, fail_open=not fail_closed, rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency,
                               key_rpm=key_rpm, key_tpm=key_tpm, key_tpd=key_tpd, key_concurrency=key_concurrency)
        return str(p.id)

    _run(work)


@plans_app.command("list")
def plans_list() -> None:
    """List plans: id, name, rpm, tpm, tpd, concurrency, per-key defaults, outage behaviour."""
    async def work(_: Any, plans: Any) -> str:
        rows = [f"{p.id}\t{p.name}\trpm={_fmt(p.rpm)}\ttpm={_fmt(p.tpm)}\ttpd={_fmt(p.tpd)}\t"
                f"concurrency={_fmt(p.concurrency)}\tkey_rpm={_fmt(p.key_rpm)}\tkey_tpm={_fmt(p.key_tpm)}\t"
                f"key_tpd={_fmt(p.key_tpd)}\tkey_concurrency={_fmt(p.key_concurrency)}\t"
                f"{'fail-open' if p.fail_open else 'fail-closed'}" for p in await plans.list()]
        return "\n".join(rows)

    _run(work)


@plans_app.command("delete")
def plans_delete(plan: Annotated[str, typer.Argument(help="Plan id or name")]) -> None:
    """Delete a plan no organisation uses."""
    async def work(_: Any, plans: Any) -> str:
        await plans.delete(plan)
        return f"deleted {plan}"

    _run(work)


@orgs_app.command("set-plan")
def orgs_set_plan(
    org: Annotated[str, typer.Argument(help="Organisation id or name (created if missing)")],
    plan: Annotated[str, typer.Argument(help="Plan id or name; 'none' for unlimited")],
) -> None:
    """Put an organisation on a plan."""
    async def work(keys: Any, plans: Any) -> str:
        orgs = {o.name: o.id for o in await keys.list_orgs()}
        org_id = org if org in orgs.values() else orgs.get(org) or (await keys.get_or_create_org(org)).id
        await plans.assign(org_id, None if plan == "none" else plan)
        return f"{org_id}\t{plan}"

    _run(work)


@orgs_app.command("list")
def orgs_list() -> None:
    """List organisations and their plans."""
    async def work(keys: Any, _: Any) -> str:
        return "\n".join(f"{o.id}\t{o.name}\tplan={o.plan_id or '-'}" for o in await keys.list_orgs())

    _run(work)


def keys_rotate(
    key_id: Annotated[str, typer.Argument()],
    overlap: Annotated[float, typer.Option(help="Seconds the old secret stays valid")] = 3600.0,
) -> None:
    """Rotate a key: print a new secret for the same key; the old one expires after the overlap."""
    async def work(keys: Any, _: Any) -> str:
        created = await keys.rotate_key(key_id, overlap)
        return f"{created.view.id}\n{created.key}"

    _run(work)


def keys_limits(
    key_id: Annotated[str, typer.Argument()],
    rpm: Limit = None, tpm: Limit = None, tpd: Limit = None, concurrency: Limit = None,
    clear: Annotated[bool, typer.Option(help="Clear the key's own limits (the plan's apply)")] = False,
) -> None:
    """Set a key's own limits (they can only tighten its plan's)."""
    async def work(keys: Any, _: Any) -> str:
        if clear:
            changes: dict[str, int | None] = {"rpm": None, "tpm": None, "tpd": None, "concurrency": None}
        else:
            changes = {k: v for k, v in {"rpm": rpm, "tpm": tpm, "tpd": tpd, "concurrency": concurrency}.items()
                       if v is not None}
        k = await keys.update_key(key_id, changes)
        return (f"{k.id}\trpm={_fmt(k.limits.rpm)}\ttpm={_fmt(k.limits.tpm)}\ttpd={_fmt(k.limits.tpd)}\t"
                f"concurrency={_fmt(k.limits.concurrency)}")

    _run(work)


def register(app: typer.Typer, keys_app: typer.Typer) -> None:
    app.add_typer(plans_app, name="plans")
    app.add_typer(orgs_app, name="orgs")
    keys_app.command("rotate")(keys_rotate)
    keys_app.command("limits")(keys_limits)
