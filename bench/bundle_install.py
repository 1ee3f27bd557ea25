"""The offline bundle with its full wheel set, installed with the network denied.

    python bench/bundle_install.py [--work DIR] [--keep]

The test suite (tests/bundle/test_bundle.py) builds project-only bundles, whose installer
runs `pip --no-deps`: it proves the installer, not that the dependency set installs on a
machine with nothing. This script does the whole thing once, on a connected machine:

1. `taimatsu bundle build` of a full bundle for this machine (pip downloads every
   dependency as a binary wheel for Python 3.11; torch must be the CPU build, e.g. from
   a --find-links folder the machine's pip configuration names);
2. `sh taimatsu-bundle/install-offline.sh --venv DIR` inside a new network namespace
   with no interface but a loopback that is down (`unshare -n`, root), into a fresh
   virtual environment: every file checked against the manifest, then `pip --no-index`
   from the bundle's wheels only, dependencies included;
3. in the same kind of namespace, the installed environment ingests the bundled samples
   and answers a search with the embedding model packaged in its wheel, and `pip check`
   finds no missing or conflicting requirement.

Prints the number of wheels, the archive's size, each step's time and the search's top
hit, and writes them as JSON to bench/results/bundle_install.json. Exits non-zero when a
step fails. Needs a few GB of free space under --work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
QUESTION = "What does error VPN-0x2F mean?"
EXPECTED_SOURCE = "en/vpn-troubleshooting.pdf"


def step(name: str, command: list[str | Path], report: dict, **kwargs) -> str:
    """Run one step, timed; its output is returned, its failure ends the script."""
    print(f"== {name}: {' '.join(map(str, command))}", flush=True)
    started = time.monotonic()
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, check=False, **kwargs
    )
    seconds = round(time.monotonic() - started, 1)
    report["steps"][name] = {"seconds": seconds, "exit": result.returncode}
    print(f"   {seconds} s, exit {result.returncode}", flush=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        report["failed"] = name
        finish(report)
        sys.exit(1)
    return result.stdout


def offline(*command: str | Path) -> list[str | Path]:
    """The command in a network namespace of its own: no network at all."""
    return ["unshare", "-n", *command]


def finish(report: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bundle_install.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="where to build and install (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit("bundle_install: needs root and unshare (util-linux) to deny the network")
    if sys.version_info[:2] != (3, 11):
        sys.exit("bundle_install: run with Python 3.11, the bundle's target")

    work = args.work or Path(tempfile.mkdtemp(prefix="taimatsu-bundle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"work": str(work), "steps": {}}
    try:
        archive = work / "taimatsu-offline.tar"
        step(
            "build",
            [sys.executable, "-m", "bundle.cli", "build", archive, "--project-dir", ROOT],
            report,
            cwd=ROOT,
        )
        manifest = json.loads(
            subprocess.run(
                ["tar", "-xOf", archive, "taimatsu-bundle/manifest.json"],
                capture_output=True,
                check=True,
            ).stdout
        )
        report["wheels"] = len(manifest["wheels"])
        report["torch"] = manifest["torch"]
        report["archive_mb"] = round(archive.stat().st_size / 2**20)
        print(f"   {report['wheels']} wheels, {report['archive_mb']} MB, {report['torch']}")

        unpacked = work / "unpacked"
        shutil.rmtree(unpacked, ignore_errors=True)
        unpacked.mkdir()
        subprocess.run(["tar", "-xf", archive, "-C", unpacked], check=True)
        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TAIMATSU_"))}
        env["PYTHON"] = sys.executable
        installer = unpacked / "taimatsu-bundle" / "install-offline.sh"
        step("install offline", offline("sh", installer, "--venv", venv), report, env=env)
        step("pip check", offline(venv / "bin" / "python", "-m", "pip", "check"), report)

        data = work / "data"
        shutil.rmtree(data, ignore_errors=True)
        run_env = {**env, "TAIMATSU_DATA_DIR": str(data), "HOME": str(work)}
        taimatsu = venv / "bin" / "taimatsu"
        samples = ROOT / "samples"
        out = step(
            "ingest offline", offline(taimatsu, "ingest", samples, "--json"), report, env=run_env
        )
        report["ingested"] = json.loads(out.splitlines()[-1])["added"]
        out = step(
            "search offline",
            offline(taimatsu, "search", QUESTION, "--json", "-k", "1"),
            report,
            env=run_env,
        )
        top = json.loads(out)["hits"][0]["source"]
        report["top_hit"] = top
        if top != EXPECTED_SOURCE:
            report["failed"] = f"search: top hit {top}, not {EXPECTED_SOURCE}"
            finish(report)
            sys.exit(1)
        print(f"   top hit: {top}")
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    finish(report)


if __name__ == "__main__":
    main()
