"""The protocol seam: messages, snapshots, atomic files."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from backend import protocol


def test_message_round_trip_and_cleaning() -> None:
    msg = protocol.make_message("progress", step=np.int64(3), total=10, loss=float("nan"), psnr=np.float32(21.5),
                                bounds=np.zeros((2, 3)))
    line = protocol.encode_message(msg)
    assert "\n" not in line
    back = protocol.decode_message(line)
    assert back["type"] == "progress" and back["step"] == 3 and back["loss"] is None
    assert back["psnr"] == pytest.approx(21.5)
    assert back["bounds"] == [[0.0] * 3] * 2
    assert back["version"] == protocol.PROTOCOL_VERSION


@pytest.mark.parametrize("line", ["", "hello", "[1, 2]", '{"type": "nope"}', '{"type": "progress", "step": 1}',
                                  '{"type": "error", "message": "x"}'])
def test_decode_rejects_non_messages(line: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_message(line)


def test_make_message_checks_type_and_fields() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.make_message("bogus")
    with pytest.raises(protocol.ProtocolError):
        protocol.make_message("mesh", step=1)


def test_emitter_json_and_human() -> None:
    buf = io.StringIO()
    em = protocol.Emitter(buf, json_mode=True)
    em.emit("warning", message="careful")
    em.emit("error", message="bad", hint="fix it", file="/x")
    lines = buf.getvalue().splitlines()
    assert [json.loads(s)["type"] for s in lines] == ["warning", "error"]
    human = io.StringIO()
    protocol.Emitter(human, json_mode=False).emit("error", message="bad", hint="fix it", file="/x")
    assert "bad" in human.getvalue() and "fix it" in human.getvalue() and "/x" in human.getvalue()


def test_snapshot_file_and_inline(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 3))
    f = rng.integers(0, 10, size=(7, 3))
    c = rng.integers(0, 255, size=(10, 3)).astype(np.uint8)
    path = protocol.write_snapshot(tmp_path / "m" / "a.npz", v, f, c)
    snap = protocol.read_snapshot(path)
    assert snap["vertices"].dtype == np.float32 and snap["faces"].dtype == np.int32
    np.testing.assert_allclose(snap["vertices"], v.astype(np.float32))
    np.testing.assert_array_equal(snap["faces"], f)
    np.testing.assert_array_equal(snap["colors"], c)
    assert not [p for p in path.parent.iterdir() if p.name != "a.npz"], "temporary files left behind"
    inline = {"type": "mesh", "npz_b64": base64.b64encode(protocol.snapshot_bytes(v, f)).decode()}
    snap2 = protocol.snapshot_from_message(inline)
    np.testing.assert_array_equal(snap2["faces"], f)
    assert "colors" not in snap2
    snap3 = protocol.snapshot_from_message({"path": "a.npz"}, base=path.parent)
    np.testing.assert_array_equal(snap3["faces"], f)


def test_snapshot_validation() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.snapshot_bytes(np.zeros((3, 2)), np.zeros((1, 3)))
    with pytest.raises(protocol.ProtocolError):
        protocol.snapshot_bytes(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(protocol.ProtocolError):
        protocol.snapshot_bytes(np.zeros((3, 3)), np.array([[0, 1, 2]]), colors=np.zeros((3, 3), np.float32))


def test_snapshot_refuses_pickles(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "evil.npz"
    np.savez(path, vertices=np.array([object()], dtype=object), faces=np.zeros((0, 3), np.int32))
    with pytest.raises(ValueError):
        protocol.read_snapshot(path)


def test_job_layout_names(tmp_path) -> None:  # noqa: ANN001
    job = protocol.JobLayout(tmp_path)
    assert job.snapshot(42).name == "step_0000042.npz"
    assert job.last_checkpoint.parent == job.checkpoints
    assert job.final_mesh.parent == job.meshes


def test_emitter_reader_gone_calls_back_once_and_drops_the_rest() -> None:
    """A real broken pipe (the client or its ssh connection gone): raised by default; with ``on_reader_gone`` set,
    called once, later messages dropped, so training can still save its checkpoint."""
    import contextlib
    import os

    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "w") as stream:
        em = protocol.Emitter(stream)
        with pytest.raises(BrokenPipeError):
            em.emit("warning", message="nobody reads this")
        calls: list[int] = []
        em.on_reader_gone = lambda: calls.append(1)
        em.emit("warning", message="still nobody")
        em.emit("progress", step=1, total=2)
        assert calls == [1] and em.reader_gone
        with contextlib.suppress(BrokenPipeError):  # the unsent rest of the buffer
            stream.close()


def test_pose_report_round_trip_and_a_damaged_one(tmp_path) -> None:  # noqa: ANN001
    """The pose report has one writer and one reader (the seam's): numpy values become JSON, and a damaged file is
    an error that names it (the train command then skips its warnings, the import says to estimate again)."""
    from backend import capture_files
    from backend.errors import BackendError

    path = capture_files.write_pose_report(tmp_path / capture_files.REPORT,
                                           {"registered": np.int64(5), "suspicious": [{"name": "a.jpg"}],
                                            "mean_error": np.float32(0.5), "nan": float("nan")})
    report = capture_files.read_pose_report(path)
    assert report == {"registered": 5, "suspicious": [{"name": "a.jpg"}], "mean_error": 0.5, "nan": None}
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(BackendError) as info:
        capture_files.read_pose_report(path)
    assert info.value.file == str(path) and "Estimate the poses again" in info.value.hint
