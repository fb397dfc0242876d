"""`voxelpipe clients create|list|delete`: a tenant's machine clients (admins), through the API
(`/clients`; docs/security.md, "Machine clients and CLI login").

`create` prints the client's secret once — voxelpipe never keeps it and cannot show it again — with
its client id, the token endpoint's grant to use (client credentials) and the API's base URL for
machines (under /machine). Rotating a secret is creating a new client, then deleting the old one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from voxelpipe.machine_clients import Scope


def add_clients_commands(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    clients = commands.add_parser(
        "clients", help="machine clients: OAuth client credentials for integration engines (admin)"
    )
    sub = clients.add_subparsers(dest="clients_command", required=True)
    create = sub.add_parser("create", help="create a client; its secret is printed once, now")
    create.add_argument("name", help="lower-case letters, digits and '-', unique in the tenant")
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        required=True,
        choices=[scope.value for scope in Scope],
        help="what it may do (repeatable; docs/api.md, Scopes)",
    )
    create.add_argument("--days", type=int, help="its life in days (default: the deployment's, 90)")
    connection(create)
    connection(sub.add_parser("list", help="the tenant's clients (never their secrets)"))
    delete = sub.add_parser("delete", help="delete a client: its tokens are refused from now on")
    delete.add_argument("name")
    connection(delete)


def _line(view: dict[str, Any]) -> str:
    state = "EXPIRED" if view["expired"] else f"until {view['expires_at']}"
    return f"{view['name']:<24} {view['client_id']:<28} {','.join(view['scopes']):<40} {state}"


def run_clients(args: argparse.Namespace, client: Any) -> int:
    if args.clients_command == "list":
        page = client.list_clients()
        human = "\n".join(_line(view) for view in page["items"]) or "no machine clients"
        print(json.dumps(page, indent=2) if args.json else human)
        return 0
    if args.clients_command == "delete":
        view = client.delete_client(args.name)
        print(json.dumps(view, indent=2) if args.json else f"deleted {view['name']} ({view['client_id']})")
        return 0
    created = client.create_client(args.name, sorted(set(args.scopes)), args.days)
    if args.json:
        print(json.dumps(created, indent=2))
        return 0
    view = created["client"]
    print(f"client_id:     {view['client_id']}")
    print(f"client_secret: {created['client_secret']}")
    print(f"scopes:        {' '.join(view['scopes'])}")
    print(f"expires_at:    {view['expires_at']}")
    print(f"api_url:       {created['api_url']}")
    print(
        "The secret is shown this once: store it in the client's secret store now. Tokens: the "
        "client-credentials grant at the deployment's token endpoint (docs/security.md).",
        file=sys.stderr,
    )
    return 0
