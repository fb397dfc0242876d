"""`voxelpipe reprocess ID`, `voxelpipe attempts ID` and `voxelpipe batch create|show|list`: a
study's next attempt (with other analyses), its attempts, and bulk reprocessing (admin) through the
API (docs/api.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

WATCH_INTERVAL_S = 2.0


class UsageError(Exception):
    """Bad input on the command line: exit status 2, nothing sent."""


def add_reprocess_commands(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    reprocess = commands.add_parser(
        "reprocess", help="open a study's next attempt, optionally with other analyses (the last one is kept)"
    )
    reprocess.add_argument("study_id")
    _what_to_run(reprocess)
    reprocess.add_argument("--priority", choices=["high", "normal", "low"])
    connection(reprocess)

    attempts = commands.add_parser("attempts", help="a study's attempts, latest first")
    attempts.add_argument("study_id")
    connection(attempts)

    batch = commands.add_parser("batch", help="bulk reprocess: a query's studies at low priority (admin)")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True)
    create = batch_commands.add_parser(
        "create",
        help="select the tenant's studies by --where conditions and reprocess them, throttled",
        description="Conditions (each --where KEY=VALUE, all must hold): status (COMPLETED, the "
        "default, or FAILED), without_analysis, with_analysis, subject_ref, created_from, created_to "
        "(ISO 8601).",
    )
    create.add_argument("--where", action="append", default=[], metavar="KEY=VALUE")
    _what_to_run(create)
    create.add_argument(
        "--max-in-flight", type=int, help="at most this many at once (default: the deployment's)"
    )
    create.add_argument("--watch", action="store_true", help="follow its progress until every study ended")
    connection(create)
    show = batch_commands.add_parser("show", help="a batch's progress and each study's state")
    show.add_argument("batch_id")
    show.add_argument("--watch", action="store_true", help="follow its progress until every study ended")
    connection(show)
    listing = batch_commands.add_parser("list", help="the tenant's batches, newest first")
    connection(listing)


def _what_to_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--analyses", help="comma-separated (default: the study's own)")
    parser.add_argument(
        "--parameters", metavar="JSON", help='per analysis, e.g. \'{"regional": {"atlas": "..."}}\''
    )


def _run_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.analyses:
        body["analyses"] = [name.strip() for name in args.analyses.split(",") if name.strip()]
    if args.parameters:
        try:
            body["parameters"] = json.loads(args.parameters)
        except ValueError as error:
            raise UsageError(f"--parameters is not JSON: {error}") from error
    return body


def _where(conditions: list[str]) -> dict[str, str]:
    where: dict[str, str] = {}
    for condition in conditions:
        key, sep, value = condition.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {condition!r}: give KEY=VALUE")
        where[key.strip()] = value.strip()
    return where


def describe_progress(view: dict[str, Any]) -> str:
    p = view["progress"]
    return (
        f"batch {view['batch_id']}: {p['completed']}/{p['selected']} completed, {p['in_flight']} in flight, "
        f"{p['waiting']} waiting, {p['failed']} failed, {p['rejected']} rejected, {p['skipped']} skipped"
        + (" — done" if p["done"] else "")
    )


def _describe_batch(view: dict[str, Any]) -> str:
    lines = [describe_progress(view)]
    for study in view.get("studies") or []:
        why = study.get("reason") or (study.get("error") or {}).get("message") or ""
        attempt = f" attempt {study['attempt']}" if study.get("attempt") else ""
        lines.append(f"  {study['study_id']}  {study['state']:<9}{attempt}  {why}".rstrip())
    return "\n".join(lines)


def _watch(client: Any, batch_id: str, as_json: bool) -> int:
    """Print the batch's progress each time it changes until every study ended: 0 when every one
    completed, 1 otherwise."""
    last = None
    while True:
        view = client.batch(batch_id)
        line = describe_progress(view)
        if line != last:
            print(json.dumps(view["progress"]) if as_json else line, flush=True)
            last = line
        if view["progress"]["done"]:
            return 0 if view["progress"]["completed"] == view["progress"]["selected"] else 1
        time.sleep(WATCH_INTERVAL_S)


def run_reprocess(args: argparse.Namespace, client: Any) -> int:
    def show(data: dict[str, Any], human: str) -> None:
        print(json.dumps(data, indent=2, default=str) if args.json else human)

    try:
        if args.command == "reprocess":
            body = _run_body(args)
            if args.priority:
                body["priority"] = args.priority
            view = client.reprocess(args.study_id, body)
            show(
                view,
                f"study {view['study_id']}: attempt {view['attempt']} {view['status']} "
                f"({', '.join(view['analyses'])})",
            )
        elif args.command == "attempts":
            page = client.attempts(args.study_id)
            show(
                page,
                "\n".join(
                    f"attempt {a['attempt']}{' (latest)' if a['latest'] else ''}: {a['status']}  "
                    f"{', '.join(a['analyses'])}  {a.get('ended_at') or ''}"
                    for a in page["items"]
                ),
            )
        elif args.batch_command == "list":
            page = client.list_batches()
            show(page, "\n".join(describe_progress(b) for b in page["items"]) or "no batches")
        else:
            if args.batch_command == "create":
                body = {**_run_body(args), "where": _where(args.where)}
                if args.max_in_flight is not None:
                    body["max_in_flight"] = args.max_in_flight
                view = client.create_batch(body)
                batch_id = view["batch_id"]
            else:
                batch_id = args.batch_id
                view = client.batch(batch_id)
            if args.watch:
                return _watch(client, batch_id, args.json)
            show(view, _describe_batch(view))
    except UsageError as error:
        print(f"voxelpipe {args.command}: {error}", file=sys.stderr)
        return 2
    return 0
