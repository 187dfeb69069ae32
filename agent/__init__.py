"""lokal's programs: the ``lokal`` command (and, later, the watcher daemon and HTTP server)."""
