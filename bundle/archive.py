"""The archive of an offline bundle: one uncompressed tar (wheels and GGUF weights do
not compress) under one folder, each file hashed as it goes in, the manifest with every
file's sha256 written last, and the archive's own sha256 taken on the way out, so even a
multi-gigabyte model is read once."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

from bundle.install import MANIFEST, ROOT_NAME, SUMS


class _HashingWriter:
    """The archive's own sha256, taken while tarfile writes it."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self.raw, self.digest, self.offset = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.offset += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.offset


class _HashingReader:
    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def write_archive(
    out: Path, entries: list[tuple[str, Path | bytes]], manifest: dict
) -> tuple[str, int]:
    """Write the tar (files in order, then the manifest with every file's sha256, taken
    as the file went in) atomically; return the archive's sha256 and size."""
    now = int(time.time())
    partial = out.with_name(out.name + ".part")

    def info(name: str, size: int = 0, folder: bool = False) -> tarfile.TarInfo:
        item = tarfile.TarInfo(f"{ROOT_NAME}/{name}" if name else ROOT_NAME)
        item.size, item.mtime, item.uid, item.gid = size, now, 0, 0
        item.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
        item.mode = 0o755 if folder or name.endswith((".sh", ".py")) else 0o644
        return item

    try:
        with partial.open("wb") as raw:
            sink = _HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
                made: set[str] = set()
                for name, source in entries:
                    for depth in range(name.count("/") + 1):
                        folder = "/".join(name.split("/")[:depth])
                        if folder not in made:
                            made.add(folder)
                            tar.addfile(info(folder, folder=True))
                    if isinstance(source, bytes):
                        reader = _HashingReader(io.BufferedReader(io.BytesIO(source)))  # type: ignore[arg-type]
                        tar.addfile(info(name, len(source)), reader)
                    else:
                        with source.open("rb") as fh:
                            reader = _HashingReader(fh)
                            tar.addfile(info(name, source.stat().st_size), reader)
                    size = len(source) if isinstance(source, bytes) else source.stat().st_size
                    manifest["files"][name] = {"sha256": reader.digest.hexdigest(), "size": size}
                text = json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n"
                sums = "".join(f"{f['sha256']}  {n}\n" for n, f in manifest["files"].items())
                for name, data in ((MANIFEST, text), (SUMS, sums.encode())):
                    tar.addfile(info(name, len(data)), io.BytesIO(data))
            raw.flush()
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return sink.digest.hexdigest(), sink.offset
