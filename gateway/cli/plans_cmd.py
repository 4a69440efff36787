"""``gateway plans ...`` and ``gateway orgs ...``: rate-limit plans and the organisations on them, through
the same PlanService and KeyService as the admin API."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.context import ServiceContext, run_with_services
from gateway.cli.keys_cmd import model_list

plans_app = typer.Typer(help="Rate-limit plans", no_args_is_help=True)
orgs_app = typer.Typer(help="Organisations", no_args_is_help=True)

Rpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="Requests per minute, the whole organisation")]
Tpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="Tokens per minute, the whole organisation")]
Tpd = Annotated[int | None, typer.Option(min=1, metavar="N", help="Tokens per day, the whole organisation")]
Conc = Annotated[int | None, typer.Option(min=1, metavar="N", help="Requests in flight, the whole organisation")]
KeyRpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="Default requests per minute of each key")]
KeyTpm = Annotated[int | None, typer.Option(min=1, metavar="N", help="Default tokens per minute of each key")]
KeyTpd = Annotated[int | None, typer.Option(min=1, metavar="N", help="Default tokens per day of each key")]
KeyConc = Annotated[int | None, typer.Option(min=1, metavar="N", help="Default requests in flight of each key")]


def _fmt(value: int | None) -> str:
    return "-" if value is None else str(value)


@plans_app.command("create")
def plans_create(
    name: Annotated[str, typer.Argument(help="Plan name", metavar="NAME")],
    rpm: Rpm = None, tpm: Tpm = None, tpd: Tpd = None, concurrency: Conc = None,
    key_rpm: KeyRpm = None, key_tpm: KeyTpm = None, key_tpd: KeyTpd = None, key_concurrency: KeyConc = None,
    fail_closed: Annotated[bool, typer.Option("--fail-closed",
                                              help="Answer 503 while Redis is down (default: fail open)")] = False,
) -> None:
    """Create a plan: limits on the whole organisation and default limits on each of its keys."""
    async def work(ctx: ServiceContext) -> str:
        p = await ctx.plans.create(name, fail_open=not fail_closed, rpm=rpm, tpm=tpm, tpd=tpd, concurrency=concurrency,
                                   key_rpm=key_rpm, key_tpm=key_tpm, key_tpd=key_tpd, key_concurrency=key_concurrency)
        return p.id

    typer.echo(run_with_services(work))


@plans_app.command("list")
def plans_list() -> None:
    """List plans: id, name, rpm, tpm, tpd, concurrency, per-key defaults, outage behaviour."""
    async def work(ctx: ServiceContext) -> str:
        rows = [f"{p.id}\t{p.name}\trpm={_fmt(p.rpm)}\ttpm={_fmt(p.tpm)}\ttpd={_fmt(p.tpd)}\t"
                f"concurrency={_fmt(p.concurrency)}\tkey_rpm={_fmt(p.key_rpm)}\tkey_tpm={_fmt(p.key_tpm)}\t"
                f"key_tpd={_fmt(p.key_tpd)}\tkey_concurrency={_fmt(p.key_concurrency)}\t"
                f"{'fail-open' if p.fail_open else 'fail-closed'}" for p in await ctx.plans.list()]
        return "\n".join(rows)

    typer.echo(run_with_services(work))


@plans_app.command("delete")
def plans_delete(plan: Annotated[str, typer.Argument(help="Plan id or name", metavar="PLAN")]) -> None:
    """Delete a plan no organisation uses."""
    async def work(ctx: ServiceContext) -> str:
        await ctx.plans.delete(plan)
        return f"deleted {plan}"

    typer.echo(run_with_services(work))


@orgs_app.command("set-plan")
def orgs_set_plan(
    org: Annotated[str, typer.Argument(help="Organisation id or name (created if missing)", metavar="ORG")],
    plan: Annotated[str, typer.Argument(help="Plan id or name; 'none' for unlimited", metavar="PLAN")],
) -> None:
    """Put an organisation on a plan."""
    async def work(ctx: ServiceContext) -> str:
        orgs = {o.name: o.id for o in await ctx.keys.list_orgs()}
        org_id = org if org in orgs.values() else orgs.get(org) or (await ctx.keys.get_or_create_org(org)).id
        await ctx.plans.assign(org_id, None if plan == "none" else plan)
        return f"{org_id}\t{plan}"

    typer.echo(run_with_services(work))


@orgs_app.command("models")
def orgs_models(
    org: Annotated[str, typer.Argument(help="Organisation id or name", metavar="ORG")],
    models: Annotated[str, typer.Argument(help="Comma-separated models (aliases too), or 'any'", metavar="A,B|any")],
) -> None:
    """Set the models an organisation's keys may use; every replica applies it within the key cache TTL."""
    async def work(ctx: ServiceContext) -> str:
        orgs = {o.name: o.id for o in await ctx.keys.list_orgs()}
        org_id = orgs.get(org, org)
        o = await ctx.keys.set_org_models(org_id, model_list(models))
        return f"{o.id}\tmodels={','.join(o.models) if o.models is not None else 'any'}"

    typer.echo(run_with_services(work))


@orgs_app.command("providers")
def orgs_providers(
    org: Annotated[str, typer.Argument(help="Organisation id or name", metavar="ORG")],
    allow: Annotated[bool, typer.Option("--allow", help="Its requests may go to hosted providers")] = False,
    forbid: Annotated[bool, typer.Option("--forbid", help="Its requests never leave the fleet")] = False,
    default: Annotated[bool, typer.Option("--default", help="Follow GATEWAY_PROVIDERS_DEFAULT_ALLOWED")] = False,
) -> None:
    """Whether an organisation's requests may leave the fleet for a hosted provider (fallback, overflow)."""
    if allow + forbid + default != 1:
        raise typer.BadParameter("give exactly one of --allow, --forbid, --default")

    async def work(ctx: ServiceContext) -> str:
        orgs = {o.name: o.id for o in await ctx.keys.list_orgs()}
        org_id = org if org in orgs.values() else orgs.get(org)
        if org_id is None:
            raise typer.BadParameter(f"no organisation {org!r}", param_hint="ORG")
        view = await ctx.keys.set_providers_allowed(org_id, True if allow else False if forbid else None)
        return f"{view.id}\tproviders={_policy(view.providers_allowed)}"

    typer.echo(run_with_services(work))


def _policy(allowed: bool | None) -> str:
    return "default" if allowed is None else "allowed" if allowed else "forbidden"


@orgs_app.command("list")
def orgs_list() -> None:
    """List organisations, their plans, model allow-lists and provider policies."""
    async def work(ctx: ServiceContext) -> str:
        return "\n".join(f"{o.id}\t{o.name}\tplan={o.plan_id or '-'}\tmodels="
                         f"{','.join(o.models) if o.models is not None else 'any'}"
                         f"\tproviders={_policy(o.providers_allowed)}" for o in await ctx.keys.list_orgs())

    typer.echo(run_with_services(work))
