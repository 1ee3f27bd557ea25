"""A company-sized share, generated, then ingested with the real CLI: a first run and two
unchanged re-runs.

    python bench/share.py OUT [--files 100000] [--data DIR] [--generate-only] [--runtime R]
                              [--seed]

1. Generates OUT (skipped when OUT already holds the same number of files from this
   script): N files of real text from the Debian documentation on this machine
   (/usr/share/doc: READMEs, changelogs, copyright files, HTML manuals; Japanese from
   the man pages of manpages-ja in /usr/share/man/ja and the Japanese gold corpus), one
   to three paragraphs each, in every format the parsers take (TXT, Markdown, HTML,
   CSV, TSV, EML, DOCX, PDF, XLSX, PPTX: writers of bench/mixed_folder.py), under
   nested department/topic/year folders with Japanese names (営業部/議事録/2024/…).
   Deterministic: the same machine and N give the same share. Files are mostly small,
   so that a 100,000-file run fits in hours, not days, on 2 cores.
2. Runs `taimatsu ingest OUT` into a fresh data folder (the first run), then twice
   over the unchanged share (the default, then TAIMATSU_TRUST_FILE_STAT=false: every
   file read and hashed), each as its own process, and prints: files, chunks, first-run
   seconds (wall clock, process start included), chunks/s, files/s, the peak resident
   memory of the ingest process tree (the CLI plus its parsing worker, polled with
   psutil every 0.5 s), and the unchanged re-runs' seconds and peak memory.

With `--seed`, for a share whose first run cannot finish on the machine at hand (100,000
files embed in hours on 2 shared cores), the first run is replaced by filling the index
as a finished first run leaves it for the unchanged re-run to compare with — one point
per file with its real path, sha256, kind and groups, the vector of one real embedding
reused — and only the unchanged re-run is measured, with the real CLI. Its figures say
what a re-run costs at that size; the first run's rate comes from a size that finished.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from email.message import EmailMessage
from multiprocessing import Pool
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import psutil  # noqa: E402

from bench.mixed_folder import write as write_office  # noqa: E402
from ingest.parsing.base import Section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
JA_CORPUS = REPO / "tests" / "data" / "eval" / "natural" / "ja" / "corpus"
JA_FONT = Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf")
# (format, share of the files): many small text-like files, fewer heavy office ones
FORMATS = (
    ("txt", 18),
    ("md", 14),
    ("html", 16),
    ("eml", 8),
    ("csv", 5),
    ("tsv", 3),
    ("docx", 14),
    ("pdf", 10),
    ("xlsx", 6),
    ("pptx", 6),
)
DEPARTMENTS = ("総務部", "営業部", "開発部", "人事部", "経理部", "品質保証部", "情報システム部")
TOPICS = ("議事録", "手順書", "報告書", "規程", "資料", "提案書", "マニュアル")
YEARS = tuple(str(y) for y in range(2018, 2026))
NAMES = ("打ち合わせメモ", "作業手順", "月次報告", "社内規程", "説明資料", "notes", "readme")
PER_FOLDER = 120  # files per leaf folder
MARKER = ".taimatsu-share.json"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
STRICT = {"TAIMATSU_TRUST_FILE_STAT": "false"}


# ---------------------------------------------------------------- text from Debian docs
def _paragraphs(text: str, shortest: int = 120) -> list[str]:
    found = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines()]
        para = " ".join(line for line in lines if line)
        para = re.sub(r"\s+", " ", para)
        letters = sum(ch.isalpha() for ch in para)
        if shortest <= len(para) <= 1200 and letters > 0.6 * len(para):
            found.append(para)
    return found


def _roff_text(source: str) -> str:
    """A man page's text: requests dropped, font escapes removed, paragraphs kept."""
    out = []
    for line in source.splitlines():
        if line.startswith((".SH", ".SS", ".PP", ".TP", ".LP", ".P", ".IP", ".sp", ".br")):
            out.append("")
            continue
        if line.startswith((".", "'", '\\"')):
            continue
        line = re.sub(r"\\f[BIRP]|\\f\(..|\\s[+-]?\d|\\&|\\\(..|\\-", "", line)
        out.append(line.replace("\\e", "\\"))
    return "\n".join(out)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return ""
    if b"\0" in data[:4096]:
        return ""
    text = data.decode("utf-8", "replace")
    if path.suffix in (".html", ".htm") or path.name.endswith((".html.gz", ".htm.gz")):
        text = re.sub(r"(?is)<(script|style).*?</\1>", "", text)
        text = re.sub(r"(?i)</?(p|div|h\d|li|pre|br|tr|table|ul|ol)\b[^>]*>", "\n\n", text)
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return text


def english_pool() -> list[str]:
    keep = (".txt", ".md", ".rst", ".html", ".htm", ".gz", "")
    paths = sorted(
        p
        for p in Path("/usr/share/doc").rglob("*")
        if p.is_file() and not p.is_symlink() and (p.suffix in keep or p.name == "copyright")
    )
    return _unique(para for path in paths for para in _paragraphs(_read_text(path)))


def japanese_pool() -> list[str]:
    paras: list[str] = []
    for page in sorted(Path("/usr/share/man/ja").rglob("*.gz")):
        try:
            text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        paras += _paragraphs(_roff_text(text), 50)
    for path in sorted(JA_CORPUS.rglob("*")):
        if path.is_file():
            paras += _paragraphs(_read_text(path), 50)
    japanese = re.compile(r"[\u3041-\u30ff\u4e00-\u9fff]")
    return _unique(p for p in paras if len(japanese.findall(p)) > 0.3 * len(p))


def _unique(paras: object) -> list[str]:
    seen: set[str] = set()
    out = []
    for para in paras:  # type: ignore[attr-defined]
        if para not in seen:
            seen.add(para)
            out.append(para)
    return out


# ---------------------------------------------------------------- the share
def plan(n: int) -> list[tuple[str, str]]:
    """(relative path, format) of the N files: formats interleaved by their share,
    folders three or four deep with Japanese names, PER_FOLDER files each."""
    wheel = [kind for kind, share in FORMATS for _ in range(share)]
    wheel = [wheel[(i * 37) % len(wheel)] for i in range(len(wheel))]  # spread them
    files = []
    for i in range(n):
        leaf = i // PER_FOLDER
        dept = DEPARTMENTS[leaf % len(DEPARTMENTS)]
        topic = TOPICS[(leaf // len(DEPARTMENTS)) % len(TOPICS)]
        year = YEARS[(leaf // (len(DEPARTMENTS) * len(TOPICS))) % len(YEARS)]
        group = leaf // (len(DEPARTMENTS) * len(TOPICS) * len(YEARS))
        folder = f"{dept}/{topic}/{year}" + (f"/第{group + 1}期" if group else "")
        kind = wheel[i % len(wheel)]
        files.append((f"{folder}/{NAMES[i % len(NAMES)]}_{i:06d}.{kind}", kind))
    return files


_POOLS: dict[str, list[str]] = {}


def _init(english: list[str], japanese: list[str]) -> None:
    _POOLS["en"], _POOLS["ja"] = english, japanese


def content(i: int) -> tuple[str, list[str]]:
    """File i's title and one to three paragraphs (some files longer); a quarter of the
    files Japanese, whose paragraphs are fewer and shorter: two to four of them."""
    lang = "ja" if i % 4 == 3 else "en"
    pool = _POOLS[lang]
    count = 1 + (i * 13) % 3 if i % 10 else 3 + i % 4  # mostly short, some longer
    count += lang == "ja"
    picks = (hashlib.sha256(f"{i}:{k}".encode()).digest() for k in range(count))
    paras = [pool[int.from_bytes(d[:8], "big") % len(pool)] for d in picks]
    paras = [_CONTROL.sub("", para) for para in paras]  # not allowed in XML (sheets, slides)
    title = paras[0][:40].rsplit(" ", 1)[0] if lang == "en" else paras[0][:20]
    return title, paras


def write_file(job: tuple[int, str, str, str]) -> None:
    i, out_dir, relative, kind = job
    out = Path(out_dir, relative)
    title, paras = content(i)
    if kind == "html":
        body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paras)
        out.write_text(
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n",
            "utf-8",
        )
    elif kind == "md":
        out.write_text(f"# {title}\n\n" + "\n\n".join(paras) + "\n", "utf-8")
    elif kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        rows = ["No" + sep + "項目" + sep + "内容"]
        for n, para in enumerate(paras, 1):
            cell = para.replace('"', '""')
            rows.append(f'{n}{sep}"{title}"{sep}"{cell}"')
        out.write_text("\n".join(rows) + "\n", "utf-8")
    elif kind == "eml":
        message = EmailMessage()
        message["Subject"] = title
        message["From"] = "docs@example.org"
        message["To"] = "staff@example.org"
        message["Date"] = "Mon, 01 Apr 2024 09:00:00 +0900"
        message.set_content("\n\n".join(paras))
        out.write_bytes(bytes(message))
    elif kind in ("docx", "pptx", "xlsx"):
        out.write_bytes(office_file(kind, title, paras))
    elif kind == "pdf" and i % 16 == 3:  # a few Japanese PDFs: embedding the font is slow
        _japanese_pdf(title, paras, out)
    elif kind == "pdf":
        sections = [Section("\n\n".join(paras), section=title)]
        write_office(kind, sections, out)
    else:
        out.write_text(f"{title}\n\n" + "\n\n".join(paras) + "\n", "utf-8")


_TEMPLATES: dict[str, tuple[bytes, str]] = {}
_PART = {
    "docx": "word/document.xml",
    "pptx": "ppt/slides/slide1.xml",
    "xlsx": "xl/worksheets/sheet1.xml",
}


def _template(kind: str) -> tuple[bytes, str]:
    """The library's own file (bench/mixed_folder.py's writer) with marker text, built
    once per process: (the package without its content part, that part's XML). Each file
    is the package with its content part appended, fifty times faster than building
    the document with the library every time."""
    if kind not in _TEMPLATES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, f"t.{kind}")
            write_office(kind, [Section("@@BODY@@", section="@@TITLE@@")], path)
            buffer = io.BytesIO()
            with zipfile.ZipFile(path) as package, zipfile.ZipFile(buffer, "w") as rest:
                for info in package.infolist():
                    if info.filename != _PART[kind]:
                        rest.writestr(info, package.read(info), zipfile.ZIP_DEFLATED)
                xml = package.read(_PART[kind]).decode("utf-8")
        _TEMPLATES[kind] = (buffer.getvalue(), xml)
    return _TEMPLATES[kind]


def office_file(kind: str, title: str, paras: list[str]) -> bytes:
    parts, xml = _template(kind)
    esc = [xml_escape(p) for p in paras]
    if kind == "docx":  # the heading, then one <w:p> per paragraph
        body = '</w:t></w:r></w:p><w:p><w:r><w:t xml:space="preserve">'.join(esc)
        xml = xml.replace(">@@BODY@@<", f' xml:space="preserve">{body}<', 1)
        xml = xml.replace("@@TITLE@@", xml_escape(title), 1)
    elif kind == "pptx":  # a slide: the title, one <a:p> per paragraph
        xml = xml.replace("@@TITLE@@", xml_escape(title), 1)
        xml = xml.replace("@@BODY@@", "</a:t></a:r></a:p><a:p><a:r><a:t>".join(esc), 1)
    else:  # a sheet: a header row, then a row per paragraph (inline strings)
        rows = [("section", "text"), *((title, p) for p in paras)]
        cells = "".join(
            f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>{xml_escape(a)}</t></is></c>'
            f'<c r="B{r}" t="inlineStr"><is><t>{xml_escape(b)}</t></is></c></row>'
            for r, (a, b) in enumerate(rows, 1)
        )
        data = f"<sheetData>{cells}</sheetData>"
        xml = re.sub(r"<sheetData>.*</sheetData>|<sheetData/>", lambda _: data, xml, flags=re.S)
        xml = re.sub(r"<dimension ref=\"[^\"]*\"/>", f'<dimension ref="A1:B{len(rows)}"/>', xml)
    buffer = io.BytesIO(parts)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as package:
        package.writestr(_PART[kind], xml)
    return buffer.getvalue()


def _japanese_pdf(title: str, paras: list[str], out: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(dt.datetime(2024, 4, 1, tzinfo=dt.UTC))
    pdf.add_page()
    if JA_FONT.exists():
        pdf.add_font("ipag", fname=str(JA_FONT))
        pdf.set_font("ipag", size=10)
        text = title + "\n" + "\n\n".join(paras)
    else:  # no Japanese font: the page says so in ASCII rather than drawing boxes
        pdf.set_font("Helvetica", size=10)
        text = "(Japanese text: install fonts-ipafont-gothic)"
    pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(out))


def generate(out: Path, n: int) -> None:
    marker = out / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("files") == n:
        log(f"{out}: already holds the {n}-file share")
        return
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cache = Path(tempfile.gettempdir(), "taimatsu-share-text.json")
    if cache.exists():  # the text of this machine's documentation, gathered before
        english, japanese = json.loads(cache.read_text("utf-8"))
    else:
        english, japanese = english_pool(), japanese_pool()
        cache.write_text(json.dumps([english, japanese], ensure_ascii=False), "utf-8")
    log(f"text: {len(english)} English and {len(japanese)} Japanese paragraphs")
    files = plan(n)
    for folder in sorted({str(Path(out, rel).parent) for rel, _ in files}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(out), rel, kind) for i, (rel, kind) in enumerate(files)]
    with Pool(os.cpu_count() or 2, _init, (english, japanese)) as pool:
        for done, _ in enumerate(pool.imap_unordered(write_file, jobs, chunksize=64), 1):
            if done % 10000 == 0:
                log(f"written {done}/{n}")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    kinds = sorted({kind for _, kind in files})
    marker.write_text(json.dumps({"files": n, "bytes": size, "formats": kinds}))
    log(
        f"{out}: {n} files, {size / 2**20:.0f} MB, {' '.join(kinds)} "
        f"in {time.perf_counter() - start:.0f} s"
    )


# ---------------------------------------------------------------- the runs
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_ingest(folder: Path, env: dict[str, str]) -> tuple[dict, float, float]:
    """(the run's JSON summary, seconds, peak MB of the process tree's resident memory)."""
    cmd = [str(Path(sys.executable).with_name("taimatsu")), "ingest", str(folder), "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]

    def watch() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                rss = 0
            peak[0] = max(peak[0], rss)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    watcher.join()
    if proc.returncode not in (0, 3):  # 3: done, some files failed (counted below)
        sys.exit(f"bench/share.py: taimatsu ingest failed ({proc.returncode}): {err.decode()}")
    return json.loads(out), seconds, peak[0] / 2**20


def seed(folder: Path, data: Path) -> tuple[int, float]:
    """Fill a fresh index under `data` with one point per file of `folder`, as a first
    run leaves it for the re-run's comparison; (documents, seconds)."""
    from assistant.embedder import Embedder, local_options
    from assistant.index import ChunkPoint, Field, SparseTerms, Upsert, open_index
    from assistant.settings import EVERYONE, Settings
    from ingest.listing import list_folder
    from ingest.pipeline import chunk_id, display_path

    start = time.perf_counter()
    settings = Settings(data_dir=data)
    embedder = Embedder(**local_options(settings))
    index = open_index(settings)
    index.ensure(embedder.stamp)
    vector = embedder.embed(["a real vector for every seeded document"])[0].tolist()
    root = folder.resolve()
    files = list_folder(root).files
    now = time.time()
    for begin in range(0, len(files), 2048):
        points = []
        for path in files[begin : begin + 2048]:
            source = display_path(path.relative_to(root))
            doc_hash = hashlib.sha256(path.read_bytes()).hexdigest()
            found = path.stat()
            payload = {
                Field.ROOT: str(root),
                Field.SOURCE: source,
                Field.DOC_HASH: doc_hash,
                Field.CHUNK: 0,
                Field.CHUNKS: 1,
                Field.PAGE: None,
                Field.SECTION: None,
                Field.TEXT: path.stem,
                Field.KIND: path.suffix.lstrip(".").lower(),
                Field.GROUPS: [EVERYONE],
                Field.INDEXED_AT: now,
                Field.FILE_STAT: [found.st_size, found.st_mtime_ns, found.st_ctime_ns],
            }
            points.append(
                ChunkPoint(
                    chunk_id(str(root), source, doc_hash, 0), vector, SparseTerms([], []), payload
                )
            )
        index.write([Upsert(points)])
        log(f"seeded {begin + len(points)}/{len(files)}")
    return len(files), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to generate the share in")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: temp)")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--runtime", default=None, help="TAIMATSU_EMBED_RUNTIME for the runs")
    parser.add_argument(
        "--seed", action="store_true", help="fill the index instead of a first run (see above)"
    )
    args = parser.parse_args()
    generate(args.out, args.files)
    if args.generate_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        shutil.rmtree(data, ignore_errors=True)
        env = {**os.environ, "TAIMATSU_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
        if args.runtime:
            env["TAIMATSU_EMBED_RUNTIME"] = args.runtime
        if args.seed:
            documents, seconds = seed(args.out, data)
            log(f"seeded {documents} documents in {seconds:.0f} s")
            second, second_s, second_mb = run_ingest(args.out, env)
            log(f"unchanged re-run: {second_s:.1f} s")
            third, third_s, third_mb = run_ingest(args.out, {**env, **STRICT})
            print(f"share: {args.out} ({second['files_seen']} files), index seeded")
            print(f"{'unchanged re-run':34}{'seconds':>9}{'peak MB':>9}{'unchanged':>11}")
            print(
                f"{'default (stat trusted)':34}{second_s:>9.1f}{second_mb:>9.0f}"
                f"{second['unchanged']:>11}"
            )
            print(
                f"{'TAIMATSU_TRUST_FILE_STAT=false':34}{third_s:>9.1f}{third_mb:>9.0f}"
                f"{third['unchanged']:>11}"
            )
            return
        log(f"first run into {data}")
        first, first_s, first_mb = run_ingest(args.out, env)
        log(f"first run: {first_s:.0f} s, {first['chunks_embedded']} chunks")
        second, second_s, second_mb = run_ingest(args.out, env)
        log(f"unchanged re-run: {second_s:.1f} s")
        third, third_s, _ = run_ingest(args.out, {**env, **STRICT})
        log(f"unchanged re-run, every file hashed: {third_s:.1f} s")
    files, chunks = first["files_seen"], first["chunks_embedded"] + first["chunks_reused"]
    digest = hashlib.sha256(json.dumps(first.get("failed", [])).encode()).hexdigest()[:8]
    print(f"share: {args.out} ({files} files, {len(first['failed'])} failed [{digest}])")
    print(
        f"{'files':>8}{'chunks':>9}{'first s':>9}{'chunks/s':>10}{'files/s':>9}"
        f"{'peak MB':>9}{'re-run s':>10}{'re-run MB':>11}"
    )
    print(
        f"{files:>8}{chunks:>9}{first_s:>9.0f}{chunks / first_s:>10.1f}{files / first_s:>9.1f}"
        f"{first_mb:>9.0f}{second_s:>10.1f}{second_mb:>11.0f}"
    )
    per_million = 1_000_000 / (chunks / first_s) / 3600
    print(
        f"unchanged re-run with TAIMATSU_TRUST_FILE_STAT=false (every file read): {third_s:.1f} s"
    )
    print(f"extrapolated: {per_million:.1f} h per million chunks at this rate")
    assert second["chunks_embedded"] == 0 and second["unchanged"] == first["added"], second


if __name__ == "__main__":
    main()
