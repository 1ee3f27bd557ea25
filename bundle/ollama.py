"""The Ollama model of an offline bundle: one GGUF file and a Modelfile beside it, so that
`ollama create NAME -f Modelfile` works on a machine that cannot pull.

Two sources: a folder holding one `.gguf` file (a Qwen 2.5 model gets the ChatML template
and stop tokens it needs), or Ollama's own model store (`~/.ollama/models`, or
`/usr/share/ollama/.ollama/models` for the Linux service) after `ollama pull NAME` on the
connected machine, whose template, system prompt, parameters and licence are carried
over as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
GGUF_NAME = "model.gguf"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"

# Qwen 2.5 speaks ChatML. This is the Messages form of Ollama's own qwen2.5 template
# without the tool-calling part (Taimatsu calls no tools).
QWEN_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_PARAMS: dict[str, object] = {"stop": ["<|im_start|>", "<|im_end|>"], "num_ctx": 8192}


class OllamaSourceError(Exception):
    """The given folder does not hold a usable model; the message says what to do."""


@dataclass(frozen=True)
class OllamaModel:
    name: str  # what `ollama create` will call it, e.g. qwen2.5:7b
    gguf: Path  # the weights on this machine
    modelfile: str  # the Modelfile's text, FROM ./model.gguf
    origin: str  # where it came from, for the manifest


def _quote(text: str) -> str:
    if '"""' in text:
        raise OllamaSourceError('a template or prompt holds """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def _param(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return _quote(value) if '"' in value or not value.strip() else json.dumps(value)
    return str(value)


def modelfile_text(
    name: str,
    template: str | None,
    system: str | None,
    params: dict[str, object],
    licenses: list[str] | None = None,
) -> str:
    lines = [
        f"# {name}, written by `taimatsu bundle build`. On the air-gapped machine, in this",
        f"# folder or with -f pointing here:  ollama create {name} -f Modelfile",
        f"FROM ./{GGUF_NAME}",
    ]
    if template is not None:
        lines.append(f"TEMPLATE {_quote(template)}")
    if system is not None:
        lines.append(f"SYSTEM {_quote(system)}")
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {_param(item)}")
    lines += [f"LICENSE {_quote(text)}" for text in licenses or []]
    return "\n".join(lines) + "\n"


def _check_gguf(path: Path) -> None:
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise OllamaSourceError(f"{path} is not a GGUF file (it does not start with GGUF)")


def _from_gguf_folder(folder: Path, name: str) -> OllamaModel:
    found = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    if not found:
        raise OllamaSourceError(
            f"{folder} holds no .gguf file and is not an Ollama model store (no manifests/ "
            "and blobs/); give a folder with one GGUF file, or ~/.ollama/models after "
            f"`ollama pull {name}`"
        )
    if len(found) > 1:
        hint = (
            "; merge split files first (llama.cpp: llama-gguf-split --merge FIRST OUT)"
            if any("-of-" in p.name for p in found)
            else ""
        )
        names = ", ".join(p.name for p in found)
        raise OllamaSourceError(f"{folder} holds {len(found)} GGUF files ({names}), not one{hint}")
    _check_gguf(found[0])
    qwen = name.split("/")[-1].lower().startswith("qwen2")
    text = (
        modelfile_text(name, QWEN_TEMPLATE, QWEN_SYSTEM, QWEN_PARAMS)
        if qwen
        else modelfile_text(name, None, None, {"num_ctx": 8192})
        # no TEMPLATE: Ollama takes the chat template recorded in the GGUF file
    )
    return OllamaModel(name, found[0], text, f"GGUF file {found[0].name}")


def _manifest_path(store: Path, name: str) -> Path:
    ref, _, tag = name.partition(":")
    parts = ref.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_HOST, *parts]
    return store.joinpath("manifests", *parts, tag or DEFAULT_TAG)


def _blob(store: Path, digest: str) -> Path:
    for candidate in (digest.replace(":", "-"), digest):  # sha256-HEX; very old stores: sha256:HEX
        path = store / "blobs" / candidate
        if path.is_file():
            return path
    raise OllamaSourceError(f"the blob {digest} is missing from {store / 'blobs'}; pull again")


def _from_store(store: Path, name: str) -> OllamaModel:
    path = _manifest_path(store, name)
    if not path.is_file():
        raise OllamaSourceError(
            f"{store} has no model {name} (no {path.relative_to(store)}); run "
            f"`ollama pull {name}` on this machine, or pass the name with --ollama-model"
        )
    try:
        layers = json.loads(path.read_text(encoding="utf-8"))["layers"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OllamaSourceError(f"{path} is not an Ollama manifest") from None
    kinds: dict[str, list[Path]] = {}
    for layer in layers:
        kind = layer["mediaType"].rsplit(".", 1)[-1]
        kinds.setdefault(kind, []).append(_blob(store, layer["digest"]))
    unsupported = sorted(set(kinds) & {"projector", "adapter"})
    if unsupported or len(kinds.get("model", [])) != 1:
        what = ", ".join(unsupported) or f"{len(kinds.get('model', []))} weight layers"
        raise OllamaSourceError(f"{name} has {what}; a bundle carries single-file text models")
    _check_gguf(kinds["model"][0])

    def read(kind: str) -> str | None:
        return kinds[kind][0].read_text(encoding="utf-8") if kind in kinds else None

    params = json.loads(read("params") or "{}")
    licenses = [p.read_text(encoding="utf-8") for p in kinds.get("license", [])]
    text = modelfile_text(name, read("template"), read("system"), params, licenses)
    return OllamaModel(name, kinds["model"][0], text, f"Ollama store {store}")


def find_model(folder: Path, name: str) -> OllamaModel:
    """The model to bundle from `folder`: an Ollama store if it has manifests/ and blobs/,
    else a folder with one GGUF file."""
    if not folder.is_dir():
        raise OllamaSourceError(f"{folder} is not a folder")
    if (folder / "manifests").is_dir() and (folder / "blobs").is_dir():
        return _from_store(folder, name)
    return _from_gguf_folder(folder, name)
