"""`voxelpipe audit`: export the tenant's access audit (GET /audit, docs/security.md) as CSV or
JSON, every page of it, for its admins; and `voxelpipe usage`: the tenant's quotas and usage."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The CSV's columns, in order (resource as JSON).
COLUMNS = (
    "at",
    "request_id",
    "actor",
    "role",
    "action",
    "method",
    "path",
    "route",
    "study_id",
    "status",
    "source_ip",
    "user_agent",
    "resource",
)
PAGE_SIZE = 500


def add_audit_commands(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = commands.add_parser(
        "audit",
        help="export the tenant's access audit: who read or changed what, when, from where (admin)",
        description="Every page of GET /audit matching the filters, newest first, as CSV or JSON.",
    )
    audit.add_argument("--study", help="only calls on this study")
    audit.add_argument("--actor", help="only this subject's calls")
    audit.add_argument("--action", help="only this audit action (e.g. study.read, study.results)")
    audit.add_argument("--from", dest="since", metavar="TIME", help="at or after (ISO 8601 with a time zone)")
    audit.add_argument("--to", dest="until", metavar="TIME", help="at or before (ISO 8601 with a time zone)")
    audit.add_argument("--format", choices=["csv", "json"], default="csv", help="default csv")
    audit.add_argument("--output", type=Path, metavar="FILE", help="write here (default: standard output)")
    connection(audit)
    usage = commands.add_parser("usage", help="the tenant's quotas: each limit, what is used, when it resets")
    connection(usage)


def rows(client: Any, filters: dict[str, str | None]) -> Iterator[dict[str, Any]]:
    """Every row matching `filters`, page after page."""
    cursor: str | None = None
    while True:
        page = client.audit(**filters, limit=PAGE_SIZE, cursor=cursor)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def as_csv(found: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in found:
        writer.writerow({**row, "resource": json.dumps(row.get("resource") or {}, sort_keys=True)})
    return out.getvalue()


def run_audit(args: argparse.Namespace, client: Any) -> int:
    if args.command == "usage":
        usage = client.usage()
        human = "\n".join(
            f"{name:<20} {value['used']:>14} of {value['limit']:<14} "
            f"resets {value['resets_at'] or 'as usage falls'}"
            for name, value in usage["quotas"].items()
        )
        print(json.dumps(usage, indent=2) if args.json else human)
        return 0
    filters = {
        "study": args.study,
        "actor": args.actor,
        "action": args.action,
        "from": args.since,
        "to": args.until,
    }
    found = list(rows(client, filters))
    text = json.dumps(found, indent=2) + "\n" if args.format == "json" else as_csv(found)
    if args.output:
        args.output.write_text(text)
        print(f"{len(found)} audit rows written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
