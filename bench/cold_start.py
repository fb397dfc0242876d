"""Cold starts of the zip Lambdas: each handler's import beside the bare import of what it needs.

    python bench/cold_start.py [--repeat N] [--no-tracing] [--venv] [--json]

For each zip function, in one run: the median of N fresh-process imports of its handler, with
the environment the stack gives it (resource names, Powertools settings, and LAMBDA_TASK_ROOT so
that Powertools traces as it does under Tracing: Active; --no-tracing leaves it out), beside the
median of N fresh-process imports of the bare third-party modules its own code imports (those a
first-party module imports directly, read from `-X importtime`), and their ratio.

Where `make layers` has built up-to-date layers, the imports run under Python 3.12 with only the
function's code folder and its layers on sys.path, as in Lambda (their bytecode is there); else,
or with --venv, under this interpreter and its environment. PYTHONDONTWRITEBYTECODE is unset, so
sources without shipped bytecode are compiled once and then cached (in Lambda only the handler
module itself, a few lines, is compiled at each cold start).

`cold_start_rows()` / `print_cold_start_table()` serve other benches (pipeline_throughput.py).
The targets (issue 13): every handler <= 1.3x its bare dependencies; api <= 0.8 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "voxelpipe" / "python")]

from infra.layers import LAYERS_DIR, VOXELPIPE_LAYER, find_lambda_python, stale_layers  # noqa: E402
from voxelpipe.function_specs import FUNCTIONS, POWERTOOLS_ENV, FunctionSpec  # noqa: E402

# What the stack sets in every function, plus what the runtime sets.
STACK_ENV = {
    **POWERTOOLS_ENV,
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}
FIRST_PARTY = ("voxelpipe", "handler", "functions")
_TIMED_IMPORT = (
    "import sys, time\nsys.path[:0] = {path!r}\nt = time.perf_counter()\n{imports}\n"
    "print(time.perf_counter() - t)\n"
)


@dataclass(frozen=True)
class Setup:
    python: str
    layers: bool  # the built layers (else this interpreter's environment)
    tracing: bool


@dataclass(frozen=True)
class ColdStartRow:
    function: str
    groups: tuple[str, ...]
    handler_s: float
    bare_s: float
    ratio: float
    bare_modules: tuple[str, ...]


def setup(*, venv: bool = False, tracing: bool = True) -> Setup:
    if not venv and stale_layers(LAYERS_DIR) is None:
        return Setup(str(find_lambda_python()), True, tracing)
    return Setup(sys.executable, False, tracing)


def function_path(spec: FunctionSpec, how: Setup) -> list[str]:
    code = str(ROOT / spec.code_dir)
    if how.layers:
        layers = [VOXELPIPE_LAYER, *(group.value for group in spec.dependencies)]
        return [code, *(str(LAYERS_DIR / name / "python") for name in layers)]
    return [code, str(ROOT / "layers" / "voxelpipe" / "python")]


def function_env(spec: FunctionSpec, how: Setup) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE",)}
    if how.layers:
        env.pop("PYTHONPATH", None)
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    env.update(STACK_ENV)
    env.update({var.value: f"bench-{var.value.lower()}" for var in spec.env})
    env.update({var.value: value for var, value in spec.settings.items()})
    if how.tracing:
        env["LAMBDA_TASK_ROOT"] = str(ROOT / spec.code_dir)
    else:
        env.pop("LAMBDA_TASK_ROOT", None)
    return env


def _run(how: Setup, args: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # -s: no user site-packages; the layers run with `-S`-like isolation through sys.path order.
    return subprocess.run(
        [how.python, "-s", *args], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )


def direct_imports(spec: FunctionSpec, how: Setup) -> list[str]:
    """The third-party modules first-party code imports itself, in the order they load."""
    script = f"import sys\nsys.path[:0] = {function_path(spec, how)!r}\nimport handler\n"
    result = _run(how, ["-X", "importtime", "-c", script], function_env(spec, how), ROOT / spec.code_dir)
    entries: list[tuple[int, str]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        name_part = line.rsplit("|", 1)[1]
        depth = (len(name_part) - len(name_part.lstrip(" "))) // 2
        entries.append((depth, name_part.strip()))
    stdlib = sys.stdlib_module_names
    direct: list[str] = []
    stack: list[tuple[int, str]] = []
    # importtime prints each module after its children: reversed, a parent precedes them.
    for depth, name in reversed(entries):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else "handler"
        stack.append((depth, name))
        top = name.split(".")[0]
        if top in stdlib or top in FIRST_PARTY or top.startswith("_"):
            continue
        if parent.split(".")[0] in FIRST_PARTY and name not in direct:
            direct.append(name)
    loaded_order = [name for _, name in entries]
    return sorted(direct, key=loaded_order.index)


def median_import_s(spec: FunctionSpec, how: Setup, modules: Sequence[str], repeat: int) -> float:
    script = _TIMED_IMPORT.format(
        path=function_path(spec, how),
        # Some fail as they did under the handler (X-Ray's patchers of libraries that aren't there).
        imports="\n".join(f"try:\n    import {module}\nexcept ImportError:\n    pass" for module in modules),
    )
    env = function_env(spec, how)
    return statistics.median(
        float(_run(how, ["-c", script], env, ROOT / spec.code_dir).stdout.split()[-1]) for _ in range(repeat)
    )


def cold_start_rows(repeat: int = 5, *, venv: bool = False, tracing: bool = True) -> list[ColdStartRow]:
    how = setup(venv=venv, tracing=tracing)
    rows: list[ColdStartRow] = []
    for spec in FUNCTIONS:
        if spec.image:
            continue
        bare = direct_imports(spec, how)
        handler_s = median_import_s(spec, how, ["handler"], repeat)
        bare_s = median_import_s(spec, how, bare, repeat)
        rows.append(
            ColdStartRow(
                function=spec.name,
                groups=tuple(group.value for group in spec.dependencies),
                handler_s=handler_s,
                bare_s=bare_s,
                ratio=handler_s / bare_s if bare_s else float("inf"),
                bare_modules=tuple(bare),
            )
        )
    return rows


def describe(how: Setup) -> str:
    where = f"built layers ({LAYERS_DIR}), {how.python}" if how.layers else f"this environment, {how.python}"
    return f"{where}; tracing {'on (as deployed)' if how.tracing else 'off'}"


def print_cold_start_table(
    repeat: int = 5, *, venv: bool = False, tracing: bool = True, file: TextIO | None = None
) -> list[ColdStartRow]:
    rows = cold_start_rows(repeat, venv=venv, tracing=tracing)
    out = file or sys.stdout
    how = describe(setup(venv=venv, tracing=tracing))
    print(f"cold imports, median of {repeat} fresh processes: {how}", file=out)
    columns = f"{'function':12} {'groups':20} {'handler s':>9} {'bare s':>7} {'ratio':>6}"
    print(f"{columns}  bare modules (their packages)", file=out)
    for row in rows:
        print(
            f"{row.function:12} {'+'.join(row.groups):20} {row.handler_s:9.3f} {row.bare_s:7.3f} "
            f"{row.ratio:6.2f}  {' '.join(dict.fromkeys(m.split('.')[0] for m in row.bare_modules))}",
            file=out,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-tracing", action="store_true", help="as outside Lambda: no X-Ray")
    parser.add_argument("--venv", action="store_true", help="this environment, not the built layers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.json:
        rows = cold_start_rows(args.repeat, venv=args.venv, tracing=not args.no_tracing)
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print_cold_start_table(args.repeat, venv=args.venv, tracing=not args.no_tracing)


if __name__ == "__main__":
    main()
