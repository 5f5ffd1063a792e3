"""The backend on another machine over SSH (client/remote.py), against a real sshd on 127.0.0.1.

The server is tests/remote_fixture.py's: Debian's openssh-server run as this user on a free port, a temporary
host key pinned in the client config, a temporary user key. The "remote" Python is this test run's own, so the
tests need no second machine; everything else (ssh, sshd, the tar stream, the remote shell) is real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backend import protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extension_package import client  # noqa: E402
from remote_fixture import ALIAS, SshServer, free_port, keygen, start_sshd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sshd and process groups as on POSIX")




remote = client("remote")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
    assert server.proc.poll() is not None


@pytest.fixture()
def host(sshd: SshServer, tmp_path: Path) -> remote.RemoteHost:
    """The test server through its config's alias, this Python as the remote one, a fresh work folder."""
    return remote.RemoteHost(ALIAS, ssh_config=str(sshd.config), python=sys.executable,
                             work_folder=str(tmp_path / "remote work"))


def remote_pids(pattern: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


# ---------------------------------------------------------------------------------------------------------------
# the command line


def test_ssh_argv_batch_mode_host_keys_and_options(tmp_path: Path) -> None:
    cfg, key = tmp_path / "config", tmp_path / "key"
    cfg.write_text("")
    key.write_text("")
    h = remote.RemoteHost("me@gpu-box", port=2222, ssh_config=str(cfg), identity_file=str(key))
    argv = remote.ssh_argv(h, ["python3", "-c", "print(1)"])
    assert argv[0] == "ssh" and "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-F") + 1] == str(cfg) and argv[argv.index("-i") + 1] == str(key)
    assert argv[argv.index("-p") + 1] == "2222" and any(a.startswith("ServerAliveInterval=") for a in argv)
    assert argv[-2:] == ["me@gpu-box", "python3 -c 'print(1)'"]
    for bad in (remote.RemoteHost("-oProxyCommand=x"), remote.RemoteHost("a b"), remote.RemoteHost("h", port=70000),
                remote.RemoteHost("h", ssh_config=str(tmp_path / "missing"))):
        with pytest.raises(remote.RemoteError):
            remote.ssh_argv(bad, ["true"])
    assert remote.RemoteHost("h", work_folder="~/neus jobs").work == "neus jobs"  # the remote home, quoted later


def test_remote_words_arrive_unchanged(host: remote.RemoteHost) -> None:
    """Spaces, quotes, $(...) and ; in values reach the remote command as single words, never as shell code."""
    words = ["a b", "$(echo injected)", "x;touch /tmp/neusblend-pwned", "it's", "*"]
    proc = remote.run_remote(host, ["printf", "%s\\n", *words])
    assert proc.stdout.splitlines() == words
    assert not Path("/tmp/neusblend-pwned").exists()


# ---------------------------------------------------------------------------------------------------------------
# the connection check


def test_check_connection_ok(host: remote.RemoteHost) -> None:
    report = remote.check_connection(host)
    assert [s.name for s in report.steps] == ["reachable", "authentication", "python", "torch", "cuda", "fast path"]
    assert report.ok, remote.describe(report)
    assert report.info["python"] == sys.version.split()[0] and report.info["has_torch"]
    import torch

    assert report.step("cuda").ok == torch.cuda.is_available()


def test_wrong_port_says_connection_refused(sshd: SshServer) -> None:
    h = remote.RemoteHost("127.0.0.1", port=free_port(), ssh_config=str(sshd.config), python=sys.executable)
    report = remote.check_connection(h)
    step = report.step("reachable")
    assert step.ok is False and "connection refused" in step.message and "port" in step.hint
    assert all(s.ok is None for s in report.steps[1:]) and not report.ok


def test_refused_key_says_permission_denied(sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "not_authorized", "a key the server does not know")
    h = remote.RemoteHost(ALIAS, ssh_config=str(sshd.write_config(tmp_path / "config", identity=other)),
                          python=sys.executable)
    report = remote.check_connection(h)
    assert report.step("reachable").ok is True
    auth = report.step("authentication")
    assert auth.ok is False and "permission denied" in auth.message and "authorized_keys" in auth.hint
    assert report.step("python").ok is None


def test_missing_remote_python_says_command_not_found(sshd: SshServer, tmp_path: Path) -> None:
    h = remote.RemoteHost(ALIAS, ssh_config=str(sshd.config), python=str(tmp_path / "no env" / "bin" / "python3"))
    report = remote.check_connection(h)
    assert report.step("reachable").ok and report.step("authentication").ok
    py = report.step("python")
    assert py.ok is False and "command not found" in py.message and "exit 127" in py.message
    assert str(tmp_path / "no env") in py.message and "full path" in py.hint


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """A known_hosts entry with another key (a re-installed or impostor host): refused, never accepted."""
    pub = Path(f"{keygen(tmp_path / 'other_host_key', 'not the server key')}.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    cfg = sshd.write_config(tmp_path / "config")
    cfg.write_text(cfg.read_text().replace(str(sshd.known_hosts), str(known)))
    report = remote.check_connection(remote.RemoteHost(ALIAS, ssh_config=str(cfg), python=sys.executable))
    auth = report.step("authentication")
    assert auth.ok is False and "host key" in auth.message and "known_hosts" in auth.hint
    assert known.read_text().count("\n") == 1  # nothing was added to known_hosts


def test_remote_python_without_torch_says_so(sshd: SshServer, tmp_path: Path) -> None:
    """A real Python 3.11 environment with numpy but no torch: python passes, torch fails with what to install."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_blender_client import make_bare_python

    bare = make_bare_python(tmp_path / "bare env", with_numpy=True)
    report = remote.check_connection(remote.RemoteHost(ALIAS, ssh_config=str(sshd.config), python=str(bare),
                                                       work_folder=str(tmp_path / "work")))
    assert report.step("python").ok is True
    torch_step = report.step("torch")
    assert torch_step.ok is False and "torch is not installed" in torch_step.message
    assert "requirements-backend.txt" in torch_step.hint and report.step("cuda").ok is None and not report.ok


# ---------------------------------------------------------------------------------------------------------------
# sending the backend and a capture, running it


def test_backend_is_sent_once_per_version(host: remote.RemoteHost) -> None:
    sent: list[tuple[int, int]] = []
    name = remote.ensure_backend(host, progress=lambda done, total: sent.append((done, total)))
    there = Path(host.work) / name
    assert (there / "backend" / "cli.py").read_bytes() == (ROOT / "backend" / "cli.py").read_bytes()
    assert (there / remote.COMPLETE).is_file() and not list(there.rglob("__pycache__"))
    assert sent and sent[-1][0] >= sum(f.stat().st_size for f in (there / "backend").rglob("*") if f.is_file())
    again: list[tuple[int, int]] = []
    assert remote.ensure_backend(host, progress=lambda d, t: again.append((d, t))) == name
    assert again == []  # the same version is not sent twice


def test_info_runs_remotely_and_streams_done(host: remote.RemoteHost) -> None:
    process = client("process")
    backend_dir = remote.ensure_backend(host)
    env = {"NEUSBLEND_PATH": "reference", "NOTE": "a b; $(x)"}  # set for the remote backend, as given
    proc = process.BackendProcess(remote.remote_backend_argv(host, backend_dir, "info", env=env))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        msgs: list[dict] = []
        while not proc.finished and time.monotonic() < deadline:
            msgs += proc.read()
            time.sleep(0.05)
        msgs += proc.read()
    finally:
        proc.stop()
        proc.close()
    assert proc.returncode == 0, proc.log_tail()
    done = [m for m in msgs if m["type"] == "done"]
    assert done and done[0]["info"]["executable"] == sys.executable
    assert done[0]["info"]["debug_overrides"] == {"NEUSBLEND_PATH": "reference"}
    # it ran the copy in the work folder, not this checkout
    assert [m["type"] for m in msgs] == ["start", "done"]


def small_capture(data_dir: Path, dest: Path, views: range = range(0, 48, 8)) -> Path:
    """Six views of DTU scan 65 (images, masks, their cameras renumbered) as a NeuS capture."""
    src = data_dir / "dtu_scan65"
    (dest / "image").mkdir(parents=True)
    (dest / "mask").mkdir()
    cams = np.load(src / "cameras_sphere.npz")
    out: dict[str, np.ndarray] = {}
    for new, old in enumerate(views):
        shutil.copy(src / "image" / f"{old:06d}.jpg", dest / "image" / f"{new:06d}.jpg")
        shutil.copy(src / "mask" / f"{old:03d}.png", dest / "mask" / f"{new:03d}.png")
        for key in ("world_mat", "scale_mat", "camera_mat", "world_mat_inv", "scale_mat_inv", "camera_mat_inv"):
            if f"{key}_{old}" in cams.files:
                out[f"{key}_{new}"] = cams[f"{key}_{old}"]
    np.savez(dest / "cameras_sphere.npz", **out)
    return dest


#: Smaller steps than the preview preset's, so the remote run costs a few CPU seconds.
SMALL = ["--set", "target_samples=2048", "--set", "grid_resolution=32", "--set", "render_steps=128",
         "--set", "max_rays=1024"]


#: 2 CI cores shared with other work: one torch thread wastes no time spinning.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def run_until(proc: object, stop: object, timeout: float) -> list[dict]:
    """Messages until ``stop(messages)`` is true or the process finished."""
    msgs: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs += proc.read()  # type: ignore[attr-defined]
        if stop(msgs) or proc.finished:  # type: ignore[attr-defined, operator]
            break
        time.sleep(0.05)
    return msgs + proc.read()  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.data
def test_remote_training_streams_inline_meshes(host: remote.RemoteHost, data_dir: Path, tmp_path: Path) -> None:
    process = client("process")
    capture = small_capture(data_dir, tmp_path / "scan65 six views")
    sent: list[tuple[int, int]] = []
    data = remote.send_capture(host, capture, progress=lambda d, t: sent.append((d, t)))
    size = sum(f.stat().st_size for f in capture.rglob("*") if f.is_file())
    assert sent[-1][0] >= size and (Path(host.work) / data / "cameras_sphere.npz").is_file()
    assert remote.send_capture(host, capture) == data  # already there
    backend_dir = remote.ensure_backend(host)
    job = host.path("jobs", "first")
    args = ["--data", data, "--out", job, "--preset", "preview", "--steps", "30", "--max-image-size", "48",
            "--mesh-every", "2", "--mesh-resolution", "32", "--final-resolution", "48", "--inline-meshes",
            "--exit-on-stdin-close", "--device", "cpu", *SMALL]
    proc = process.BackendProcess(remote.remote_backend_argv(host, backend_dir, "train", args, env=ONE_THREAD))
    proc.start()
    try:
        msgs = run_until(proc, lambda m: False, 300)
    finally:
        proc.stop()
        proc.close()
    assert proc.returncode == 0, proc.log_tail()
    meshes = [m for m in msgs if m["type"] == "mesh"]
    assert meshes and all(m.get("npz_b64") for m in meshes)
    for m in meshes:  # decoded here, never read from the remote disk
        snap = protocol.snapshot_from_message(m, base=tmp_path / "nowhere")
        assert snap["vertices"].shape[1] == 3 and len(snap["faces"]) > 0
        assert np.isfinite(snap["vertices"]).all()
    assert msgs[-1]["type"] == "done" and any(m["final"] for m in meshes)
    assert any(not m["final"] for m in meshes)  # snapshots streamed while training, not only the result
    assert (Path(job) / "mesh.ply").is_file()  # the job lives on the remote side
    back = tmp_path / "job here"
    remote.receive_tree(host, job, back)  # and comes back whole: mesh, checkpoint, snapshots
    layout = protocol.JobLayout(back)
    assert layout.last_checkpoint.is_file() and layout.final_ply.is_file()
    final = protocol.read_snapshot(layout.final_mesh)
    assert np.array_equal(final["faces"], protocol.snapshot_from_message(meshes[-1])["faces"])


@pytest.mark.slow
@pytest.mark.data
def test_cancel_leaves_no_remote_process(host: remote.RemoteHost, data_dir: Path, tmp_path: Path) -> None:
    process = client("process")
    data = remote.send_capture(host, small_capture(data_dir, tmp_path / "capture"))
    backend_dir = remote.ensure_backend(host)
    job = host.path("jobs", f"cancel-{tmp_path.name}")
    args = ["--data", data, "--out", job, "--preset", "preview", "--steps", "5000", "--max-image-size", "48",
            "--mesh-every", "0", "--exit-on-stdin-close", "--device", "cpu", *SMALL]
    proc = process.BackendProcess(remote.remote_backend_argv(host, backend_dir, "train", args, env=ONE_THREAD))
    proc.start()
    try:
        msgs = run_until(proc, lambda m: any(x["type"] == "progress" for x in m), 120)
        assert any(m["type"] == "progress" for m in msgs), proc.log_tail()
        assert remote_pids(job), "the remote backend should be running now"
        proc.terminate()  # SIGTERM to the local ssh: the remote backend sees its stdin close
        proc.stop(10)
    finally:
        proc.stop()
        proc.close()
    deadline = time.monotonic() + 30
    while remote_pids(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote_pids(job) == [], "a remote backend process outlived the cancel"
    # it stopped the way a cancel does (stdin closed -> checkpoint saved), not by a broken pipe
    assert protocol.JobLayout(job).last_checkpoint.is_file()


@pytest.mark.slow
@pytest.mark.data
def test_dropped_connection_gives_a_clear_error(host: remote.RemoteHost, sshd: SshServer, data_dir: Path,
                                                tmp_path: Path) -> None:
    """The server side of the connection dies mid-run: the run fails with a message about the connection, the
    meshes that arrived before stay decodable, and the remote backend stops (its stdin closed)."""
    process = client("process")
    data = remote.send_capture(host, small_capture(data_dir, tmp_path / "capture"))
    backend_dir = remote.ensure_backend(host)
    job = host.path("jobs", f"dropped-{tmp_path.name}")
    args = ["--data", data, "--out", job, "--preset", "preview", "--steps", "5000", "--max-image-size", "48",
            "--mesh-every", "1", "--mesh-resolution", "32", "--inline-meshes", "--exit-on-stdin-close",
            "--device", "cpu", *SMALL]
    proc = process.BackendProcess(remote.remote_backend_argv(host, backend_dir, "train", args, env=ONE_THREAD))
    proc.start()
    try:
        msgs = run_until(proc, lambda m: any(x["type"] == "mesh" for x in m), 120)
        assert any(m["type"] == "mesh" for m in msgs), proc.log_tail()
        assert sshd.drop_connections() >= 1
        msgs += run_until(proc, lambda m: False, 60)
    finally:
        proc.stop()
        proc.close()
    error = remote.run_failure(host, proc.returncode, proc.log_tail())
    assert error is not None and error.kind == "dropped", proc.log_tail()
    assert "connection to" in error.message and "lost" in error.message and "last mesh" in error.hint
    last = [m for m in msgs if m["type"] == "mesh"][-1]
    assert len(protocol.snapshot_from_message(last)["faces"]) > 0
    deadline = time.monotonic() + 30
    while remote_pids(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote_pids(job) == []


def test_check_remote_script(sshd: SshServer, tmp_path: Path) -> None:
    """scripts/check_remote.py: the check from a terminal, exit 0 when the host can train, 2 with the reason."""
    script = ROOT / "scripts" / "check_remote.py"
    base = [sys.executable, str(script), ALIAS, "--ssh-config", str(sshd.config), "--work-folder",
            str(tmp_path / "work")]
    ok = subprocess.run([*base, "--python", sys.executable, "--json"], capture_output=True, text=True, timeout=120,
                        stdin=subprocess.DEVNULL, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and [s["ok"] for s in report["steps"]][:4] == [True] * 4
    bad = subprocess.run([*base, "--python", "/no/such/python3"], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL, check=False)
    assert bad.returncode == 2 and "command not found" in bad.stdout and "FAILED" in bad.stdout


def test_receive_tree_copies_plain_files_only_and_never_overwrites(host: remote.RemoteHost, tmp_path: Path) -> None:
    """A remote job folder comes back whole; a link out of it is left out; a non-empty target and a missing
    remote folder are refused with nothing left behind."""
    job = Path(host.work) / "jobs" / "back"
    (job / "meshes").mkdir(parents=True)
    (job / "mesh.ply").write_bytes(b"ply\n" + bytes(range(256)) * 40)
    (job / "meshes" / "final.npz").write_bytes(b"npz" * 1000)
    (job / "escape").symlink_to("/etc/passwd")
    seen: list[int] = []
    skipped = remote.receive_tree(host, "jobs/back", tmp_path / "here", progress=lambda got, _: seen.append(got))
    assert (tmp_path / "here" / "mesh.ply").read_bytes() == (job / "mesh.ply").read_bytes()
    assert (tmp_path / "here" / "meshes" / "final.npz").read_bytes() == b"npz" * 1000
    assert skipped == ["./escape"] and not (tmp_path / "here" / "escape").exists()
    assert seen and seen[-1] > 10240 + 3000  # the tar stream's bytes, reported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own file")
    with pytest.raises(remote.RemoteError, match="not an empty folder"):
        remote.receive_tree(host, "jobs/back", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my own file"
    with pytest.raises(remote.RemoteError) as info:
        remote.receive_tree(host, "jobs/no such job", tmp_path / "missing")
    assert "no such job" in info.value.message and not (tmp_path / "missing").exists()


def test_send_capture_follows_links(host: remote.RemoteHost, tmp_path: Path) -> None:
    """Photos and mask folders linked into a capture travel as their contents (the remote has no such paths)."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "masks").mkdir(parents=True)
    (elsewhere / "a.jpg").write_bytes(b"jpeg a" * 100)
    (elsewhere / "masks" / "a.png").write_bytes(b"png a" * 100)
    capture = tmp_path / "capture"
    (capture / "images").mkdir(parents=True)
    (capture / "images" / "b.jpg").write_bytes(b"jpeg b" * 100)
    (capture / "images" / "a.jpg").symlink_to(elsewhere / "a.jpg")
    (capture / "masks").symlink_to(elsewhere / "masks", target_is_directory=True)
    rel = remote.send_capture(host, capture)
    there = Path(host.work) / rel
    assert not (there / "images" / "a.jpg").is_symlink() and not (there / "masks").is_symlink()
    assert (there / "images" / "a.jpg").read_bytes() == b"jpeg a" * 100
    assert (there / "masks" / "a.png").read_bytes() == b"png a" * 100
    assert (there / "images" / "b.jpg").read_bytes() == b"jpeg b" * 100
