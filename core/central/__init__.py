"""The fleet's central store: every box's index in one PostgreSQL + pgvector database.

- :mod:`lokal.central.connect`: the one place that opens PostgreSQL (password from a file or
  libpq's environment, pgvector registered);
- :mod:`lokal.central.schema`: the central schema, its numbered migrations, sites and rights;
- :mod:`lokal.central.sync`: ``lokal sync``, pushing an index's change feed to the centre;
- :mod:`lokal.central.bundle`: the same changes in one file, for sites with no network.

psycopg and pgvector are imported on first use (``pip install 'lokal[central]'``).
"""
