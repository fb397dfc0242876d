"""`voxelpipe destinations list|show|add|delete` and `voxelpipe deliveries STUDY [--redrive NAME]`:
a tenant's delivery destinations (admins) and a study's deliveries, through the API
(`/destinations`, `/studies/{id}/deliveries`; docs/deliveries.md).

`add` takes the destination as JSON (a file); its password or token is read from the environment
variable `--secret-env` names, never from the command line (which shell histories and process
lists keep)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """Bad input on the command line: exit status 2, nothing sent."""


def add_destination_commands(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    destinations = commands.add_parser(
        "destinations", help="where studies' DICOM outputs are delivered: DICOMweb, C-STORE, S3 (admin)"
    )
    sub = destinations.add_subparsers(dest="destinations_command", required=True)
    connection(sub.add_parser("list", help="the tenant's destinations"))
    show = sub.add_parser("show", help="one destination (never its secret)")
    show.add_argument("name")
    connection(show)
    add = sub.add_parser("add", help="add a destination from a JSON file (kind, name, ...)")
    add.add_argument("file", type=Path, metavar="FILE.json")
    add.add_argument(
        "--secret-env", metavar="VAR", help="the environment variable holding its password or token"
    )
    connection(add)
    delete = sub.add_parser("delete", help="delete a destination and its secret")
    delete.add_argument("name")
    connection(delete)
    deliveries = commands.add_parser("deliveries", help="a study's deliveries; --redrive sends one again")
    deliveries.add_argument("study_id")
    deliveries.add_argument(
        "--redrive", metavar="DESTINATION", help="send again what that destination has not acknowledged"
    )
    connection(deliveries)


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


def _line(view: dict[str, Any]) -> str:
    internal = "internal" if view["internal"] else "external"
    secret = ", secret kept" if view["has_secret"] else ""
    settings = view["destination"]
    where = settings.get("url") or (
        f"{settings.get('called_ae')}@{settings.get('host')}:{settings.get('port')}"
        if view["kind"] == "dimse"
        else f"s3://{settings.get('bucket')}/{settings.get('prefix', '')}"
    )
    return f"{view['name']:<20} {view['kind']:<9} {internal:<9} {where}{secret}"


def _delivery_line(item: dict[str, Any]) -> str:
    error = f"  {item['error']}" if item.get("error") else ""
    return (
        f"{item['destination']:<20} attempt {item['attempt']}  {item['status']:<9} "
        f"{len(item['acknowledged'])}/{len(item['objects'])} acknowledged, {item['attempts']} sends{error}"
    )


def _new_destination(args: argparse.Namespace) -> dict[str, Any]:
    try:
        body = json.loads(args.file.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from error
    except ValueError as error:
        raise UsageError(f"{args.file} is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise UsageError(f"{args.file} must hold one JSON object")
    if "secret" in body:
        raise UsageError("keep the secret out of the file: pass --secret-env VAR")
    if args.secret_env:
        secret = os.environ.get(args.secret_env)
        if not secret:
            raise UsageError(f"the environment variable {args.secret_env} is not set")
        body["secret"] = secret
    return body


def run_destinations(args: argparse.Namespace, client: Any) -> int:
    """One `voxelpipe destinations ...` or `voxelpipe deliveries ...` command."""
    try:
        if args.command == "deliveries":
            if args.redrive:
                view = client.redrive_delivery(args.study_id, args.redrive)
                _print(args, view, f"redriven: {_delivery_line(view)}")
            else:
                page = client.deliveries(args.study_id)
                _print(args, page, "\n".join(map(_delivery_line, page["items"])) or "no deliveries")
            return 0
        command = args.destinations_command
        if command == "list":
            page = client.list_destinations()
            _print(args, page, "\n".join(map(_line, page["items"])) or "no destinations")
        elif command == "show":
            view = client.destination(args.name)
            _print(args, view, _line(view))
        elif command == "add":
            view = client.add_destination(_new_destination(args))
            _print(args, view, f"added: {_line(view)}")
        else:
            view = client.delete_destination(args.name)
            _print(args, view, f"deleted: {view['name']}")
    except UsageError as error:
        print(f"voxelpipe {args.command}: {error}", file=sys.stderr)
        return 2
    return 0
