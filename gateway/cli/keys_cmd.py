"""``gateway keys ...``: create, list, revoke, rotate API keys and set their own limits, through the same
KeyService as the admin API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from gateway.cli.context import ServiceContext, run_with_services
from gateway.cli.table import render_table
from gateway.services.keys import KeyLimits, KeyView

keys_app = typer.Typer(help="API keys", no_args_is_help=True)

Rpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="The key's own cap on requests per minute")]
Tpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="The key's own cap on tokens per minute")]
Tpd = Annotated[int | None, typer.Option(min=1, metavar="N", help="The key's own cap on tokens per day")]
Concurrency = Annotated[int | None, typer.Option(min=1, metavar="N", help="The key's own cap on requests in flight")]

_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: datetime) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from ``now``, or an ISO date or moment (naive: UTC)."""
    match = _DURATION.match(text.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a duration (30d, 12h, 90m, 2w) nor an ISO date "
                                 "(2030-01-31 or 2030-01-31T12:00:00+00:00)", param_hint="--expires") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise typer.BadParameter(f"{text!r} is in the past", param_hint="--expires")
    return moment


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


def _state(key: KeyView, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    expires = key.expires_at if key.expires_at is None or key.expires_at.tzinfo else key.expires_at.replace(tzinfo=UTC)
    if expires is not None and expires <= now:
        return "expired"
    return "rotated" if key.replaced_by else "active"


@keys_app.command("create")
def keys_create(
    org: Annotated[str, typer.Option(help="Organisation name (created if missing)", metavar="NAME")],
    name: Annotated[str, typer.Option(help="Key name", metavar="NAME")] = "default",
    expires: Annotated[str | None, typer.Option(help="Expiry: a duration from now (30d, 12h, 90m, 2w) or an ISO "
                                                     "date (2030-01-31)", metavar="WHEN", show_default=False)] = None,
    rpm: Rpm = None, tpm: Tpm = None, tpd: Tpd = None, concurrency: Concurrency = None,
    manage_keys: Annotated[bool, typer.Option("--manage-keys", help="May manage its organisation's keys "
                                                                    "(/v1/organization/keys)")] = False,
    models: Annotated[str | None, typer.Option(help="The models it may use, comma-separated (default: any)",
                                               metavar="A,B")] = None,
) -> None:
    """Create an API key and print it (shown only this once). Limits can only tighten the organisation's plan."""
    expires_at = parse_expiry(expires, datetime.now(UTC)) if expires else None

    async def work(ctx: ServiceContext) -> str:
        created = await ctx.keys.create_key_for_org_name(org, name, expires_at,
                                                         limits=KeyLimits(rpm, tpm, tpd, concurrency),
                                                         manage_keys=manage_keys, models=model_list(models))
        return created.key

    typer.echo(run_with_services(work))


def model_list(text: str | None) -> list[str] | None:
    """``a,b`` as a list; None (any model) for no option or ``any``."""
    if text is None or text.strip().lower() == "any":
        return None
    return [m.strip() for m in text.split(",") if m.strip()]


@keys_app.command("models")
def keys_models(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    models: Annotated[str, typer.Argument(help="Comma-separated models (aliases too), or 'any'", metavar="A,B|any")],
) -> None:
    """Set the models a key may use (within its organisation's); every replica applies it within the key cache TTL."""
    async def work(ctx: ServiceContext) -> str:
        k = await ctx.keys.update_key(key_id, {"models": model_list(models)})
        return f"{k.id}\tmodels={','.join(k.models) if k.models is not None else 'any'}"

    typer.echo(run_with_services(work))


@keys_app.command("list")
def keys_list() -> None:
    """List API keys with their organisations (never their secrets)."""
    async def work(ctx: ServiceContext) -> str:
        orgs = {o.id: o.name for o in await ctx.keys.list_orgs()}
        now = datetime.now(UTC)
        rows = [[k.id, orgs.get(k.org_id, k.org_id), k.name, f"{k.prefix}…", _state(k, now),
                 k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "-",
                 " ".join(f"{n}={v}" for n, v in (("rpm", k.limits.rpm), ("tpm", k.limits.tpm), ("tpd", k.limits.tpd),
                                                  ("concurrency", k.limits.concurrency)) if v is not None) or "-"]
                for k in await ctx.keys.list_keys()]
        return render_table(["ID", "ORGANISATION", "NAME", "PREFIX", "STATE", "EXPIRES", "OWN LIMITS"], rows)

    typer.echo(run_with_services(work))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]) -> None:
    """Revoke an API key (every replica stops accepting it within the key cache TTL)."""
    async def work(ctx: ServiceContext) -> str:
        await ctx.keys.revoke_key(key_id)
        return f"revoked {key_id}"

    typer.echo(run_with_services(work))


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    overlap: Annotated[float, typer.Option(help="Seconds the old secret stays valid", metavar="SECONDS")] = 3600.0,
) -> None:
    """Rotate a key: print a new secret for the same key; the old one expires after the overlap."""
    async def work(ctx: ServiceContext) -> str:
        created = await ctx.keys.rotate_key(key_id, overlap)
        return f"{created.view.id}\n{created.key}"

    typer.echo(run_with_services(work))


@keys_app.command("limits")
def keys_limits(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID")],
    rpm: Rpm = None, tpm: Tpm = None, tpd: Tpd = None, concurrency: Concurrency = None,
    clear: Annotated[bool, typer.Option("--clear", help="Clear the key's own limits (the plan's apply)")] = False,
) -> None:
    """Set a key's own limits (they can only tighten its plan's)."""
    async def work(ctx: ServiceContext) -> str:
        if clear:
            changes: dict[str, int | None] = {"rpm": None, "tpm": None, "tpd": None, "concurrency": None}
        else:
            changes = {k: v for k, v in {"rpm": rpm, "tpm": tpm, "tpd": tpd, "concurrency": concurrency}.items()
                       if v is not None}
        k = await ctx.keys.update_key(key_id, changes)
        return (f"{k.id}\trpm={_fmt(k.limits.rpm)}\ttpm={_fmt(k.limits.tpm)}\ttpd={_fmt(k.limits.tpd)}\t"
                f"concurrency={_fmt(k.limits.concurrency)}")

    typer.echo(run_with_services(work))
