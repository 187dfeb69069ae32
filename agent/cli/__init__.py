"""The ``lokal`` command: thin commands over the library.

One module per command family (``models``, ``index`` for index/search/check/snapshot,
``agent``, ``serve``, ``evaluate`` for eval/bench, ``embed``), the options they share in
``options``, and what they print in ``output``. Only this package configures logging and
turns lokal's errors into messages and exit codes. ``lokal --help`` imports neither torch
nor llama_cpp.
"""

from __future__ import annotations

import logging

import click

from lokal import __version__
from lokal.agent.cli.agent import agent
from lokal.agent.cli.embed import embed_cmd
from lokal.agent.cli.evaluate import bench_cmd, eval_cmd
from lokal.agent.cli.index import check_cmd, index_cmd, search_cmd, snapshot_cmd
from lokal.agent.cli.models import models
from lokal.agent.cli.output import configure_logging
from lokal.agent.cli.serve import serve_cmd
from lokal.agent.cli.sync import central, sync_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lokal")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
def cli(verbose: int) -> None:
    """lokal: local embeddings and reranking for retrieval. No text leaves the machine.

    \b
    Examples:
      lokal models list                      # what is on disk, and what to shortlist
      lokal models pack all-MiniLM-L6-v2     # make the default q8_0 GGUF from bundled weights
      lokal models pull bge-small-en-v1.5    # or download a published GGUF (no torch)
      lokal models info all-MiniLM-L6-v2     # profile, dimension, context, sha256
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    configure_logging(level, "%(levelname)s %(name)s: %(message)s")


for _command in (
    models,
    index_cmd,
    search_cmd,
    check_cmd,
    snapshot_cmd,
    agent,
    serve_cmd,
    eval_cmd,
    bench_cmd,
    embed_cmd,
    sync_cmd,
    central,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="lokal")


if __name__ == "__main__":
    main()
