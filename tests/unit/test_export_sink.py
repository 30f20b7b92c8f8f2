"""The export's sink (`smartapp.audit.export._Sink`): blocks hashed and written by threads of
their own, in order; a failed write reaches the exporting thread, never lost."""

from __future__ import annotations

import hashlib
import io
import mmap
import time

import pytest

from smartapp.audit.export import _Sink


def test_blocks_are_written_and_hashed_in_the_order_they_were_put(tmp_path):
    blocks = [f"line {n}\n".encode() * (n + 1) for n in range(200)]
    with (tmp_path / "part").open("wb") as part:
        part.write(b"mapped part\n" * 1000)
    with (tmp_path / "part").open("rb") as part:
        blocks.append(mmap.mmap(part.fileno(), 0, access=mmap.ACCESS_READ))
    with (tmp_path / "out.ndjson").open("w", encoding="utf-8") as out:
        out.write("first\n")  # what the caller wrote before goes first
        sink = _Sink(out)
        for block in blocks:
            sink.put(block)
        digest = sink.close()
    whole = b"".join(bytes(block) for block in blocks)
    assert (tmp_path / "out.ndjson").read_bytes() == b"first\n" + whole
    assert digest == hashlib.sha256(whole).hexdigest()


def test_a_text_stream_gets_text():
    out = io.StringIO()
    sink = _Sink(out)
    sink.put(b"caf\xc3\xa9\n")
    assert sink.close() == hashlib.sha256(b"caf\xc3\xa9\n").hexdigest()
    assert out.getvalue() == "café\n"


class FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_a_failed_write_is_raised_to_the_exporting_thread():
    sink = _Sink(FullDisk())
    sink.put(b"a\n")
    with pytest.raises(OSError, match="No space left"):
        sink.close()
    assert all(not thread.is_alive() for thread in sink.threads)

    later = _Sink(FullDisk())
    later.put(b"a\n")
    deadline = time.monotonic() + 10
    while later.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(OSError, match="No space left"):  # the next block is refused
        later.put(b"b\n")
    later.close(raising=False)  # an abandoned export: nothing raised, the threads ended
    assert all(not thread.is_alive() for thread in later.threads)
