"""What the page tests share: the app script and `page`, which opens it through
Streamlit's AppTest (the script runs for real, in-process) on the samples' index."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "ui" / "web" / "app.py")


@pytest.fixture
def page(monkeypatch, sample_settings, tmp_path):
    def start(ollama_url: str, data_dir: Path | None = None, **env: str) -> AppTest:
        monkeypatch.setenv("TAIMATSU_DATA_DIR", str(data_dir or sample_settings.data_dir))
        monkeypatch.setenv("TAIMATSU_OLLAMA_HOST", ollama_url)
        monkeypatch.setenv("TAIMATSU_LOCK_TIMEOUT", "5")
        for name, value in env.items():
            monkeypatch.setenv(f"TAIMATSU_{name.upper()}", value)
        app = AppTest.from_file(APP, default_timeout=120)
        app.session_state["language"] = "en"
        app.run()
        assert not app.exception
        return app

    return start
