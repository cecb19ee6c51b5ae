"""python -m components.pusher {list,verify,rollback} --destination DIR --model-name NAME

  list                 every version with its variant, accuracy, size; * marks LATEST
  verify [VERSION]     checks sha256 and size against the manifest (default: LATEST)
  rollback VERSION     points LATEST at VERSION (which must verify)
Only `rollback` writes, and only LATEST.
"""
from __future__ import annotations

import argparse
import sys

from components.pusher.registry import Registry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.pusher", description=__doc__.splitlines()[0])
    parser.add_argument("--destination", required=True, help="the push_destination base folder")
    parser.add_argument("--model-name", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    verify = sub.add_parser("verify")
    verify.add_argument("version", nargs="?", type=int)
    rollback = sub.add_parser("rollback")
    rollback.add_argument("version", type=int)
    args = parser.parse_args(argv)
    registry = Registry(args.destination, args.model_name)
    try:
        if args.command == "list":
            rows = registry.list()
            if not rows:
                print(f"no versions in {registry.root}")
            for r in rows:
                mark = "*" if r["latest"] else " "
                if "error" in r:
                    print(f"{mark} {r['version']:>4}  ERROR {r['error']}")
                    continue
                acc = f"{r['accuracy']:.4f}" if isinstance(r.get("accuracy"), float) else "-"
                print(f"{mark} {r['version']:>4}  {r['variant'] or '-':<14} accuracy {acc}  "
                      f"{r['size_bytes']:>10} bytes  {r['sha256'][:12]}  {r['created_at']}")
            return 0
        if args.command == "verify":
            version = args.version if args.version is not None else registry.latest()
            if version is None:
                print(f"no LATEST in {registry.root}", file=sys.stderr)
                return 1
            problems = registry.verify(version)
            if problems:
                print(f"version {version}: FAILED: " + "; ".join(problems))
                return 1
            print(f"version {version}: OK")
            return 0
        registry.rollback(args.version)
        print(f"LATEST -> {args.version}")
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
