"""Command line: `python -m ssl_fast info | bench ...`."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    from .info import backend_info

    info = backend_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    ext = info["extension"]
    print(f"torch            {info['torch']} (CUDA {info['torch_cuda'] or 'none'}, "
          f"GPU {'available' if info['cuda_available'] else 'not available'})")
    if ext["loaded"]:
        archs = ext["cuda_archs"] or "-"
        print(f"ssl_fast._C      built against torch {ext['torch']}, CUDA kernels "
              f"{'on (' + archs + ')' if ext['cuda'] else 'off'}, debug {'on' if ext['debug'] else 'off'}, "
              f"gcc {ext['compiler']}")
    else:
        print(f"ssl_fast._C      not loaded: {ext['error']}")
    print(f"backend          {info['backend']} (SSL_FAST_BACKEND)")
    print(f"{'op':<24} {'cpu':<6} cuda")
    for op, kernels in info["ops"].items():
        print(f"{op:<24} {'yes' if kernels['cpu'] else 'no':<6} {'yes' if kernels['cuda'] else 'no'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ssl_fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions, build flags and the kernels present for each op")
    info.add_argument("--json", action="store_true", help="print the record as JSON")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # a user error: one line, exit status 2
        print(f"ssl_fast: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
