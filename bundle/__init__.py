"""The offline bundle: one archive that installs Taimatsu on a machine with no network.

`cli` is the `taimatsu bundle build|install` command group, `wheels` gathers the wheels,
`ollama` the model file, `archive` writes the tar with its manifest, and `install` (the
standard library only, copied into every bundle as install_offline.py) installs it.
This package imports nothing else of Taimatsu's."""

__all__: list[str] = []
