"""`python -m bench`: run every bench/bench_*.py script in turn, each in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    names = argv if argv else [p.stem for p in sorted(HERE.glob("bench_*.py"))]
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent)
        if rc != 0:
            failed.append(f"{name} (exit {rc})")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
