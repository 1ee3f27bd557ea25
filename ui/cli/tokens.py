"""`taimatsu token create|list|revoke`: API tokens for service accounts and users, made by
whoever runs the command on the server (an operator). The raw token is printed once."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from assistant.settings import Settings
from assistant.tokens import TokenStore, parse_duration
from ui.cli.common import Commands, fail

token_app = typer.Typer(
    cls=Commands,
    no_args_is_help=True,
    help="API tokens: create, list and revoke (stored hashed in the data folder).",
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _when(t: float | None) -> str:
    return "never" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


@token_app.command()
def create(
    user: Annotated[str, typer.Option("--user", help="Who the token asks as.")],
    groups: Annotated[
        str, typer.Option("--groups", help="Comma-separated groups the token reads as.")
    ],
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime, e.g. 90d, 12h, 2w (default: none).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the tool using it.")] = "",
    service: Annotated[
        bool, typer.Option("--service", help="Mark it as a service account's token.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; it is printed once and cannot be shown again."""
    names = [g.strip() for g in groups.split(",") if g.strip()]
    if not names:
        raise typer.BadParameter("give at least one group name", param_hint="--groups")
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from None
    if not user.strip():
        raise typer.BadParameter("give the user the token asks as", param_hint="--user")
    raw, info = TokenStore(Settings()).create(user, names, lifetime, service, name)
    if as_json:
        sys.stdout.write(json.dumps({"token": raw, **info.as_json()}, ensure_ascii=False) + "\n")
        return
    typer.echo(raw)
    typer.echo(
        f"id {info.id} for {info.user} in {','.join(info.groups)}, expires "
        f"{_when(info.expires)}. Keep the token: it is not shown again.",
        err=True,
    )


@token_app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never the tokens themselves: only their ids)."""
    tokens = TokenStore(Settings()).list(user)
    if as_json:
        sys.stdout.write(json.dumps([t.as_json() for t in tokens], ensure_ascii=False) + "\n")
        return
    if not tokens:
        typer.echo("no tokens")
    for t in tokens:
        state = "revoked" if t.revoked else f"expires {_when(t.expires)}"
        kind = " service" if t.service else ""
        label = f" {t.name}" if t.name else ""
        typer.echo(f"{t.id} {t.user} [{','.join(t.groups)}]{kind}{label} {state}")


@token_app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `taimatsu token list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token at once: the next request with it gets 401."""
    done = TokenStore(Settings()).revoke(token_id)
    if as_json:
        sys.stdout.write(json.dumps({"id": token_id, "revoked": done}) + "\n")
    if not done:
        raise fail(f"no active token with id {token_id}: see `taimatsu token list`")
    if not as_json:
        typer.echo(f"revoked {token_id}")
