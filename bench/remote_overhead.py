"""The backend over SSH against the same run locally, over loopback (a real sshd from tests/remote_fixture.py).

Measures the upload of a capture (default DTU scan 65, all 49 views with masks, 33 MB) and of the backend package
through ``client.remote`` (tar streams over ssh), then times the same small training run locally (the client's
usual way: snapshots read from the job folder) and remotely (``--inline-meshes`` through ssh), alternating, each
a fresh process: seconds to the first ``mesh`` message and to ``done``. The remote overhead beyond the upload is
what ssh, the remote shell and the inline meshes add.

Usage: ``python bench/remote_overhead.py [--data DIR] [--steps 100] [--max-image-size 64] [--repeats 2]``
(needs ``sshd``: Debian's openssh-server).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from extension_package import client  # noqa: E402
from remote_fixture import ALIAS, start_sshd  # noqa: E402

from bench import shared_data  # noqa: E402


def timed_run(argv: list[str], env: dict[str, str] | None, cwd: str | None) -> dict[str, float]:
    process = client("process")
    proc = process.BackendProcess(argv, env=env, cwd=cwd)
    t0 = time.perf_counter()
    proc.start()
    first = done = None
    try:
        while not proc.finished:
            for m in proc.read():
                if m["type"] == "mesh" and first is None:
                    first = time.perf_counter() - t0
                if m["type"] == "done":
                    done = time.perf_counter() - t0
            time.sleep(0.02)
    finally:
        proc.stop()
        proc.close()
    if proc.returncode != 0 or first is None or done is None:
        raise SystemExit(f"run failed ({proc.returncode}): " + "\n".join(proc.log_tail()))
    return {"first_mesh_s": first, "done_s": done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared_data("dtu_scan65"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--max-image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    remote = client("remote")
    interpreter = client("interpreter")
    with tempfile.TemporaryDirectory(prefix="neusblend-remote-bench-") as tmp:
        server = start_sshd(Path(tmp) / "sshd")
        try:
            host = remote.RemoteHost(ALIAS, ssh_config=str(server.config), python=sys.executable,
                                     work_folder=str(Path(tmp) / "work"))
            t = time.perf_counter()
            backend_dir = remote.ensure_backend(host)
            t_backend = time.perf_counter() - t
            size = sum(f.stat().st_size for f in args.data.rglob("*") if f.is_file())
            t = time.perf_counter()
            data = remote.send_capture(host, args.data)
            t_upload = time.perf_counter() - t
            print(f"upload: backend {t_backend:.2f} s; capture {size / 1e6:.1f} MB in {t_upload:.2f} s "
                  f"({size / 1e6 / t_upload:.0f} MB/s)")
            common = ["--preset", "preview", "--steps", str(args.steps), "--max-image-size", str(args.max_image_size),
                      "--mesh-every", "2", "--device", "cpu", "--exit-on-stdin-close"]
            runs: dict[str, list[dict[str, float]]] = {"local": [], "remote": []}
            for i in range(args.repeats):
                job = Path(tmp) / f"local{i}"
                local_argv = interpreter.backend_argv(sys.executable, "train",
                                                      ["--data", str(args.data), "--out", str(job), *common])
                runs["local"].append(timed_run(local_argv, interpreter.clean_environment(), str(ROOT)))
                remote_argv = remote.remote_backend_argv(host, backend_dir, "train",
                                                         ["--data", data, "--out", f"jobs/r{i}", "--inline-meshes",
                                                          *common])
                runs["remote"].append(timed_run(remote_argv, None, None))
                print(f"repeat {i}: local {runs['local'][-1]}, remote {runs['remote'][-1]}")
        finally:
            server.stop()
    print("| run | first mesh (s) | final mesh (s) |\n|---|---|---|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(r['first_mesh_s'] for r in rs):.2f} | "
              f"{statistics.median(r['done_s'] for r in rs):.2f} |")
    lo, re_ = (statistics.median(r["done_s"] for r in runs[k]) for k in ("local", "remote"))
    print(f"remote overhead beyond the upload: {re_ - lo:+.2f} s ({(re_ - lo) / lo * 100:+.1f} %)")


if __name__ == "__main__":
    main()
