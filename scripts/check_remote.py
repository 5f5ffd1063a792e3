"""Check a backend host over SSH from a terminal: the same steps as the add-on's connection check.

Usage: ``python scripts/check_remote.py HOST [--port N] [--ssh-config FILE] [--identity FILE] [--python PATH]
[--work-folder DIR] [--json]``. HOST is an alias of your SSH config, ``host`` or ``user@host``. Prints one line
per step (reachable, authentication, python, torch, cuda, fast path) with what to do when one fails; sends the
backend package into the work folder on the way (once per version). Exit status 0 when the host can train, 2 when
not. Needs no bpy and no torch here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "neusblend_check_remote"


def _remote() -> types.ModuleType:
    """``client.remote`` of this checkout, imported as part of a package (its imports are relative)."""
    pkg = types.ModuleType(PKG)
    pkg.__path__ = [str(ROOT)]
    sys.modules[PKG] = pkg
    return importlib.import_module(f"{PKG}.client.remote")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host", help="an SSH config alias, host or user@host")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ssh-config", default="", help="an SSH config file instead of ~/.ssh/config")
    ap.add_argument("--identity", default="", help="a private key file")
    ap.add_argument("--python", default="python3", help="the remote Python with torch")
    ap.add_argument("--work-folder", default="~/neusblend", help="the remote folder for the backend and jobs")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = ap.parse_args(argv)
    remote = _remote()
    host = remote.RemoteHost(args.host, port=args.port, ssh_config=args.ssh_config, identity_file=args.identity,
                             python=args.python, work_folder=args.work_folder)
    report = remote.check_connection(host)
    if args.json:
        print(json.dumps({"ok": report.ok, "steps": [dataclasses.asdict(s) for s in report.steps],
                          "info": report.info}))
    else:
        print(remote.describe(report))
    return 0 if report.ok else 2


if __name__ == "__main__":
    sys.exit(main())
