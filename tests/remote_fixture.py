"""A real OpenSSH server on 127.0.0.1 for the remote-backend tests (tests/test_remote.py).

:func:`start_sshd` runs Debian's ``sshd`` as the current user on a free, non-default port with a temporary host
key, a temporary user key (ed25519, no passphrase) in ``authorized_keys`` and an SSH config file whose host alias
pins the host key (``StrictHostKeyChecking yes``, ``BatchMode yes``). No system configuration, no PAM. The server
runs in the foreground (``-D -e``) and :meth:`SshServer.stop` ends it and its session processes.

Where ``sshd`` is missing the tests skip with a reason, except in CI (``CI=true``), where they fail:
``scripts/test.sh`` installs openssh-server there.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The host alias the fixture's SSH config defines.
ALIAS = "neusblend-test-host"


def find_sshd() -> str | None:
    """The ``sshd`` executable (it lives in /usr/sbin, often not on a normal user's PATH)."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing(reason: str) -> None:
    """Fail in CI (the remote tests must run there), skip elsewhere, with ``reason``."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: scripts/test.sh installs openssh-server when run as root)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (never 22)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str) -> Path:
    """An ed25519 key pair at ``path`` / ``path.pub`` without a passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return path


@dataclass
class SshServer:
    """A running sshd and the files a client needs to reach it."""

    root: Path
    port: int
    user: str
    host_key: Path
    user_key: Path
    config: Path  # the client config: Host ALIAS -> 127.0.0.1:port, the user key, the pinned host key
    known_hosts: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra_keys: list[Path] = field(default_factory=list)

    def write_config(self, path: Path, identity: Path | None = None, port: int | None = None) -> Path:
        """An SSH client config for ``ALIAS`` with another identity or port (for the failure tests)."""
        identity = identity or self.user_key
        path.write_text(
            f"Host {ALIAS}\n"
            f"  HostName 127.0.0.1\n"
            f"  Port {port or self.port}\n"
            f"  User {self.user}\n"
            f"  IdentityFile {identity}\n"
            f"  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            f"  GlobalKnownHostsFile /dev/null\n"
            f"  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n"
            f"  ConnectTimeout 10\n"
            f"  LogLevel ERROR\n")
        return path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def drop_connections(self) -> int:
        """Kill the per-connection sshd processes (children of the listener), as a network failure would end
        them; returns how many were killed."""
        killed = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
        return killed

    def stop(self) -> None:
        """End sshd: its sessions first (they run in sessions of their own, so the remote commands see their
        connection end), then the listener's process group."""
        if self.proc.poll() is None:
            self.drop_connections()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_sshd(root: Path) -> SshServer:
    """Start sshd on a free port under ``root`` (a fresh temporary folder); skips or fails when impossible."""
    sshd = find_sshd()
    if sshd is None:
        missing("sshd not found (Debian: apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        missing("the ssh client or ssh-keygen is missing (Debian: apt-get install openssh-client)")
    assert sshd is not None
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd run by root insists on its privilege-separation folder (systemd makes it; containers lack it)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name  # not $USER: it may name someone else (su, sudo -E)
    host_key = keygen(root / "host_ed25519", "neusblend-test-host-key")
    user_key = keygen(root / "user_ed25519", "neusblend-test-user-key")
    authorized = root / "authorized_keys"
    authorized.write_text((root / "user_ed25519.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    sshd_config = root / "sshd_config"
    sshd_config.write_text(
        f"ListenAddress 127.0.0.1\n"
        f"Port {port}\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"AllowUsers {user}\n"
        f"PubkeyAuthentication yes\n"
        f"PasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\n"
        f"UsePAM no\n"
        f"StrictModes no\n"
        f"PrintMotd no\n"
        f"AcceptEnv none\n"
        f"Subsystem sftp internal-sftp\n"
        f"LogLevel VERBOSE\n")
    host_pub = (root / "host_ed25519.pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    log = root / "sshd.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(sshd_config)], stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = SshServer(root=root, port=port, user=user, host_key=host_key, user_key=user_key,
                       config=root / "ssh_config", known_hosts=known_hosts, proc=proc, log=log)
    server.write_config(server.config)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = server.log_text()
            server.stop()
            missing(f"sshd exited at start ({proc.returncode}): {text[-800:]}")
        if "Server listening" in server.log_text():
            return server
        time.sleep(0.05)
    text = server.log_text()
    server.stop()
    missing(f"sshd did not start listening on 127.0.0.1:{port} within 15 s: {text[-800:]}")
    raise AssertionError("unreachable")
