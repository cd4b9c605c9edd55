"""``manifest.jsonl``: one line per photo done, so a run can stop anywhere and resume.

The first line holds the settings the crops were made with; each later line is one photo
(its size and modification time, what was found, every face with its crop, box, landmarks
and score). A line is written only after the photo's crops, so a photo with a line is done;
a photo changed since (size or time) is done again, and its newer line wins. A line cut short
by a crash is dropped when the manifest is opened again.
"""

from __future__ import annotations

import json
import os

from trainer.registry import ConfigError

MANIFEST = "manifest.jsonl"


def photo_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class Manifest:
    """Read what is done, then append photo records (``add``) as they finish."""

    def __init__(self, output: str, settings: dict):
        self.path = os.path.join(output, MANIFEST)
        self.settings = settings
        self.records: dict[str, dict] = {}
        if os.path.exists(self.path):
            self._read()
        else:
            os.makedirs(output, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"settings": settings}) + "\n")

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        complete = data[:data.rfind(b"\n") + 1]
        if len(complete) < len(data):  # the last line was cut short: drop it before appending
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
        lines = complete.decode("utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("settings") != self.settings:
            changed = sorted(k for k in set(self.settings) | set(header.get("settings", {}))
                             if header.get("settings", {}).get(k) != self.settings.get(k))
            raise ConfigError(f"{os.path.dirname(self.path)} holds faces aligned with other settings "
                              f"({', '.join(changed)} differ): give another output folder, or the same settings")
        for line in lines[1:]:
            record = json.loads(line)
            self.records[record["photo"]] = record

    def is_done(self, photo: str, stamp: dict) -> bool:
        record = self.records.get(photo)
        return record is not None and record["stamp"] == stamp

    def add(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.records[record["photo"]] = record


def read_records(output: str) -> list[dict]:
    """The photo records of an output folder, the newest per photo, in photo order."""
    path = os.path.join(output, MANIFEST)
    records = {}
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines()[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            records[record["photo"]] = record
    return [records[photo] for photo in sorted(records)]
