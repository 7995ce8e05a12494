"""The write-ahead log: durable appends, torn tails cut, corruption refused, compaction, kill -9."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recindex.serve.wal import WalCorrupt, WriteAheadLog, decode_vectors, encode_vectors


def test_records_come_back_in_order_after_reopening(tmp_path):
    path = tmp_path / "items.wal"
    vectors = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with WriteAheadLog(path).open() as log:
        assert log.append("upsert", ids=[1, 2, 3], vectors=encode_vectors(vectors)) == 1
        assert log.append("delete", ids=[2]) == 2
    log = WriteAheadLog(path).open()
    records = list(log.records())
    assert [r["seq"] for r in records] == [1, 2] and log.last_seq == 2
    np.testing.assert_array_equal(decode_vectors(records[0]["vectors"]), vectors)
    assert [r["seq"] for r in log.records(after=1)] == [2]
    assert log.append("delete", ids=[3]) == 3
    log.close()


def test_torn_last_frame_is_cut_off(tmp_path):
    path = tmp_path / "items.wal"
    with WriteAheadLog(path).open() as log:
        log.append("delete", ids=[1])
        log.append("delete", ids=[2])
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 5)  # the second frame was being written when the process died
    log = WriteAheadLog(path).open()
    assert [r["ids"] for r in log.records()] == [[1]]
    assert log.append("delete", ids=[9]) == 2, "the next write reuses the torn record's number"
    log.close()
    assert [r["ids"] for r in WriteAheadLog(path).records()] == [[1], [9]]


def test_damage_before_intact_records_is_refused(tmp_path):
    path = tmp_path / "items.wal"
    with WriteAheadLog(path).open() as log:
        for i in range(3):
            log.append("delete", ids=[i])
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match="damaged record at byte 0"):
        WriteAheadLog(path).open()


def test_truncate_through_keeps_only_newer_records(tmp_path):
    path = tmp_path / "items.wal"
    log = WriteAheadLog(path).open()
    for i in range(5):
        log.append("delete", ids=[i])
    assert log.truncate_through(3, bundle_id="b") == 2
    assert log.append("delete", ids=[99]) == 6
    log.close()
    records = list(WriteAheadLog(path).records())
    assert [(r["seq"], r["op"]) for r in records] == [
        (3, "checkpoint"),
        (4, "delete"),
        (5, "delete"),
        (6, "delete"),
    ]
    assert [r["seq"] for r in WriteAheadLog(path).records(after=3)] == [4, 5, 6]


def test_numbering_goes_on_after_everything_is_truncated_and_the_log_reopened(tmp_path):
    # A snapshot covering seq 4 must never meet a new record numbered 1..4 after a restart.
    path = tmp_path / "items.wal"
    log = WriteAheadLog(path).open()
    for i in range(4):
        log.append("delete", ids=[i])
    assert log.truncate_through(4) == 0
    log.close()
    reopened = WriteAheadLog(path).open()
    assert reopened.append("delete", ids=[9]) == 5


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    log = WriteAheadLog(tmp_path / "items.wal").open()
    before = len(calls)
    log.append("delete", ids=[1])
    log.append("delete", ids=[2])
    assert len(calls) - before == 2
    log.close()


WRITER = """
import sys
from recindex.serve.wal import WriteAheadLog
log = WriteAheadLog(sys.argv[1]).open()
i = 0
while True:
    i += 1
    seq = log.append("upsert", ids=[i], payload="x" * (i % 997))
    print(seq, flush=True)  # acknowledged only once durable
"""


def test_no_acknowledged_write_is_lost_to_kill_9(tmp_path):
    path = tmp_path / "items.wal"
    acknowledged = 0
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 10
        last = 0
        while last < acknowledged + 200 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            last = int(line)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert last >= acknowledged + 200, "the writer did not get going"
        acknowledged = last
        seqs = [r["seq"] for r in WriteAheadLog(path).open().records()]
        assert seqs[:acknowledged] == list(range(1, acknowledged + 1))
