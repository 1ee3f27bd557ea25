"""The Streamlit page: `app` is the script `taimatsu ui` runs (through `serve`, which
switches Streamlit's network probes off); `chat` and `admin*` are its pages, `auth` and
`oidc` the sign-in, `i18n` every string it shows."""

__all__: list[str] = []
