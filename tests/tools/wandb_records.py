"""Reading back what W&B wrote offline, so the tests can check a run's config, history and summary
without a W&B server or wandb's own (online-only) API."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path


def offline_runs(root: str | Path) -> list[Path]:
    """The W&B run folders (offline-run-* or run-*) under ``<root>/wandb``, oldest first."""
    base = Path(root) / "wandb"
    runs = [p for p in base.glob("*run-*") if p.is_dir() and not p.is_symlink() and p.name != "latest-run"]
    def stamp(p: Path) -> str:
        m = re.search(r"\d{8}_\d{6}", p.name)
        return m.group() if m else ""

    return sorted(runs, key=lambda p: (stamp(p), p.name))


def read_run_records(run_folder: str | Path) -> dict:
    """Config, history rows and final summary of a local W&B run, read from its ``run-*.wandb`` file
    (a LevelDB-style log of protobuf records; wandb 0.31 writes no summary file for offline runs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_folder = Path(run_folder)
    files = list(run_folder.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb in {run_folder}")
    data = files[0].read_bytes()
    block, pos, buf, records = 32768, 7, b"", []  # 7 = the file header (":W&B", magic, version)
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        chunk = data[pos : pos + length]
        pos += length
        if kind == 1:  # full
            records.append(chunk)
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            records.append(buf + chunk)
            buf = b""
    out: dict = {"config": {}, "history": [], "summary": {}, "run": {}}

    def put(d: dict, item) -> None:
        # nested keys (a logged dict or table reference: ["llm/plans", "path"]) become nested dicts
        keys = list(item.nested_key) or [item.key]
        for k in keys[:-1]:
            if not isinstance(d.get(k), dict):
                d[k] = {}
            d = d[k]
        d[keys[-1]] = json.loads(item.value_json)

    for raw in records:
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a torn last record
            continue
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = {"id": rec.run.run_id, "project": rec.run.project, "group": rec.run.run_group,
                          "job_type": rec.run.job_type, "name": rec.run.display_name, "tags": list(rec.run.tags)}  # fmt: skip
            for u in rec.run.config.update:
                put(out["config"], u)
        elif kind == "config":
            for u in rec.config.update:
                put(out["config"], u)
        elif kind == "history":
            row: dict = {}
            for i in rec.history.item:
                put(row, i)
            out["history"].append(row)
        elif kind == "summary":
            for u in rec.summary.update:
                put(out["summary"], u)
    return out
