"""tfx-quantization-registry (or python -m tfx_quantization.pusher) {list,verify,rollback} --destination DIR --model-name NAME [--target T]

  list                 every version with its variant, accuracy, size; * marks LATEST
  verify [VERSION]     checks the manifest's schema, the model's sha256 and size against it,
                       and with --public-key the manifest's signature (default: LATEST)
  rollback VERSION     points LATEST at VERSION (which must verify, signature too with --public-key)
With --target T, the same commands act on deployment target T's registry
(DIR/NAME/targets/T/); without it, on the model's main registry (the primary target's).
Only `rollback` writes, and only LATEST. DIR may be a local folder, s3://… or gs://….
The options may come before or after the command.
"""
from __future__ import annotations

import argparse
import sys

from tfx_quantization import fsutil
from tfx_quantization.registry import TARGETS_FOLDER, Registry, open_registry
from tfx_quantization.settings import SettingsError


def _common(default) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--destination", default=default, help="the registry's base folder or URI (push destination)")
    common.add_argument("--model-name", default=default, help="the model's folder in the registry")
    common.add_argument("--target", default=default, help="a deployment target's registry (default: the main one)")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfx-quantization-registry", description=__doc__.splitlines()[0],
                                     parents=[_common(None)], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    # After the command the same options are accepted; SUPPRESS keeps values given before it.
    common = _common(argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], help="every version; * marks LATEST")
    verify = sub.add_parser("verify", parents=[common], help="check a version's bytes against its manifest")
    verify.add_argument("version", nargs="?", type=int, help="default: LATEST")
    verify.add_argument("--public-key", default="", help="PEM public key: also check the manifest's signature")
    rollback = sub.add_parser("rollback", parents=[common], help="point LATEST at an earlier intact version")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--public-key", default="", help="PEM public key: the version's signature must verify")
    return parser


def _print_list(registry: Registry) -> None:
    rows = registry.list()
    if not rows:
        print(f"no versions in {registry.root}")
        return
    print(f"  {'version':>7}  {'variant':<17} {'accuracy':>8}  {'bytes':>10}  {'sha256':<12}  created")
    for r in rows:
        mark = "*" if r["latest"] else " "
        if "error" in r:
            print(f"{mark} {r['version']:>7}  ERROR {r['error']}")
            continue
        acc = f"{r['accuracy']:.4f}" if isinstance(r.get("accuracy"), float) else "-"
        print(f"{mark} {r['version']:>7}  {r['variant'] or '-':<17} {acc:>8}  {r['size_bytes']:>10}  "
              f"{r['sha256'][:12]}  {r['created_at']}")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    missing = [o for o, v in (("--destination", args.destination), ("--model-name", args.model_name)) if not v]
    if missing:
        parser.error(f"{' and '.join(missing)} required")
    try:
        registry = open_registry(args.destination, args.model_name, args.target or "")
        if args.target and not registry.exists():
            folder = fsutil.join(args.destination, args.model_name, TARGETS_FOLDER)
            known = sorted(fsutil.listdir(folder)) if fsutil.isdir(folder) else []
            print(f"error: no target {args.target!r} for model {args.model_name!r} in {args.destination}"
                  + (f" (it has: {', '.join(known)})" if known else " (the model has no target registries)"),
                  file=sys.stderr)
            return 2
        if not registry.exists():
            known = [n for n in fsutil.listdir(args.destination) if not n.startswith(".")]
            print(f"error: no model {args.model_name!r} in {args.destination}"
                  + (f" (it holds: {', '.join(known)})" if known else " (the destination is empty or missing)"),
                  file=sys.stderr)
            return 2
        if args.command == "list":
            _print_list(registry)
            return 0
        if args.command == "verify":
            version = args.version if args.version is not None else registry.latest()
            if version is None:
                print(f"no LATEST in {registry.root}", file=sys.stderr)
                return 1
            problems = registry.verify(version, public_key=args.public_key)
            if problems:
                print(f"version {version}: FAILED: " + "; ".join(problems))
                return 1
            status = registry.signature_status(version)
            if args.public_key:
                print(f"version {version}: OK (signature verified, model sha256 and manifest schema checked)")
            elif status == "signed":
                print(f"version {version}: OK (hashes and schema; signed, signature not checked: pass --public-key)")
            else:
                print(f"version {version}: OK (hashes and schema; unsigned)")
            return 0
        registry.rollback(args.version, public_key=args.public_key)
        print(f"LATEST -> {args.version}")
        return 0
    except (ValueError, SettingsError) as e:  # SigningError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


def console_main() -> None:
    """The console script's entry point: main(), leaving without the interpreter's teardown
    (fsutil.exit_process: tensorflow-io can abort at exit after S3 use)."""
    fsutil.exit_process(main())


if __name__ == "__main__":
    console_main()
