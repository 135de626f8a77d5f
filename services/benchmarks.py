"""`itg bench`: run the benchmarks in bench/ one after the other, with progress, and collect
the `RESULT name=value ...` line each one ends with into one summary."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench"


def available() -> list[str]:
    """Scripts in bench/ that run on their own and take --quick, as every benchmark does;
    helpers (workload.py) and the processes benchmarks start (reference_server.py) do not."""
    if not BENCH.is_dir():
        return []
    return sorted(p.stem for p in BENCH.glob("*.py")
                  if '__name__ == "__main__"' in (text := p.read_text()) and '"--quick"' in text)


def add_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="run the benchmarks in bench/ and summarise them",
                           description="Each benchmark prints its figures and ends with one "
                                       "RESULT line; see the docstring of each script.")
    bench.add_argument("names", nargs="*", metavar="NAME",
                       help=f"benchmarks to run (default: all of {', '.join(available())})")
    bench.add_argument("--quick", action="store_true", help="short runs (each under ~30 s)")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and stop")


def run(args: argparse.Namespace) -> int:
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"itg bench: unknown benchmark(s) {', '.join(unknown)}; available: "
              f"{', '.join(available())}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(names))
        return 0
    results: dict[str, str] = {}
    failed = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] bench/{name}.py{' --quick' if args.quick else ''}", flush=True)
        start = time.monotonic()
        result = _one(name, args.quick)
        took = time.monotonic() - start
        if result is None:
            failed.append(name)
            print(f"[{i}/{len(names)}] {name} FAILED after {took:.0f} s", flush=True)
        else:
            results[name] = result
            print(f"[{i}/{len(names)}] {name} done in {took:.0f} s", flush=True)
    print("\nsummary:")
    for name, result in results.items():
        print(f"  {name:<18} {result}")
    for name in failed:
        print(f"  {name:<18} FAILED")
    return 1 if failed else 0


def _one(name: str, quick: bool) -> str | None:
    """Run one script, streaming its output; its RESULT line, or None if it failed."""
    command = [sys.executable, str(BENCH / f"{name}.py"), *(["--quick"] if quick else [])]
    result = None
    with subprocess.Popen(command, cwd=BENCH.parent, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"    {line}", end="", flush=True)
            if line.startswith("RESULT "):
                result = line[len("RESULT "):].strip()
    return result if proc.returncode == 0 else None
