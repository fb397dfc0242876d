"""The CLI's commands for users of a deployment: serve, token, login, logout, upload, status, results,
report, list, model, atlas, norms, rules, destinations, deliveries, export, reprocess, attempts, batch,
subjects, timeline, clients, audit, usage, admin.

They talk to any deployment with `--api-url` and a token: `--token` (or VOXELPIPE_TOKEN), else the
one `voxelpipe login` cached for that API (refreshed when expired); with none of these, to the
local `voxelpipe serve`, with a development token minted on the spot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from infra.cli.audit import add_audit_commands, run_audit
from infra.cli.clients import add_clients_commands, run_clients
from infra.cli.destinations import add_destination_commands, run_destinations
from infra.cli.export import add_export_command, run_export
from infra.cli.login import DEFAULT_LOGIN_PORT
from infra.cli.reprocess import add_reprocess_commands, run_reprocess
from infra.cli.rules import add_rules_command, run_rules

DEFAULT_API_URL = "http://127.0.0.1:8000"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the local cloud behind a real HTTP API and S3 endpoint")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="the API's port (default 8000)")
    serve.add_argument("--s3-port", type=int, help="the S3 endpoint's port (default: the API's + 1)")
    serve.add_argument(
        "--live-port",
        type=int,
        help="the local API Gateway Management API's port, for live progress (default: the API's + 2)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="a browser origin the API allows (CORS; repeatable; default: cdk.json's "
        "voxelpipe:corsAllowedOrigins)",
    )
    serve.add_argument(
        "--dicom-port",
        type=int,
        metavar="PORT",
        help="also run the DICOM C-STORE receiver on PORT (docs/dicom-receiver.md; off by default)",
    )
    serve.add_argument(
        "--dicom-ae-title",
        action="append",
        dest="dicom_ae_titles",
        metavar="AE=TENANT",
        help="an AE title the receiver answers to and the tenant it files for (repeatable; "
        "default VOXELPIPE=demo)",
    )

    token = commands.add_parser(
        "token",
        help="mint a development token that `voxelpipe serve` accepts (a person's, or a machine client's)",
    )
    token.add_argument("--tenant", required=True, help="lower-case letters, digits and '-', up to 63")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--role",
        choices=["operator", "admin", "uploader", "viewer"],
        help="a person's ID token; operator: also publishes deployment-wide models",
    )
    who.add_argument(
        "--client",
        metavar="NAME",
        help="the tenant's machine client NAME's access token (its scopes), as client credentials give "
        "(the client is looked up on the local API, --api-url); call the API under /machine with it",
    )
    token.add_argument(
        "--hours", type=float, help="validity (default 12; a client's access token: 1, as Cognito's)"
    )
    token.add_argument("--api-url", default=os.environ.get("VOXELPIPE_API_URL", DEFAULT_API_URL))

    login = commands.add_parser(
        "login",
        help="sign in through the browser (the hosted UI, or `serve`'s development issuer); later "
        "commands use the cached token",
    )
    login.add_argument("--api-url", default=os.environ.get("VOXELPIPE_API_URL", DEFAULT_API_URL))
    login.add_argument(
        "--port",
        type=int,
        default=DEFAULT_LOGIN_PORT,
        help=f"the loopback port the sign-in comes back to (default {DEFAULT_LOGIN_PORT}, the one the "
        "deployment allows)",
    )
    login.add_argument("--no-browser", action="store_true", help="print the sign-in URL, open nothing")
    logout = commands.add_parser("logout", help="revoke and forget the cached tokens for the API")
    logout.add_argument("--api-url", default=os.environ.get("VOXELPIPE_API_URL", DEFAULT_API_URL))

    def connection(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-url", default=os.environ.get("VOXELPIPE_API_URL", DEFAULT_API_URL))
        parser.add_argument("--token", default=os.environ.get("VOXELPIPE_TOKEN"))
        parser.add_argument("--json", action="store_true", help="print the API's JSON")

    upload = commands.add_parser(
        "upload",
        help="register a study and upload its file, or a DICOM exam (a folder, a .zip, .dcm files)",
        description="A NIfTI file becomes one study. DICOM (a folder, searched recursively, files that "
        "are not DICOM skipped; a .zip; or .dcm files) is one exam: every series is classified and the "
        "tenant's rules decide which become studies; the command prints each series' decision.",
    )
    upload.add_argument("files", nargs="+", type=Path, metavar="PATH")
    upload.add_argument("--analyses", help="comma-separated (default: qc)")
    upload.add_argument("--priority", choices=["high", "normal"], default="normal")
    upload.add_argument("--subject-ref")
    upload.add_argument("--age", type=float)
    upload.add_argument("--sex", choices=["F", "M", "O"])
    upload.add_argument(
        "--scan-date",
        metavar="YYYY-MM-DD",
        help="the scan's date (needs --subject-ref); stored only shifted by the subject's secret offset",
    )
    upload.add_argument("--wait", action="store_true", help="follow the study to a terminal status")
    connection(upload)

    status = commands.add_parser("status", help="a study's status and steps")
    status.add_argument("study_id")
    status.add_argument(
        "--watch",
        action="store_true",
        help="print each status and step change (live, over WebSocket) until the study ends",
    )
    connection(status)

    results = commands.add_parser("results", help="a study's results, and optionally its artifacts")
    results.add_argument("study_id")
    results.add_argument("--download", type=Path, metavar="DIR", help="write every artifact under DIR")
    results.add_argument("--attempt", type=int, help="an earlier attempt (`voxelpipe attempts ID`)")
    connection(results)

    report = commands.add_parser("report", help="download a completed study's report (HTML and PDF)")
    report.add_argument("study_id")
    report.add_argument(
        "--out", type=Path, default=Path("."), metavar="DIR", help="where to write them (default .)"
    )
    report.add_argument("--open", action="store_true", help="open report.html in the web browser")
    connection(report)

    timeline = commands.add_parser(
        "timeline", help="a subject's studies over time: measures, changes, annual rates (docs/subjects.md)"
    )
    timeline.add_argument("subject_ref")
    timeline.add_argument("--rates", help="z-scores of the rates against this registered rates table")
    timeline.add_argument("--rates-version", type=int, help="its version (default: the newest READY)")
    connection(timeline)

    admin = commands.add_parser("admin", help="operators' commands against a deployment (AWS credentials)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    redrive = admin_commands.add_parser(
        "redrive",
        help="move dead-lettered messages back to their source queues",
        description="Finds this deployment's dead-letter queues (queues named --prefix..., default "
        "VOXELPIPE_QUEUE_PREFIX or Voxelpipe-) and moves their messages back to their source queues.",
    )
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--queue", metavar="NAME", help="the dead-letter queue whose name contains NAME")
    which.add_argument("--all", action="store_true", help="every dead-letter queue of the deployment")
    redrive.add_argument("--dry-run", action="store_true", help="count the messages, move nothing")
    redrive.add_argument("--prefix", help="queue name prefix of the deployment (default Voxelpipe-)")
    admin_commands.add_parser(
        "reap",
        help="run the reaper once, now (VOXELPIPE_REAPER_FUNCTION, or the function tagged as the reaper)",
    )

    subjects = commands.add_parser(
        "subjects",
        help="the tenant's subjects; with REF, that subject and its studies, oldest first",
    )
    subjects.add_argument("subject_ref", nargs="?", metavar="REF")
    subjects.add_argument("--limit", type=int, default=50)
    subjects.add_argument("--cursor")
    connection(subjects)

    listing = commands.add_parser("list", help="the tenant's studies, newest first")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor")
    connection(listing)

    model = commands.add_parser(
        "model", help="bring your own model: register, list and retire TorchScript/ONNX models"
    )
    model_commands = model.add_subparsers(dest="model_command", required=True)
    register = model_commands.add_parser(
        "register",
        help="upload a model file with its spec; the tenant's studies then ask for model:NAME (admin)",
    )
    register.add_argument("name", help="lower-case letters, digits and '-'")
    register.add_argument(
        "path", type=Path, metavar="PATH", help="the model: TorchScript (.pt) or ONNX (.onnx)"
    )
    register.add_argument("--spec", type=Path, required=True, metavar="SPEC.json", help="see docs/models.md")
    register.add_argument(
        "--deployment",
        action="store_true",
        help="publish it deployment-wide, for every tenant (operator)",
    )
    connection(register)
    models = model_commands.add_parser(
        "list", help="the tenant's registered models and the deployment-wide ones, every version"
    )
    connection(models)
    retire = model_commands.add_parser(
        "retire",
        help="take a model out of use and delete its files; model:NAME then runs the newest "
        "READY version left (admin)",
    )
    retire.add_argument("name")
    retire.add_argument("--version", type=int, help="one version (default: every version)")
    retire.add_argument("--deployment", action="store_true", help="a deployment-wide model (operator)")
    connection(retire)
    _reference_commands(commands, connection)
    add_rules_command(commands, connection)
    add_destination_commands(commands, connection)
    add_export_command(commands, connection)
    add_reprocess_commands(commands, connection)
    add_clients_commands(commands, connection)
    add_audit_commands(commands, connection)


def _reference_commands(commands: Any, connection: Any) -> None:
    """`voxelpipe atlas ...`, `voxelpipe norms ...` and `voxelpipe rates ...`: registered reference data."""
    atlas = commands.add_parser(
        "atlas", help="registered atlases: register, list and retire (docs/reference-data.md)"
    )
    norms = commands.add_parser(
        "norms", help="registered norms tables (deployment-wide, operator): register, list and retire"
    )
    rates = commands.add_parser(
        "rates",
        help="registered healthy-ageing rates tables (deployment-wide, operator): register, list and retire",
    )
    for kind, parser in (("atlas", atlas), ("norms", norms), ("rates", rates)):
        sub = parser.add_subparsers(dest="reference_command", required=True)
        register = sub.add_parser(
            "register",
            help="upload an atlas's label map and label table (admin: the tenant's own)"
            if kind == "atlas"
            else f"upload a {kind} table (operator; always deployment-wide)",
        )
        register.add_argument("name", help="lower-case letters, digits and '-'")
        if kind == "atlas":
            register.add_argument("--label-map", type=Path, required=True, metavar="MAP.nii.gz")
            register.add_argument("--labels", type=Path, required=True, metavar="LABELS.csv")
            register.add_argument(
                "--space", required=True, help="the template space of the label map, e.g. MNI152NLin2009aSym"
            )
            register.add_argument(
                "--deployment", action="store_true", help="publish it for every tenant (operator)"
            )
        else:
            register.add_argument("table", type=Path, metavar=f"{kind.upper()}.csv")
        register.add_argument("--licence", required=True, help="the licence it is used under")
        register.add_argument("--citation", required=True, help="what to cite for it")
        register.add_argument(
            "--commercial-use",
            action="store_true",
            help="its licence allows use in a commercial service (default: it does not)",
        )
        register.add_argument("--description")
        connection(register)
        listing = sub.add_parser("list", help=f"the {kind} data this tenant sees, every version")
        connection(listing)
        retire = sub.add_parser("retire", help="take it out of use and delete its files")
        retire.add_argument("name")
        retire.add_argument("--version", type=int, help="one version (default: every version)")
        if kind == "atlas":
            retire.add_argument(
                "--deployment", action="store_true", help="a deployment-wide atlas (operator)"
            )
        connection(retire)


def _client(args: argparse.Namespace) -> Any:
    from urllib.parse import urlparse

    from infra.cli.client import Client
    from infra.cli.login import cached_token

    token = args.token or cached_token(args.api_url)
    if token is None and urlparse(args.api_url).hostname in {h.strip("[]") for h in LOCAL_HOSTS}:
        from voxelpipe.api.auth import Role, mint_dev_token

        # The local deployment's one user may do anything, deployment-wide models included.
        token = mint_dev_token("demo", Role.OPERATOR, subject="voxelpipe-cli")
    return Client(args.api_url, token)


def _watch(args: argparse.Namespace, client: Any) -> int:
    """Follow a study over the live WebSocket until it ends: 0 when it COMPLETED, 1 otherwise."""
    from infra.cli.watch import WatchError, describe, live_url, watch

    def show(message: dict[str, Any]) -> None:
        print(json.dumps(message) if args.json else describe(message), flush=True)

    try:
        url = live_url(client.health())
        final = watch(url, client.token or "", args.study_id, lambda: client.study(args.study_id), show)
    except WatchError as error:
        print(f"voxelpipe status --watch: {error}", file=sys.stderr)
        return 2
    return 0 if final == "COMPLETED" else 1


def _show_steps(view: dict[str, Any]) -> None:
    steps = ", ".join(f"{s['step']} {s['status'].lower()} {s['progress']}%" for s in view["steps"])
    print(f"  {view['study_id'][:12]}  {view['status']}  {steps}", file=sys.stderr, flush=True)


def _print(args: argparse.Namespace, data: dict[str, Any], human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human)


def _describe(view: dict[str, Any]) -> str:
    lines = [f"study {view['study_id']}: {view['status']} (attempt {view['attempt']})"]
    if view.get("reason"):
        lines.append(f"  reason: {view['reason']}: {view.get('reason_detail')}")
    if view.get("error"):
        lines.append(f"  error: {view['error'].get('type')}: {view['error'].get('message')}")
    for step in view.get("steps", []):
        took = f" in {step['duration_ms']:.0f} ms" if step.get("duration_ms") is not None else ""
        lines.append(f"  {step['step']}: {step['status']} {step['progress']}%{took}")
    return "\n".join(lines)


DEFAULT_DICOM_AE_TITLE = "VOXELPIPE=demo"


def _dicom_ae_titles(values: list[str] | None) -> Any:
    """`AE=TENANT` options as the receiver's AE title map, or the error's sentence."""
    from voxelpipe.dimse.settings import InvalidReceiverSettings, parse_ae_titles

    pairs: dict[str, str] = {}
    for value in values or [DEFAULT_DICOM_AE_TITLE]:
        title, sep, tenant = value.partition("=")
        if not sep:
            return f"--dicom-ae-title {value!r}: give AE=TENANT"
        pairs[title] = tenant
    try:
        return parse_ae_titles(pairs, where="--dicom-ae-title")
    except InvalidReceiverSettings as error:
        return str(error)


def run(args: argparse.Namespace) -> int:
    from infra.cli.client import ApiError

    if args.command == "serve":
        from infra.local.serve import serve
        from infra.settings import parse_origins

        origins = parse_origins(args.cors_origins) if args.cors_origins else None
        dicom = _dicom_ae_titles(args.dicom_ae_titles) if args.dicom_port is not None else None
        if dicom is not None and isinstance(dicom, str):
            print(f"voxelpipe serve: {dicom}", file=sys.stderr)
            return 2
        serve(
            args.host,
            args.port,
            args.s3_port,
            args.live_port,
            origins,
            dicom_port=args.dicom_port,
            dicom=dicom,
        )
        return 0
    if args.command == "token":
        return _token(args)
    if args.command in ("login", "logout"):
        return _login(args)
    if args.command == "admin":
        return _admin(args)
    from infra.cli.login import LoginError

    try:
        client = _client(args)
    except LoginError as error:
        print(f"voxelpipe {args.command}: {error}", file=sys.stderr)
        return 1
    try:
        if args.command == "upload":
            return _upload(args, client)
        if args.command == "model":
            return _model(args, client)
        if args.command in ("atlas", "norms", "rates"):
            return _reference(args, client)
        if args.command == "rules":
            return run_rules(args, client)
        if args.command in ("destinations", "deliveries"):
            return run_destinations(args, client)
        if args.command == "export":
            return run_export(args, client)
        if args.command in ("reprocess", "attempts", "batch"):
            return run_reprocess(args, client)
        if args.command == "clients":
            return run_clients(args, client)
        if args.command in ("audit", "usage"):
            return run_audit(args, client)
        if args.command == "status" and args.watch:
            return _watch(args, client)
        if args.command == "status":
            view = client.study(args.study_id)
            _print(args, view, _describe(view))
        elif args.command == "results":
            results = client.results(args.study_id, args.attempt)
            _print(args, results, json.dumps(results["results"].get("analyses", {}), indent=2))
            if args.download:
                written = client.download(results, args.download)
                print(f"{len(written)} artifacts written under {args.download}/", file=sys.stderr)
        elif args.command == "report":
            return _report(args, client)
        elif args.command == "subjects":
            _subjects(args, client)
        elif args.command == "timeline":
            document = client.timeline(args.subject_ref, rates=args.rates, rates_version=args.rates_version)
            _print(args, document, describe_timeline(document))
        elif args.command == "list":
            page = client.list_studies(status=args.status, limit=args.limit, cursor=args.cursor)
            human = "\n".join(f"{s['study_id']}  {s['status']:<16} {s['created_at']}" for s in page["items"])
            if page.get("next_cursor"):
                human += f"\nmore: --cursor {page['next_cursor']}"
            _print(args, page, human or "no studies")
    except ApiError as error:
        print(f"voxelpipe {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


def _subjects(args: argparse.Namespace, client: Any) -> None:
    """`voxelpipe subjects [REF]`: the tenant's subjects, or one subject's studies (docs/subjects.md)."""
    if args.subject_ref:
        subject = client.subject(args.subject_ref)
        lines = [
            f"{subject['subject_ref']}  sex {subject['sex'] or '-'}  age {subject['age'] or '-'}  "
            f"{subject['study_count']} studies (dates shifted)"
        ]
        lines += [
            f"  {s['scan_date'] or '-':<10}  {s['study_id']}  {s['status']:<16} age {s['age'] or '-'}"
            for s in subject["studies"]
        ]
        _print(args, subject, "\n".join(lines))
        return
    page = client.list_subjects(limit=args.limit, cursor=args.cursor)
    human = "\n".join(
        f"{s['subject_ref']}  {s['study_count']} studies  {s['first_scan_date'] or '-'} .. "
        f"{s['last_scan_date'] or '-'}"
        for s in page["items"]
    )
    if page.get("next_cursor"):
        human += f"\nmore: --cursor {page['next_cursor']}"
    _print(args, page, human or "no subjects")


def _rate(entry: dict[str, Any]) -> str:
    """One region's change in words: percent, annual rate, z against the rates table."""
    text = f"{entry['paired_change_pct']:+.2f} %" if entry.get("paired_change_pct") is not None else "n/a"
    if entry.get("paired_rate_pct_per_year") is not None:
        text += f" ({entry['paired_rate_pct_per_year']:+.2f} %/y"
        z = entry.get("rate_z") or {}
        text += f", z {z['z']:+.2f})" if z.get("status") == "ok" else ")"
    return text


def describe_timeline(document: dict[str, Any]) -> str:
    """`voxelpipe timeline`'s human output: one line a study, then first to last (whole brain)."""
    lines = [f"subject {document['subject_ref']}: {len(document['studies'])} studies"]
    for study in document["studies"]:
        since = study.get("years_since_first")
        when = f"{study.get('scan_date') or 'no date':<10}  " + (
            f"+{since:.2f} y" if since is not None else ""
        )
        line = f"  {when:<22} {study['study_id'][:12]}  {study['status']:<10}"
        change = study.get("change_from_prior") or {}
        brain = (change.get("regions") or {}).get("brain")
        if brain:
            line += f"  brain {_rate(brain)} since {str(change.get('prior_study_id'))[:12]}"
        lines.append(line)
    span = document.get("first_to_last")
    if span and "brain" in span["regions"]:
        years = f", {span['interval_years']:.2f} y" if span.get("interval_years") is not None else ""
        lines.append(f"first to last ({span['pairs']} pairs{years}): brain {_rate(span['regions']['brain'])}")
    rates = document.get("rates_reference")
    if rates:
        lines.append(f"rates: {rates.get('name')} version {rates.get('version')} ({rates.get('citation')})")
    return "\n".join(lines)


def _token(args: argparse.Namespace) -> int:
    """`voxelpipe token`: a person's development token, or a machine client's access token."""
    from infra.cli.client import ApiError, Client
    from voxelpipe.api.auth import InvalidClaims, Role, mint_dev_access_token, mint_dev_token
    from voxelpipe.machine_clients import Scope

    try:
        if args.role is not None:
            hours = 12.0 if args.hours is None else args.hours
            print(mint_dev_token(args.tenant, Role(args.role), ttl_s=int(hours * 3600)))
            return 0
        admin = mint_dev_token(args.tenant, Role.ADMIN, subject="voxelpipe-cli")
    except InvalidClaims as invalid:  # a token the API would refuse
        print(f"voxelpipe token: {invalid}", file=sys.stderr)
        return 2
    try:
        found = Client(args.api_url, admin).list_clients()["items"]
    except (ApiError, OSError) as error:
        print(f"voxelpipe token: could not list the clients at {args.api_url}: {error}", file=sys.stderr)
        return 1
    client = next((c for c in found if c["name"] == args.client), None)
    if client is None:
        print(f"voxelpipe token: {args.tenant} has no machine client {args.client!r}", file=sys.stderr)
        return 2
    hours = 1.0 if args.hours is None else args.hours
    scopes = frozenset(Scope(scope) for scope in client["scopes"])
    print(mint_dev_access_token(client["client_id"], scopes, ttl_s=int(hours * 3600)))
    return 0


def _login(args: argparse.Namespace) -> int:
    from infra.cli.login import LoginError, login, logout

    if args.command == "logout":
        print("signed out" if logout(args.api_url) else f"not signed in at {args.api_url}", file=sys.stderr)
        return 0

    def show(url: str) -> None:
        print(f"sign in at: {url}", file=sys.stderr, flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)

    try:
        login(args.api_url, port=args.port, open_browser=show)
    except (LoginError, OSError) as error:
        print(f"voxelpipe login: {error}", file=sys.stderr)
        return 1
    print(f"signed in at {args.api_url}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace, client: Any) -> int:
    """Write report.html and report.pdf of a COMPLETED study under --out: 0 when both were written,
    1 when the study has no report (not COMPLETED) or a file of it is unavailable (the other is
    still written)."""
    view = client.study(args.study_id)
    if view["status"] != "COMPLETED":
        print(
            f"voxelpipe report: study {args.study_id} is {view['status']}, not COMPLETED: it has no report"
            + (" yet" if view["status"] not in ("REJECTED", "FAILED", "DELETED") else ""),
            file=sys.stderr,
        )
        return 1
    report = view.get("report")
    if not report:
        print(
            f"voxelpipe report: study {args.study_id} has no report (completed before reports)",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    code = 0
    written: dict[str, Path] = {}
    for kind in ("html", "pdf"):
        entry = report[kind]
        if entry["status"] != "available" or not entry.get("url"):
            print(f"voxelpipe report: report.{kind} is unavailable: {entry.get('error')}", file=sys.stderr)
            code = 1
            continue
        target = args.out / f"report.{kind}"
        target.write_bytes(client.fetch(entry["url"]))
        written[kind] = target
        print(target)
    if args.open and "html" in written:
        import webbrowser

        webbrowser.open(written["html"].resolve().as_uri())
    return code


def _upload(args: argparse.Namespace, client: Any) -> int:
    from tqdm import tqdm

    from infra.cli.dicom_upload import is_dicom_input, upload_dicom

    missing = [str(f) for f in args.files if not (f.is_file() or f.is_dir())]
    if missing:
        print(f"voxelpipe upload: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    fields: dict[str, Any] = {"priority": args.priority}
    if args.analyses:
        fields["analyses"] = [a.strip() for a in args.analyses.split(",") if a.strip()]
    for name in ("subject_ref", "age", "sex", "scan_date"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if is_dicom_input(args.files):
        return upload_dicom(args, client, fields)
    created = client.create_study(args.files, **fields)
    by_name = {target["file"]: target for target in created["uploads"]}
    for path in args.files:
        with tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, file=sys.stderr
        ) as bar:
            client.upload(by_name[path.name], path, progress=bar.update)
    print(f"uploaded as study {created['study_id']}", file=sys.stderr)
    if not args.wait:
        _print(args, created, created["study_id"])
        return 0
    view = client.wait(created["study_id"], on_change=_show_steps)
    _print(args, view, _describe(view))
    return 0


def _admin(args: argparse.Namespace) -> int:
    import boto3

    from infra.cli import admin

    if args.admin_command == "reap":
        print(json.dumps(admin.run_reaper(admin.reaper_function()), indent=2))
        return 0
    sqs = boto3.client("sqs")
    queues = admin.dead_letter_queues(sqs, args.prefix or admin.queue_prefix())
    if args.queue:
        queues = [queue for queue in queues if args.queue in queue.name]
    if not queues:
        print("voxelpipe admin redrive: no such dead-letter queue", file=sys.stderr)
        return 1
    for queue in queues:
        count = admin.redrive(sqs, queue, dry_run=args.dry_run)
        verb = "would move" if args.dry_run else "moved"
        print(f"{queue.name}: {verb} {count} messages to {queue.source_urls[0].rsplit('/', 1)[-1]}")
    return 0


def _scope(args: argparse.Namespace) -> str:
    """The model's scope: the caller's tenant's own, or (--deployment, operators) deployment-wide."""
    return "deployment" if args.deployment else "tenant"


def _model(args: argparse.Namespace, client: Any) -> int:
    if args.model_command == "list":
        page = client.list_models()
        human = "\n".join(
            f"{m['analysis']:<32} v{m['version']:<4} {m['scope']:<10} {m['status']:<8} {m['format']:<12} "
            f"{m['kind']:<15} {m['runtime']:<7} {m['size']} B"
            for m in page["items"]
        )
        _print(args, page, human or "no models")
        return 0
    if args.model_command == "retire":
        page = client.retire_model(args.name, args.version, _scope(args))
        _print(
            args,
            page,
            "\n".join(f"{m['analysis']} version {m['version']}: {m['status']}" for m in page["items"]),
        )
        return 0
    import hashlib

    from tqdm import tqdm

    from voxelpipe.inference.spec import InvalidSpec, lambda_size_problem, parse_spec

    for path in (args.path, args.spec):
        if not path.is_file():
            print(f"voxelpipe model register: no such file: {path}", file=sys.stderr)
            return 2
    try:
        spec = parse_spec(args.spec.read_bytes())
    except InvalidSpec as error:
        print(f"voxelpipe model register: {args.spec} is not a valid spec:", file=sys.stderr)
        for problem in error.errors:
            print(f"  {problem['field'] or 'spec'}: {problem['message']}", file=sys.stderr)
        return 2
    expected = {"torchscript": (".pt", ".pth", ".ts"), "onnx": (".onnx",)}[spec.format]
    if args.path.suffix.lower() not in expected:
        print(
            f"voxelpipe model register: the spec says {spec.format}, but {args.path.name} is not "
            f"{' or '.join(expected)}",
            file=sys.stderr,
        )
        return 2
    size = args.path.stat().st_size
    too_large = lambda_size_problem(spec, size)
    if too_large is not None:
        print(f"voxelpipe model register: {too_large}", file=sys.stderr)
        return 2
    with args.path.open("rb") as source:
        digest = hashlib.file_digest(source, "sha256")
    scope = _scope(args)
    created = client.register_model(
        args.name, json.loads(spec.model_dump_json()), size, digest.hexdigest(), scope
    )
    with tqdm(total=size, unit="B", unit_scale=True, desc=args.path.name, file=sys.stderr) as bar:
        client.upload(created["upload"], args.path, progress=bar.update)
    model = client.complete_model(args.name, created["model"]["version"], scope)
    _print(args, model, f"{model['analysis']} version {model['version']}: {model['status']}")
    return 0


def _reference(args: argparse.Namespace, client: Any) -> int:
    """`voxelpipe atlas|norms|rates register|list|retire`."""
    kind = args.command
    # Norms and rates tables are deployment-wide only; an atlas is the tenant's unless --deployment.
    scope = "deployment" if kind in ("norms", "rates") or getattr(args, "deployment", False) else "tenant"

    def line(r: dict[str, Any]) -> str:
        commercial = "commercial use" if r["commercial_use"] else "non-commercial"
        return (
            f"{r['kind']} {r['name']:<24} v{r['version']:<4} {r['scope']:<10} {r['status']:<8} {commercial}"
        )

    if args.reference_command == "list":
        page = client.list_references(kind)
        _print(args, page, "\n".join(line(r) for r in page["items"]) or f"no {kind} data")
        return 0
    if args.reference_command == "retire":
        page = client.retire_reference(kind, args.name, args.version, scope)
        _print(args, page, "\n".join(line(r) for r in page["items"]))
        return 0
    import hashlib

    paths = {"label_map": args.label_map, "labels": args.labels} if kind == "atlas" else {"table": args.table}
    for path in paths.values():
        if not path.is_file():
            print(f"voxelpipe {kind} register: no such file: {path}", file=sys.stderr)
            return 2
    files = []
    for role, path in paths.items():
        with path.open("rb") as source:
            digest = hashlib.file_digest(source, "sha256").hexdigest()
        files.append({"role": role, "size": path.stat().st_size, "sha256": digest})
    body: dict[str, Any] = {
        "name": args.name,
        "licence": args.licence,
        "citation": args.citation,
        "commercial_use": args.commercial_use,
        "files": files,
        "scope": scope,
    }
    if kind == "atlas":
        body["space"] = args.space
    if args.description:
        body["description"] = args.description
    created = client.register_reference(kind, body)
    for role, path in paths.items():
        client.upload(created["uploads"][role], path)
    done = client.complete_reference(kind, args.name, created["reference"]["version"], scope)
    _print(args, done, f"{kind} {done['name']} version {done['version']}: {done['status']}")
    return 0
