"""lokal's programs: the ``lokal`` command, the edge agent and the HTTP server.

- :mod:`lokal.agent.cli`: the ``lokal`` command, a module per command family; thin.
- The edge agent: :mod:`~lokal.agent.daemon` (the loop: reconcile, dirty paths, rescans, a
  model change, a full disk, a deleted index), :mod:`~lokal.agent.watcher` (watchdog observers,
  inotify or polling per root), :mod:`~lokal.agent.scanner` (walking a root, patterns, which
  files are admitted), :mod:`~lokal.agent.ingest` (the pipeline: compare, hash, parse, chunk,
  embed, write; ``lokal check``'s file check), :mod:`~lokal.agent.writer` (the writer lock, and
  opening an index for writing: create, or rebuild beside and swap on another model),
  :mod:`~lokal.agent.status` (the status file), :mod:`~lokal.agent.config` (agent.toml),
  :mod:`~lokal.agent.access` (the directory/group rule), :mod:`~lokal.agent.parsers`,
  :mod:`~lokal.agent.filenames` (non-UTF-8 names as URIs).
- :mod:`lokal.agent.server`: ``lokal serve`` (the app, one module per API dialect, the door,
  the model worker).
"""
