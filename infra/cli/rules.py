"""`voxelpipe rules list|show|apply|delete|test`: a tenant's routing rule sets (docs/rules.md), for
its admins, through the API (`/rules`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_rules_command(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    rules = commands.add_parser(
        "rules", help="routing rules: which series of an exam become studies, with what (admin)"
    )
    rule_commands = rules.add_subparsers(dest="rules_command", required=True)
    listing = rule_commands.add_parser("list", help="every saved version, and which is active")
    connection(listing)
    show = rule_commands.add_parser("show", help="one version's rule set (default: the active one)")
    show.add_argument("version", nargs="?", default="current", help="a version number, or current")
    connection(show)
    apply = rule_commands.add_parser(
        "apply", help="save a rule set (JSON) as the next version, which becomes the active one"
    )
    apply.add_argument("file", type=Path, metavar="FILE.json")
    connection(apply)
    delete = rule_commands.add_parser(
        "delete", help="delete a version (the newest one left becomes active; none: the default)"
    )
    delete.add_argument("version", type=int)
    connection(delete)
    test = rule_commands.add_parser("test", help="what each series would get, explained (changes nothing)")
    source = test.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--tags",
        type=Path,
        metavar="FILE.json",
        help="a list of series, each its routing tags (DICOM keywords) with SeriesInstances",
    )
    source.add_argument("--study", metavar="STUDY_ID", help="an uploaded DICOM exam's recorded series")
    test.add_argument(
        "--rule-set", type=Path, metavar="FILE.json", help="the rule set to try (default: the active one)"
    )
    connection(test)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror}") from error
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from error


class UsageError(Exception):
    """Bad input on the command line: exit status 2, nothing sent."""


def _print(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


def _listing(page: dict[str, Any]) -> str:
    active = page["active_version"]
    lines = [f"active: {'default rule set' if active is None else f'version {active}'}"]
    for item in page["items"]:
        state = "deleted" if item["deleted"] else ("active" if item["active"] else "")
        lines.append(
            f"  v{item['version']:<4} {state:<8} {item['created_at']}  {item.get('created_by') or ''}  "
            f"rules: {', '.join(item['rules']) or '(none)'}"
        )
    return "\n".join(lines)


def _decisions(result: dict[str, Any]) -> str:
    lines = [f"rule set: {result['rule_set']}"]
    for series in result["series"]:
        decision = series["decision"]
        name = (
            f"series {series['series_number']}"
            if series.get("series_number") is not None
            else f"series #{series['index'] + 1}"
        )
        verdict = "selected" if decision["selected"] else "not selected"
        rule = decision["rule"] or "no rule"
        analyses = decision["analyses"]
        extra = f", analyses {', '.join(analyses)}" if analyses else ""
        lines.append(f"{name}: {verdict} ({decision['action']} by {rule}{extra})")
        lines.extend(f"    {line}" for line in decision["explanation"])
    return "\n".join(lines)


def run_rules(args: argparse.Namespace, client: Any) -> int:
    """One `voxelpipe rules ...` command; ApiError is the caller's to report."""
    command = args.rules_command
    try:
        if command == "list":
            page = client.list_rule_sets()
            _print(args, page, _listing(page))
        elif command == "show":
            view = client.rule_set(args.version)
            _print(args, view, json.dumps(view["rule_set"], indent=2))
        elif command == "apply":
            created = client.save_rule_set(_read_json(args.file, "the rule set"))
            _print(args, created, f"saved version {created['version']}: active")
        elif command == "delete":
            view = client.delete_rule_set(args.version)
            _print(args, view, f"version {view['version']} deleted")
        else:
            body: dict[str, Any] = (
                {"study_id": args.study} if args.study else {"series": _read_json(args.tags, "the tags")}
            )
            if args.rule_set is not None:
                body["rule_set"] = _read_json(args.rule_set, "the rule set")
            result = client.test_rules(body)
            _print(args, result, _decisions(result))
    except UsageError as error:
        print(f"voxelpipe rules {command}: {error}", file=sys.stderr)
        return 2
    return 0
