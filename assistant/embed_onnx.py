"""The local embedding model on ONNX Runtime: exported from its own weights, offline,
at first use, and cached beside the data.

`TAIMATSU_EMBED_RUNTIME=onnx` runs the sentence-transformers model (transformer,
pooling, normalization: the whole `SentenceTransformer.forward`) as one ONNX graph,
exported by `torch.onnx.export` from the folder's weights and fused for ONNX Runtime's
CPU kernels (attention, layer norms, GELU) when the transformer is a BERT; `onnx-int8`
quantizes that graph's weights to int8 (dynamic quantization: no calibration data), with
the preset of optimum's `AutoQuantizationConfig` for the instructions this CPU has.

Why not sentence-transformers' own `backend="onnx"`: it needs `optimum-onnx`, whose only
release (0.1.0) requires transformers < 4.58, while sentence-transformers 6 needs
transformers 5; the two cannot be installed together. The export below is the same
work (optimum's exporter and `ORTQuantizer.quantize` call `torch.onnx.export` and
`onnxruntime.quantization.quantize_dynamic`), checked against the torch model before it
is kept.

The cache: `<cache>/<model name>-<checksum>/<variant>/` with `model.onnx` and
`export.json` (what was exported from what, and the file's sha256). It is written in a
temporary folder beside it and renamed into place, under a file lock, so a crash mid-
export leaves no half cache; a cache that does not match its record is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import SettingsError

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "onnx-int8")
EXPORT_FORMAT = 2  # bump when the export changes what it writes
MODEL_FILE = "model.onnx"
RECORD_FILE = "export.json"
CHECK_TEXTS = (
    "How do I rebuild the index after changing the embedding model?",
    "松明は夜道を照らす。索引を作り直すにはどうすればよいですか。",
    "x",
)
CHECK_COSINE = 0.999  # the fp32 graph against the torch model it came from


class ExportError(SettingsError):
    """The model could not be exported to ONNX (the message says what to do)."""


def quantization_preset() -> str:
    """optimum's dynamic-quantization preset for this CPU: avx512_vnni, avx512, avx2 or
    arm64 (`AutoQuantizationConfig`); avx2's unsigned weights are the portable choice on
    x86 (no u8*s8 saturation without VNNI)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    try:
        flags = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = set()
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    return "avx2"


def variant(runtime: str) -> str:
    """The cache folder's name for a runtime: onnx, or onnx-int8-<preset>."""
    return runtime if runtime == "onnx" else f"{runtime}-{quantization_preset()}"


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _record_ok(folder: Path, checksum: str) -> dict | None:
    """The folder's export record, when it describes a complete export of this model."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text("utf-8"))
        model = folder / MODEL_FILE
        if (
            record.get("format") == EXPORT_FORMAT
            and record.get("source_checksum") == checksum
            and model.stat().st_size == record.get("size")
            and _sha256(model) == record.get("sha256")
        ):
            return record
    except (OSError, ValueError, AttributeError):
        pass
    return None


def ensure_export(
    model_dir: Path, name: str, checksum: str, runtime: str, cache_root: Path
) -> tuple[Path, dict]:
    """The folder holding the runtime's exported model for this model folder, and its
    record: the cached one when the record matches, else a fresh export (under a lock,
    written beside it and renamed into place)."""
    from filelock import FileLock

    parent = cache_root / f"{name}-{checksum[:16]}"
    final = parent / variant(runtime)
    if record := _record_ok(final, checksum):
        return final, record
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(parent / f".{final.name}.lock")):
        if record := _record_ok(final, checksum):  # exported by another process meanwhile
            return final, record
        for leftover in parent.glob(f".tmp-{final.name}-*"):  # a crashed export's remains
            shutil.rmtree(leftover, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
        try:
            started = time.perf_counter()
            max_length = _export(model_dir, runtime, work)
            model = work / MODEL_FILE
            record = {
                "format": EXPORT_FORMAT,
                "runtime": runtime,
                "variant": final.name,
                "source": str(model_dir),
                "source_checksum": checksum,
                "max_seq_length": max_length,
                "quantization": quantization_preset() if runtime == "onnx-int8" else None,
                "size": model.stat().st_size,
                "sha256": _sha256(model),
                "seconds": round(time.perf_counter() - started, 1),
                "versions": _versions(),
            }
            (work / RECORD_FILE).write_text(json.dumps(record, indent=2), "utf-8")
            for path in (model, work / RECORD_FILE):
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():  # a broken cache: out of the way first, then removed
                broken = parent / f".tmp-{final.name}-broken-{os.getpid()}"
                os.replace(final, broken)
                shutil.rmtree(broken, ignore_errors=True)
            os.replace(work, final)
            log.info(
                "exported %s of %s in %.1f s to %s", runtime, model_dir, record["seconds"], final
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final, record


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "onnxruntime", "onnx", "sentence-transformers")}


def _no_telemetry() -> None:
    """ONNX Runtime's telemetry off (assistant.embedder also sets ORT_DISABLE_TELEMETRY
    before anything imports it)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    import onnxruntime

    onnxruntime.disable_telemetry_events()


def _export(model_dir: Path, runtime: str, work: Path) -> int:
    """model.onnx in `work`: the fp32 graph (fused), quantized for onnx-int8; returns
    the model's max_seq_length."""
    _no_telemetry()
    fp32 = work / (MODEL_FILE if runtime == "onnx" else "fp32.onnx")
    max_length = _export_fp32(model_dir, fp32)
    if runtime == "onnx-int8":
        _quantize(fp32, work / MODEL_FILE)
        fp32.unlink()
    return max_length


def _export_fp32(model_dir: Path, out: Path) -> int:
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        # eager attention traces to the MatMul/Softmax pattern ONNX Runtime fuses
        st = SentenceTransformer(
            str(model_dir),
            device="cpu",
            local_files_only=True,
            trust_remote_code=False,
            model_kwargs={"attn_implementation": "eager"},
        )
    except (ValueError, TypeError):  # a transformer without that option
        st = SentenceTransformer(
            str(model_dir), device="cpu", local_files_only=True, trust_remote_code=False
        )
    st.eval()
    tokenizer = st.tokenizer
    names = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in tokenizer.model_input_names
    ]
    sample = tokenizer(list(CHECK_TEXTS[:2]), padding=True, return_tensors="pt")

    class Whole(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.st(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"sentence_embedding": {0: "batch"}}
    raw = out.with_name("raw.onnx")
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Whole().eval(),
            tuple(sample[n] for n in names),
            str(raw),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic axes
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
        )
    config = st[0].auto_model.config
    if getattr(config, "model_type", "") == "bert":
        from onnxruntime.transformers.optimizer import optimize_model

        fused = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            opt_level=1,
        )
        fused.save_model_to_file(str(out))
        raw.unlink()
    else:
        os.replace(raw, out)
    # the graph must give the torch model's vectors, on texts short and long, en and ja
    texts = [*CHECK_TEXTS, " ".join(["token"] * 600)]
    expected = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    got = OnnxModel(out, tokenizer, int(st.max_seq_length), threads=0).encode(texts, 8)
    cosine = float((expected * got).sum(axis=1).min())
    if cosine < CHECK_COSINE:
        raise ExportError(
            f"the ONNX export of {model_dir} does not reproduce the model (cosine {cosine:.4f}); "
            "set TAIMATSU_EMBED_RUNTIME=torch for this model"
        )
    return int(st.max_seq_length)


def _quantize(fp32: Path, out: Path) -> None:
    """Dynamic int8 quantization with optimum's preset for this CPU (see
    `quantization_preset`): per-channel symmetric weights, asymmetric u8 activations,
    of the MatMul weights only (the feed-forward and output projections: three quarters
    of the multiply-adds). The fused attention's QKV projection and the embedding table
    stay fp32: quantizing them too was no faster on the 2-core machine and took the
    worst cosine to the torch vectors from 0.987 to 0.977 (docs/decisions.md §13)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    preset = quantization_preset()
    weights = QuantType.QUInt8 if preset == "avx2" else QuantType.QInt8
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process, on the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            per_channel=True,
            reduce_range=False,
            weight_type=weights,
            op_types_to_quantize=["MatMul"],
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": preset == "arm64",
                "DefaultTensorType": 1,  # FLOAT, for outputs of fused (com.microsoft) ops
            },
        )
    finally:
        root.setLevel(level)


@dataclass
class OnnxModel:
    """An exported sentence-transformers graph with its tokenizer: texts in, normalized
    float32 vectors out, in batches of similar length (as `SentenceTransformer.encode`)."""

    path: Path
    tokenizer: object  # a transformers tokenizer (the model folder's own)
    max_length: int
    threads: int = 0  # ONNX Runtime's intra-op threads; 0 = one per core

    def __post_init__(self) -> None:
        _no_telemetry()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        # the tokenizer sets padding and truncation on itself at every call: one call at
        # a time (pages' sessions embed questions from threads of their own)
        self._tokenizing = threading.Lock()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = [texts[i].strip() for i in order[start : start + batch_size]]
            with self._tokenizing:
                features = self.tokenizer(
                    batch,
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_tensors="np",
                )
            feed = {n: np.asarray(features[n], dtype=np.int64) for n in self.inputs}
            rows.append(self.session.run(None, feed)[0])
        vectors = np.concatenate(rows).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result
