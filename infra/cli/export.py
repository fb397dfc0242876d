"""`voxelpipe export`: the tenant's measures across its studies into a CSV or Parquet file, through
the API (GET /measures, docs/api.md)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def add_export_command(commands: Any, connection: Callable[[argparse.ArgumentParser], None]) -> None:
    export = commands.add_parser(
        "export",
        help="the tenant's measures across its studies (a cohort) into a CSV or Parquet file",
        description="One row per study and measure, with the study's subject, scan date, status, "
        "attempt, analysis and version, value and unit (docs/api.md, GET /measures). Large exports "
        "are fetched from S3 (the API's 303 is followed). Prints the rows written (--json: "
        '{"rows", "bytes", "output", "format"}).',
    )
    export.add_argument("--format", choices=FORMATS, default="csv")
    export.add_argument("--output", type=Path, required=True, metavar="FILE")
    export.add_argument("--subject", metavar="SUBJECT_REF", help="only this subject's studies")
    export.add_argument("--from", dest="scan_from", metavar="YYYY-MM-DD", help="scanned on or after")
    export.add_argument("--to", dest="scan_to", metavar="YYYY-MM-DD", help="scanned on or before")
    export.add_argument("--since", metavar="ISO-8601", help="created at or after")
    export.add_argument("--until", metavar="ISO-8601", help="created at or before")
    export.add_argument(
        "--analysis",
        action="append",
        dest="analyses",
        metavar="NAME",
        help="only this analysis's measures (repeatable; default: every analysis)",
    )
    export.add_argument("--status", help="studies in this status (default COMPLETED)")
    connection(export)


def rows_in(path: Path, table_format: str) -> int:
    """The data rows of an export file: CSV records less the header, or the Parquet footer's count."""
    if table_format == "parquet":
        import pyarrow.parquet as pq  # the export extra

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open(newline="", encoding="utf-8") as file:
        return max(sum(1 for _ in csv.reader(file)) - 1, 0)


def run_export(args: argparse.Namespace, client: Any) -> int:
    params = {
        "format": args.format,
        "subject": args.subject,
        "from": args.scan_from,
        "to": args.scan_to,
        "since": args.since,
        "until": args.until,
        "analysis": args.analyses,
        "status": args.status,
    }
    if args.output.parent and not args.output.parent.is_dir():
        print(f"voxelpipe export: no such folder: {args.output.parent}", file=sys.stderr)
        return 2
    written = client.export_measures(params, args.output, MEDIA_TYPES[args.format])
    rows = rows_in(args.output, args.format)
    if args.json:
        print(json.dumps({"rows": rows, "bytes": written, "output": str(args.output), "format": args.format}))
    else:
        print(f"{rows} rows ({written} bytes) written to {args.output}")
    return 0
