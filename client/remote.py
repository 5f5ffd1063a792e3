"""The backend on another machine over SSH (no bpy, no torch).

The system's ``ssh`` client runs every remote command, in batch mode (never a password prompt) with host-key
checking on, with the user's own keys, agent and SSH config. Commands are argument lists: the remote command line
is ``shlex.join`` of a list whose scripts are constants and whose user values (paths, the Python) travel as
positional arguments (``sh -c SCRIPT sh ARG...``), so nothing the user typed is ever spliced into shell code.

What travels: the ``backend/`` package (a tar stream on the ssh process's stdin, into ``WORK/backend-<hash>``, sent
once per version) and a capture folder (``WORK/captures/<name>-<hash>``, with progress in bytes). The remote run is
``cd WORK && PYTHONPATH=WORK/backend-<hash> exec PYTHON -m backend <command> --json ...`` started through
:class:`.process.BackendProcess`, so its messages stream like a local backend's; closing the local ssh (Cancel)
closes the remote backend's stdin, which ``train --exit-on-stdin-close`` watches.

:func:`check_connection` tells apart what can go wrong (unreachable host, refused key, unknown host key, missing
remote Python, no torch, no CUDA) with one step result each.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..backend.protocol import ProtocolError, decode_message

#: ``progress(bytes_sent, bytes_total)`` while a folder travels.
Progress = Callable[[int, int], None]

#: ssh's own exit status for its errors (connection, authentication, host key); other codes are the remote
#: command's.
SSH_ERROR = 255

#: Marker written after a folder arrived whole (an interrupted upload is sent again).
COMPLETE = ".complete"

_SKIP_NAMES = {"__pycache__", ".DS_Store", ".git"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


class RemoteError(Exception):
    """Something about the remote host failed; ``message`` says what, ``hint`` what to do."""

    def __init__(self, message: str, hint: str, kind: str = "remote") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind  # "unreachable", "authentication", "host-key", "python", "upload", "remote"


@dataclass
class RemoteHost:
    """Where and how to reach the backend machine (nothing secret: keys stay in their files or the agent).

    Attributes:
        host: a host alias of the SSH config, ``host`` or ``user@host``.
        port: the SSH port (0: the config's or 22).
        ssh_config: an SSH config file to use instead of ``~/.ssh/config`` ("" : ssh's default).
        identity_file: a private key file ("" : the config's, the agent's or ssh's defaults).
        python: the remote Python with torch (a name on the remote PATH or an absolute path).
        work_folder: the remote folder for the backend, captures and jobs; ``~/...`` is under the remote home.
        ssh: the local ssh client.
        connect_timeout_s: give up connecting after this long.
        alive_interval_s: keep-alive probes, so a dropped connection ends the run within about 3 intervals.
    """

    host: str
    port: int = 0
    ssh_config: str = ""
    identity_file: str = ""
    python: str = "python3"
    work_folder: str = "~/neusblend"
    ssh: str = "ssh"
    connect_timeout_s: int = 10
    alive_interval_s: int = 15

    def validate(self) -> None:
        """Raises :class:`RemoteError` for values ssh would misread (an option where the host belongs)."""
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise RemoteError(f"the backend host {self.host!r} is not a host name",
                              "Enter a host alias of your SSH config, a host name or user@host.", "config")
        if not 0 <= self.port <= 65535:
            raise RemoteError(f"the SSH port {self.port} is out of range", "Use 0 (the default) or 1-65535.",
                              "config")
        if not self.python or self.python.startswith("-"):
            raise RemoteError(f"the remote Python {self.python!r} is not a command",
                              "Enter the remote Python's path, e.g. /home/me/venv/bin/python.", "config")
        for name, path in (("SSH config file", self.ssh_config), ("identity file", self.identity_file)):
            if path and not Path(path).expanduser().is_file():
                raise RemoteError(f"the {name} {path} does not exist", f"Choose an existing {name} or leave it "
                                  "empty.", "config")

    @property
    def work(self) -> str:
        """The work folder as the remote shell sees it (relative paths start in the remote home)."""
        w = self.work_folder.strip() or "~/neusblend"
        if w == "~":
            return "."
        if w.startswith("~/"):
            return w[2:].rstrip("/") or "."
        return w.rstrip("/") or "/"

    def path(self, *parts: str) -> str:
        """A path inside the work folder (POSIX)."""
        return posixpath.join(self.work, *parts)


def ssh_argv(host: RemoteHost, remote_argv: Sequence[str]) -> list[str]:
    """The local command that runs ``remote_argv`` on ``host`` (no tty, batch mode, host keys checked).

    The remote side gets ``shlex.join(remote_argv)`` as its command line, one word per list item.
    """
    host.validate()
    argv = [host.ssh, "-T", "-x",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={int(host.connect_timeout_s)}",
            "-o", f"ServerAliveInterval={int(host.alive_interval_s)}", "-o", "ServerAliveCountMax=3",
            "-o", "ForwardAgent=no"]
    if host.ssh_config:
        argv += ["-F", str(Path(host.ssh_config).expanduser())]
    if host.identity_file:
        argv += ["-i", str(Path(host.identity_file).expanduser())]
    if host.port:
        argv += ["-p", str(int(host.port))]
    return [*argv, host.host, shlex.join([str(a) for a in remote_argv])]


def shell_argv(script: str, *args: str) -> list[str]:
    """``sh -c SCRIPT sh ARGS...``: a constant script that reads the values as ``"$1"``, ``"$2"``..."""
    return ["sh", "-c", script, "sh", *args]


# ---------------------------------------------------------------------------------------------------------------
# telling ssh's failures apart


_UNREACHABLE = ("connection refused", "could not resolve hostname", "name or service not known", "timed out",
                "no route to host", "network is unreachable", "connection closed by remote host",
                "connection reset")


def classify_failure(host: RemoteHost, returncode: int, stderr: str, what: str = "") -> RemoteError:
    """The error for a failed ssh run: ssh's own (exit 255) or the remote command's."""
    err = stderr.strip()
    low = err.lower()
    where = f"{host.host}" + (f" port {host.port}" if host.port else "")
    last = err.splitlines()[-1] if err else f"exit status {returncode}"
    if returncode == SSH_ERROR or returncode < 0 and not err:
        if "host key verification failed" in low or "remote host identification has changed" in low:
            return RemoteError(f"the host key of {where} is unknown or has changed ({last})",
                               f"Connect once in a terminal (ssh {host.host}) and check the fingerprint, so the "
                               "key lands in known_hosts; batch mode never accepts a key on its own.", "host-key")
        if "permission denied" in low or "too many authentication failures" in low:
            return RemoteError(f"{where} refused the SSH key: permission denied ({last})",
                               "Add your public key to the remote ~/.ssh/authorized_keys (ssh-copy-id), or set "
                               "the identity file; a key with a passphrase must be loaded into ssh-agent.",
                               "authentication")
        if any(s in low for s in _UNREACHABLE):
            reason = "connection refused" if "refused" in low else last
            return RemoteError(f"cannot reach {where}: {reason}",
                               "Check the host name and the port, and that sshd runs there and is not behind a "
                               "firewall.", "unreachable")
        if returncode == SSH_ERROR:
            return RemoteError(f"ssh to {where} failed: {last}",
                               "Run the same ssh command in a terminal to see what it needs.", "unreachable")
    if returncode == 127 or "command not found" in low or (returncode == 126 and "not found" in low):
        return RemoteError(f"the remote Python {host.python} was not found on {host.host}: command not found "
                           f"(exit {returncode})",
                           "Set the remote Python to the full path of a Python 3.10+ with torch there (for "
                           "example /home/you/venv/bin/python).", "python")
    if returncode == 126:
        return RemoteError(f"the remote Python {host.python} on {host.host} cannot be executed (exit 126)",
                           "Choose an executable Python, not a folder.", "python")
    return RemoteError(f"{what or 'the remote command'} failed on {host.host} (exit {returncode}): {last}",
                       "See the log for the remote output.", "remote")


def run_remote(host: RemoteHost, remote_argv: Sequence[str], *, timeout: float = 60.0, what: str = ""
               ) -> subprocess.CompletedProcess[str]:
    """Run a short remote command and return it when it succeeded; otherwise raise :class:`RemoteError`."""
    try:
        proc = subprocess.run(ssh_argv(host, remote_argv), stdin=subprocess.DEVNULL,  # noqa: S603
                               capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise RemoteError(f"the ssh client {host.ssh} is not installed here",
                          "Install OpenSSH's client (Windows: Settings > Optional features > OpenSSH Client).",
                          "config") from exc
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what or 'the remote command'} on {host.host} did not finish within {timeout:.0f} s",
                          "Check the connection; the host may be overloaded.", "unreachable") from exc
    if proc.returncode != 0:
        raise classify_failure(host, proc.returncode, proc.stderr, what)
    return proc


# ---------------------------------------------------------------------------------------------------------------
# the connection check


@dataclass
class CheckStep:
    """One line of Check Connection: ``ok`` True / False, or None when an earlier failure kept it from running."""

    name: str  # "reachable", "authentication", "python", "torch", "cuda", "fast path"
    ok: bool | None
    message: str
    hint: str = ""


@dataclass
class ConnectionReport:
    steps: list[CheckStep] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # what the remote ``backend info`` said

    @property
    def ok(self) -> bool:
        """The host can train (CUDA and the fast path are reported, not required)."""
        return all(s.ok for s in self.steps if s.name in ("reachable", "authentication", "python", "torch"))

    def step(self, name: str) -> CheckStep:
        return next(s for s in self.steps if s.name == name)


_CHECK_NAMES = ("reachable", "authentication", "python", "torch", "cuda", "fast path")


def check_connection(host: RemoteHost, *, timeout: float = 120.0) -> ConnectionReport:
    """Reachability, authentication, the remote Python, torch, CUDA and the fast path (through the remote
    ``python -m backend info``, after sending the backend when it is not there yet). Blocks (run it on a thread)."""
    report = ConnectionReport()

    def fail_rest(from_name: str) -> ConnectionReport:
        for name in _CHECK_NAMES[_CHECK_NAMES.index(from_name):]:
            report.steps.append(CheckStep(name, None, "not checked (an earlier step failed)"))
        return report

    try:
        host.validate()
        run_remote(host, ["true"], timeout=timeout, what="the connection test")
    except RemoteError as exc:
        if exc.kind in ("unreachable", "config"):
            report.steps.append(CheckStep("reachable", False, exc.message, exc.hint))
            return fail_rest("authentication")
        report.steps.append(CheckStep("reachable", True, f"{host.host} answers"))
        report.steps.append(CheckStep("authentication", False, exc.message, exc.hint))
        return fail_rest("python")
    report.steps.append(CheckStep("reachable", True, f"{host.host} answers"))
    report.steps.append(CheckStep("authentication", True, "logged in with the key, without a password"))
    try:
        proc = run_remote(host, [host.python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
                          timeout=timeout, what="the remote Python")
        major, minor = (int(x) for x in proc.stdout.split()[:2])
    except (RemoteError, ValueError) as exc:
        msg = exc.message if isinstance(exc, RemoteError) else f"{host.python} printed no version"
        hint = exc.hint if isinstance(exc, RemoteError) else "Choose a CPython 3.10 or newer."
        report.steps.append(CheckStep("python", False, msg, hint))
        return fail_rest("torch")
    if (major, minor) < (3, 10):
        report.steps.append(CheckStep("python", False, f"the remote Python is {major}.{minor}; 3.10+ is needed",
                                      "Point the remote Python at a newer interpreter (a venv or conda env)."))
        return fail_rest("torch")
    report.steps.append(CheckStep("python", True, f"{host.python}: Python {major}.{minor}"))
    try:
        backend_dir = ensure_backend(host, timeout=timeout)
        proc = run_remote(host, backend_command(host, backend_dir, "info"), timeout=timeout,
                          what="python -m backend info")
        info = _done_info(proc.stdout)
    except RemoteError as exc:
        report.steps.append(CheckStep("torch", False, exc.message, exc.hint))
        return fail_rest("cuda")
    report.info = info
    if not info.get("has_torch"):
        report.steps.append(CheckStep("torch", False, f"torch is not installed in {host.python}",
                                      "pip install -r requirements-backend.txt in that environment (README)."))
        return fail_rest("cuda")
    missing = [m for m in ("numpy", "PIL", "mcubes") if not info.get(f"has_{m}")]
    report.steps.append(CheckStep("torch", not missing, f"torch {info.get('torch', '?')}"
                                  + (f"; missing {', '.join(missing)}" if missing else ""),
                                  "pip install -r requirements-backend.txt there." if missing else ""))
    if info.get("cuda"):
        report.steps.append(CheckStep("cuda", True, f"{info.get('cuda_device', 'a CUDA GPU')}, "
                                      f"{info.get('cuda_memory_gb', '?')} GB"))
    else:
        report.steps.append(CheckStep("cuda", False, "no CUDA GPU: training runs on the remote CPU",
                                      "Install torch's CUDA build there, and check nvidia-smi."))
    fast = bool(info.get("cuda") and info.get("has_triton"))
    report.steps.append(CheckStep("fast path", fast, "Triton kernels on the GPU" if fast else
                                  "reference path (no Triton, or no CUDA)",
                                  "" if fast else "Triton comes with torch's CUDA build on Linux."))
    return report


def _done_info(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        try:
            msg = decode_message(line)
        except ProtocolError:
            continue
        if msg.get("type") == "done":
            return dict(msg.get("info") or {})
    raise RemoteError("the remote backend info printed no result", "Run it with the remote Python by hand.")


# ---------------------------------------------------------------------------------------------------------------
# sending folders


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # linked photos and mask folders too
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_NAMES)
        out += [Path(dirpath) / f for f in sorted(filenames)
                if f not in _SKIP_NAMES and not f.endswith(_SKIP_SUFFIXES) and f != COMPLETE]
    return out


def tree_digest(root: Path, *, content: bool = True) -> str:
    """A short hash of a folder: names and contents (``content``) or names, sizes and times (large captures)."""
    h = hashlib.sha256()
    for f in _files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        if content:
            h.update(f.read_bytes())
        else:
            st = f.stat()
            h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class _Counting:
    """A write-only file that counts the bytes passing into ``raw`` and reports them."""

    def __init__(self, raw: IO[bytes], total: int, progress: Progress | None) -> None:
        self.raw, self.total, self.progress, self.sent = raw, total, progress, 0
        self._last = 0.0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sent += len(data)
        now = time.monotonic()
        if self.progress is not None and now - self._last > 0.2:
            self._last = now
            self.progress(self.sent, self.total)
        return len(data)


def remote_exists(host: RemoteHost, path: str, *, timeout: float = 60.0) -> bool:
    """Whether ``path`` (relative to the remote home or absolute) is a file there."""
    try:
        run_remote(host, shell_argv('test -f "$1"', path), timeout=timeout, what="looking for " + path)
    except RemoteError as exc:
        if exc.kind == "remote":
            return False
        raise
    return True


def send_tree(host: RemoteHost, source: Path, dest: str, *, arc_root: str = ".", progress: Progress | None = None,
              timeout: float = 3600.0) -> int:
    """Stream ``source`` as a tar archive over ssh into ``dest`` (created; ``arc_root`` names it inside);
    writes ``dest/.complete`` at the end. Returns the bytes sent."""
    files = _files(source)
    total = sum(f.stat().st_size + 512 for f in files)
    script = 'mkdir -p "$1" && tar -C "$1" -xf - && touch "$1/.complete"'
    with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: a chatty remote tar cannot block the upload
        try:
            proc = subprocess.Popen(ssh_argv(host, shell_argv(script, dest)), stdin=subprocess.PIPE,  # noqa: S603
                                    stdout=subprocess.DEVNULL, stderr=errfile)
        except FileNotFoundError as exc:
            raise RemoteError(f"the ssh client {host.ssh} is not installed here", "Install OpenSSH's client.",
                              "config") from exc
        assert proc.stdin is not None
        counter = _Counting(proc.stdin, total, progress)
        broken = False
        try:
            with tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
                              dereference=True) as tar:  # a linked file travels as its contents
                for f in files:
                    rel = f.relative_to(source).as_posix()
                    tar.add(str(f), arcname=posixpath.normpath(posixpath.join(arc_root, rel)), recursive=False)
        except BrokenPipeError:
            broken = True  # the remote side went away: its status and stderr say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RemoteError(f"sending {source} to {host.host} did not finish within {timeout:.0f} s",
                              "Check the connection.", "upload") from None
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if proc.returncode != 0 or broken:
        e = classify_failure(host, proc.returncode or SSH_ERROR, err, f"sending {source}")
        if e.kind == "remote":
            raise RemoteError(f"sending {source} to {host.host}:{dest} failed: {e.message}",
                              "Check the free space and the permissions of the remote work folder.", "upload")
        raise e
    if progress is not None:
        progress(counter.sent, total)
    return counter.sent


class _CountingReader:
    """A read-only file that counts the bytes read from ``raw`` and reports them (total unknown: 0)."""

    def __init__(self, raw: IO[bytes], progress: Progress | None) -> None:
        self.raw, self.progress, self.received = raw, progress, 0
        self._last = 0.0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.received += len(data)
        now = time.monotonic()
        if self.progress is not None and now - self._last > 0.2:
            self._last = now
            self.progress(self.received, 0)
        return data


def receive_tree(host: RemoteHost, source: str, dest: str | os.PathLike[str], *, progress: Progress | None = None,
                 timeout: float = 3600.0) -> list[str]:
    """Copy the remote folder ``source`` (relative to the work folder or absolute) into ``dest``, a new or empty
    local folder, as a tar stream over ssh: the final mesh, a checkpoint, a whole job. Only plain files and folders
    come (links and devices are left out, names that would land outside ``dest`` refused); a failed copy leaves
    nothing behind. Returns the names left out."""
    out = Path(dest)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RemoteError(f"{out} exists and is not an empty folder", "Choose a new folder to copy into; nothing "
                          "in an existing one is overwritten.", "download")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = source if source.startswith("/") else host.path(source)
    skipped: list[str] = []
    with tempfile.TemporaryFile() as errfile:
        try:
            proc = subprocess.Popen(ssh_argv(host, shell_argv('cd "$1" && tar -cf - .', path)),  # noqa: S603
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
        except FileNotFoundError as exc:
            raise RemoteError(f"the ssh client {host.ssh} is not installed here", "Install OpenSSH's client.",
                              "config") from exc
        assert proc.stdout is not None
        error: Exception | None = None
        reader = _CountingReader(proc.stdout, progress)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    name = posixpath.normpath(member.name)
                    if not (member.isfile() or member.isdir()) or name.startswith(("/", "..")):
                        skipped.append(member.name)
                        continue
                    if name == ".":
                        continue
                    member.name = name
                    tar.extract(member, out, set_attrs=False, **_DATA_FILTER)
        except (tarfile.TarError, OSError) as exc:
            error = exc
        finally:
            proc.stdout.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errfile.seek(0)
        err = errfile.read().decode(errors="replace")
    if proc.returncode != 0 or error is not None:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():  # the folder was empty: all of it is this copy's
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        e = classify_failure(host, proc.returncode if proc.returncode else SSH_ERROR, err or str(error),
                             f"copying {path}")
        if e.kind == "remote" or proc.returncode == 0:
            raise RemoteError(f"copying {host.host}:{path} to {out} failed: {err.strip() or error}",
                              "Check that the remote job still exists, and the free space here.", "download")
        raise e
    if progress is not None:
        progress(reader.received, reader.received)
    return skipped


#: tarfile's own safety filter where this Python has it (3.11.4+): no absolute names, links out, devices.
_DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def backend_root() -> Path:
    """The local folder holding ``backend/`` (the extension or the checkout)."""
    return Path(__file__).resolve().parent.parent


def ensure_backend(host: RemoteHost, *, progress: Progress | None = None, timeout: float = 600.0) -> str:
    """Send the ``backend`` package unless this version is there already; returns its folder (relative to the
    work folder), the remote PYTHONPATH entry."""
    root = backend_root()
    name = "backend-" + tree_digest(root / "backend")
    if not remote_exists(host, host.path(name, COMPLETE), timeout=timeout):
        send_tree(host, root / "backend", host.path(name), arc_root="backend", progress=progress, timeout=timeout)
    return name


def send_capture(host: RemoteHost, folder: str | os.PathLike[str], *, progress: Progress | None = None,
                 timeout: float = 3600.0) -> str:
    """Send a capture folder (photos, masks, a poses job) unless it is there already; returns its path relative
    to the work folder (``captures/<name>-<hash>``), what ``--data`` of the remote run takes."""
    src = Path(folder)
    if not src.is_dir():
        raise RemoteError(f"the capture folder {src} does not exist", "Choose the folder of your photos.", "upload")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name)[:40] or "capture"
    rel = posixpath.join("captures", f"{safe}-{tree_digest(src, content=False)}")
    if not remote_exists(host, host.path(rel, COMPLETE), timeout=timeout):
        send_tree(host, src, host.path(rel), progress=progress, timeout=timeout)
    return rel


# ---------------------------------------------------------------------------------------------------------------
# running the backend there

_RUN = 'cd "$1" && PYTHONPATH="$PWD/$2" && export PYTHONPATH PYTHONUNBUFFERED=1 && shift 2 && exec env "$@"'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def backend_command(host: RemoteHost, backend_dir: str, command: str, args: Iterable[str] = (),
                    env: Mapping[str, str] | None = None) -> list[str]:
    """The remote argv of ``python -m backend COMMAND --json ARGS`` in the work folder (paths in ``args``
    relative to it), with ``env`` set for it (e.g. ``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``)."""
    assigns = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(key):
            raise RemoteError(f"{key!r} is not an environment variable name", "Use letters, digits and _.", "config")
        assigns.append(f"{key}={value}")
    if "=" in host.python:
        raise RemoteError(f"the remote Python {host.python!r} contains '='", "Use a path without '='.", "config")
    return shell_argv(_RUN, host.work, backend_dir, *assigns, host.python, "-m", "backend", command, "--json",
                      *[str(a) for a in args])


def remote_backend_argv(host: RemoteHost, backend_dir: str, command: str, args: Iterable[str] = (),
                        env: Mapping[str, str] | None = None) -> list[str]:
    """The local ssh argv that runs the backend remotely; give it to :class:`.process.BackendProcess`."""
    return ssh_argv(host, backend_command(host, backend_dir, command, args, env))


def run_failure(host: RemoteHost, returncode: int | None, log_tail: Sequence[str], *, started: bool = True
                ) -> RemoteError | None:
    """What ssh itself says about a remote run that ended badly, or None when the backend's own messages tell
    (its ``error``, a cancel). ``started``: messages had arrived, so an ssh failure means a lost connection."""
    if returncode in (None, 0, 2, 3) or (returncode is not None and returncode < 0):
        return None  # done, the backend's error message, cancelled, or ended by a signal from this side
    text = "\n".join(log_tail)
    e = classify_failure(host, returncode, text, "the remote run")
    if returncode == SSH_ERROR and started and e.kind in ("unreachable", "remote"):
        last = text.strip().splitlines()[-1] if text.strip() else "ssh exit status 255"
        return RemoteError(f"the connection to {host.host} was lost during the run ({last})",
                           "The last mesh stays. The remote job keeps its last checkpoint: Continue Training "
                           "resumes it once the host answers again.", "dropped")
    return e


def describe(report: ConnectionReport) -> str:
    """The report as lines for a log or a terminal."""
    marks = {True: "ok", False: "FAILED", None: "--"}
    lines = [f"{s.name:15s} {marks[s.ok]:6s} {s.message}" + (f"  ({s.hint})" if s.hint and s.ok is False else "")
             for s in report.steps]
    return "\n".join(lines) + ("\n" + json.dumps(report.info) if report.info else "")
