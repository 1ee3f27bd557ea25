"""Ingestion: sources in, the index brought in line with them.

`parsing` turns files into sections (one module per format, in a worker process),
`chunker` cuts them to the model's size, `acl` decides who may read each document,
`pipeline` runs one incremental, crash-safe run, `runs` logs it, `uploads` and
`upload_checks` take documents from the page, `personal` (with `owners`) each user's own
few documents, `remote` copies sites, WebDAV stores and mailboxes into folders that the
pipeline ingests. Imports `assistant`, never `ui`."""

__all__: list[str] = []
