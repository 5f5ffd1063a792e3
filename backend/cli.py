"""``python -m backend <command>``: the backend's command line.

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args, emitter) -> int``; the
module is imported only when its command runs, so ``poses`` never imports torch.
With ``--json`` (what the Blender client passes) stdout carries only protocol messages, one JSON object a line;
without it the same messages are printed as short human-readable lines. Logs always go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from . import protocol
from .errors import BackendError, io_error

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("backend.train", "train NeuS on a posed capture and stream meshes"),
    "extract": ("backend.extract", "extract a mesh from a checkpoint at any resolution"),
    "poses": ("backend.poses", "estimate camera poses from photos with pycolmap"),
    "eval": ("backend.evaluate", "compare a mesh with a reference and score held-out views"),
    "info": ("backend.info", "report the Python, torch, devices and fast paths available"),
    "export-capture": ("backend.export_capture", "write a posed capture's cameras, points and region as a poses job's "
                                                 "files (for the Blender import)"),
}

log = logging.getLogger("backend")


def _module(name: str):  # noqa: ANN202 - returns a module
    modname = COMMANDS[name][0]
    # relative to this package, so the backend also runs as a subpackage of the installed extension
    return importlib.import_module("." + modname.split(".", 1)[1], __package__)


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands or COMMANDS:
        help_text = COMMANDS[name][1]
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print protocol messages as JSON lines on stdout")
        p.add_argument("-v", "--verbose", action="store_true", help="more logging on stderr")
        try:
            _module(name).add_arguments(p)
        except ImportError as exc:  # a command whose module is missing still shows up with the reason
            p.set_defaults(_import_error=exc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Parse only the command's own parser so that a broken optional module never hides the others.
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([name] if name in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    emitter = protocol.Emitter(sys.stdout, json_mode=args.json)
    if getattr(args, "_import_error", None) is not None:
        emitter.emit("error", message=f"command {args.command!r} cannot run: {args._import_error}",
                     hint="Install the backend's requirements (see README) in this Python.")
        return protocol.EXIT_ERROR
    try:
        return int(_module(args.command).run(args, emitter) or 0)
    except BackendError as exc:
        emitter.emit("error", message=exc.message, hint=exc.hint, file=exc.file)
        return protocol.EXIT_ERROR
    except OSError as exc:  # a full disk, no permission, an I/O error: the machine's, named with its file
        known = io_error(exc)
        if known is None:
            traceback.print_exc(file=sys.stderr)
            emitter.emit("error", message=f"{type(exc).__name__}: {exc}", file=exc.filename,
                         hint="This is a bug in the backend; the traceback is on stderr. Please report it.")
        else:
            log.error("%s", exc)
            emitter.emit("error", message=known.message, hint=known.hint, file=known.file)
        return protocol.EXIT_ERROR
    except KeyboardInterrupt:
        emitter.emit("error", message="interrupted", hint="Run the command again; training resumes with --resume.")
        return protocol.EXIT_CANCELLED
    except Exception as exc:  # the client must always get an error message, never a bare traceback
        traceback.print_exc(file=sys.stderr)
        emitter.emit("error", message=f"{type(exc).__name__}: {exc}",
                     hint="This is a bug in the backend; the traceback is on stderr. Please report it.")
        return protocol.EXIT_ERROR
