"""The core of Taimatsu, which imports neither `ingest` nor `ui`.

Foundation (imported by everything): `errors` (the one error tree), `settings`,
`embedder` (the dense model), `sparse` (keyword vectors). Above it, in this order:
`index` (the contract and its backends), `retrieval`, `answering`, and `status`
(health). `evaluation` sits on top and only `ui` and `bench` import it."""

__all__: list[str] = []
