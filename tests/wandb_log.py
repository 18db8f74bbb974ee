"""Read an offline wandb run back: its ``.wandb`` transaction log, as the records wandb wrote."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

LOG_BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log of 32 KiB blocks
Record = wandb_internal_pb2.Record


def read_wandb_log(path: Path) -> list[Record]:
    """The protobuf records of a ``.wandb`` transaction log, checksums verified.

    Layout: a 7-byte file header (":W&B", magic, version), then chunks with a 7-byte header
    (crc32 over type byte + payload, little-endian length, type: 1 full, 2 first, 3 middle,
    4 last) that never straddle a 32 KiB block boundary.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        room = LOG_BLOCK - position % LOG_BLOCK
        if room < 7:
            position += room
            continue
        checksum = int.from_bytes(data[position : position + 4], "little")
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum
        if kind in (1, 2):
            pending = payload
        else:
            pending += payload
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def offline_logs(run_dir: Path) -> list[Path]:
    """The ``.wandb`` logs of the offline wandb runs under a run directory."""
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def _of_type(records: list[Record], kind: str) -> list[Record]:
    return [record for record in records if record.WhichOneof("record_type") == kind]


def run_header(records: list[Record]) -> wandb_internal_pb2.RunRecord:
    """The run record: id, project, group, name, tags, config."""
    return _of_type(records, "run")[0].run


def config(records: list[Record]) -> dict:
    """The run's config (top-level keys)."""
    return {item.key: json.loads(item.value_json) for item in run_header(records).config.update}


def history(records: list[Record]) -> list[dict]:
    """Every logged row, in order."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in record.history.item
        }
        for record in _of_type(records, "history")
    ]


def summary_updates(records: list[Record]) -> dict:
    """The run summary as the records leave it: the last update of every key."""
    summary = {}
    for record in _of_type(records, "summary"):
        for item in record.summary.update:
            summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def uploaded_files(records: list[Record]) -> set[tuple[str, int]]:
    """(path, policy) of every file saved with the run."""
    return {(f.path, f.policy) for record in _of_type(records, "files") for f in record.files.files}


def step_metrics(records: list[Record]) -> dict[str, str]:
    """Each defined metric (or glob) with its step metric."""
    return {
        r.metric.name or r.metric.glob_name: r.metric.step_metric
        for r in _of_type(records, "metric")
    }
