"""The `voxelpipe` command line: `demo` here, the commands for a deployment in `remote`.

`voxelpipe demo [--input FILE ...] [--analyses qc,...] [--output-dir DIR] [--json]` runs scans
through the whole local cloud. With `--json` it prints one JSON object a line per input:
study_id, input, status, reason and detail (when rejected or failed), results, artifacts, timings.
Exit code 0 when every input reached a terminal status, whatever the status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.cli import remote as cli_remote
from voxelpipe.status import TERMINAL_STATUSES

if TYPE_CHECKING:
    from voxelpipe.records import StudyRecord

# What `voxelpipe demo` runs when --analyses is not given: the atrophy measures on a T1.
DEMO_ANALYSES = ("qc", "tissue-seg", "volumetrics", "regional")
EXIT_OK = 0
EXIT_NOT_TERMINAL = 1
EXIT_USAGE = 2


def _analysis_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one analysis name")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxelpipe", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run scans through the whole pipeline in the local cloud",
        description="Uploads each input as a study to the local cloud (moto, in process) and waits for "
        "every study to reach a terminal status. With no --input, runs the bundled MNI152 T1.",
    )
    demo.add_argument(
        "--input",
        dest="inputs",
        action="append",
        type=Path,
        metavar="FILE",
        help="a scan: .nii/.nii.gz, or DICOM (a folder, a .zip or one .dcm file); repeat for more",
    )
    demo.add_argument(
        "--analyses",
        type=_analysis_list,
        metavar="A,B",
        help=f"analyses to run (default: {','.join(DEMO_ANALYSES)})",
    )
    demo.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="write results.json and every artifact under DIR/{study_id}/",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object a line per input")
    demo.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="seconds to wait for every study (default 900)",
    )
    demo.add_argument("--verbose", action="store_true", help="show the functions' logs on stderr")
    demo.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="worker processes for the analyses (default: one a CPU, or VOXELPIPE_LOCAL_PROCESSES; "
        "0: in the cloud's process)",
    )
    demo.add_argument(
        "--analysis-threads",
        type=int,
        metavar="T",
        help="threads each analysis may use (default 1, or VOXELPIPE_LOCAL_ANALYSIS_THREADS)",
    )
    cli_remote.add_commands(commands)
    return parser


def _progress(record: StudyRecord, steps: list[str]) -> None:
    running = f" ({', '.join(steps)})" if steps else ""
    print(f"  {record.study_id[:12]}  {record.status}{running}", file=sys.stderr, flush=True)


def _flatten(measures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested measures as dotted names, one value a line."""
    lines: list[tuple[str, Any]] = []
    for name, value in measures.items():
        if isinstance(value, dict) and value:
            lines.extend(_flatten(value, f"{prefix}{name}."))
        else:
            lines.append((f"{prefix}{name}", value))
    return lines


def _print_human(report: dict[str, Any]) -> None:
    print(f"study {report['study_id']}  input {report['input']}")
    print(f"  status: {report['status']}")
    if "reason" in report:
        print(f"  reason: {report['reason']}: {report['detail']}")
    regional = (report.get("results") or {}).get("regional") or {}
    hippocampus = {side: regional.get("regions", {}).get(f"hippocampus_{side}") for side in ("left", "right")}
    if hippocampus["left"] and hippocampus["right"]:
        asymmetry = regional["structures"]["hippocampus"]["asymmetry"]
        print(
            f"  hippocampus: left {hippocampus['left']['volume_ml']:.2f} mL, right "
            f"{hippocampus['right']['volume_ml']:.2f} mL, asymmetry {asymmetry} (atlas "
            f"{regional['atlas']['atlas']}, {regional['atlas']['licence'].split(':')[0]})"
        )
    for analysis, measures in (report.get("results") or {}).items():
        print(f"  {analysis}:")
        for name, value in _flatten(measures):
            print(f"    {name}: {json.dumps(value)}")
    if report["artifacts"]:
        print(f"  artifacts: {', '.join(report['artifacts'])}")
    timings = ", ".join(f"{step} {ms:.0f} ms" for step, ms in report["timings"].items())
    print(f"  timings: {timings}")


def demo(args: argparse.Namespace) -> int:
    # The local cloud needs the development extras (moto, aws-cdk-lib, nilearn): imported only here.
    from infra.local.cloud import LocalCloud
    from infra.local.processes import ProcessSettings
    from infra.local.samples import mni152_t1_path
    from infra.local.studies import UnsafeInput, report, scan_files, submit_files, wait_for_terminal

    # The local cloud reports failed invocations through logging: always shown.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    inputs: list[Path] = args.inputs or [mni152_t1_path()]
    missing = [str(path) for path in inputs if not path.exists()]
    if missing:
        print(f"voxelpipe demo: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    from voxelpipe.analyses import UnknownAnalysis, resolve

    try:
        resolve(args.analyses or [])
        # Every input read before anything runs: a folder with a symbolic link is refused whole.
        scans = [(path, *scan_files(path)) for path in inputs]
    except (UnknownAnalysis, UnsafeInput) as error:
        print(f"voxelpipe demo: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        defaults = ProcessSettings.from_env()
        processes = ProcessSettings(
            processes=defaults.processes if args.processes is None else args.processes,
            analysis_threads=(
                defaults.analysis_threads if args.analysis_threads is None else args.analysis_threads
            ),
        )
    except ValueError as error:
        print(f"voxelpipe demo: {error}", file=sys.stderr)
        return EXIT_USAGE
    print("starting the local cloud (moto, in process)...", file=sys.stderr, flush=True)
    quiet = {"POWERTOOLS_LOG_LEVEL": "INFO" if args.verbose else "WARNING"}
    with LocalCloud(env=quiet, processes=processes) as cloud:
        submitted = []
        for path, input_format, files in scans:
            study_id = submit_files(
                cloud, files, input_format=input_format, analyses=args.analyses or DEMO_ANALYSES
            )
            print(
                f"uploaded {path.name} ({input_format}, {len(files)} files) as study {study_id}",
                file=sys.stderr,
            )
            submitted.append((study_id, path.name))
        wait_for_terminal(
            [study_id for study_id, _ in submitted], timeout_s=args.timeout, on_change=_progress
        )
        reports = [report(cloud, study_id, name, args.output_dir).as_json() for study_id, name in submitted]
    for line in reports:
        if args.json:
            print(json.dumps(line), flush=True)
        else:
            _print_human(line)
    if args.output_dir is not None and not args.json:
        print(f"results and artifacts written under {args.output_dir}/")
    terminal = {status.value for status in TERMINAL_STATUSES}
    # An upload that was never ingested has no status at all: not terminal.
    return EXIT_OK if all(line["status"] in terminal for line in reports) else EXIT_NOT_TERMINAL


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return cli_remote.run(args)


if __name__ == "__main__":
    sys.exit(main())
