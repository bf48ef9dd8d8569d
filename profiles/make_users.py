"""Write a CSV of synthetic users for the volume profile: id, email, name.

    python profiles/make_users.py                      # 1,000,000 rows
    python profiles/make_users.py --rows 50000 --out /tmp/users.csv

The default output is profiles/data/users.csv, where profiles/volume.yaml looks.
The file is generated, not committed: a million rows are about 40 MB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = Path(__file__).parent / "data" / "users.csv"


def write_users(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="") as out:
        out.write("id,email,name\n")
        batch = 100_000
        for first in range(0, rows, batch):
            out.writelines(
                f"{i},user{i:07d}@example.com,User {i:07d}\n"
                for i in range(first, min(rows, first + batch))
            )
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    write_users(args.out, args.rows)
    print(f"{args.rows:,} users written to {args.out}")


if __name__ == "__main__":
    main()
