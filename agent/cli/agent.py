"""``lokal agent run``, ``status`` and ``check``: the edge agent."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lokal.agent.cli.index import check_report
from lokal.agent.cli.options import config_option, json_option
from lokal.agent.cli.output import ProgressBars, configure_logging, emit_json, friendly_errors

if TYPE_CHECKING:
    from lokal.agent.config import AgentConfig


def _load_config(path: Path) -> AgentConfig:
    from lokal.agent import config

    with friendly_errors():
        return config.load(path)


@click.group()
def agent() -> None:
    """The edge agent: watch directories and keep an index in step with them.

    \b
    Examples:
      lokal agent run --config /etc/lokal/agent.toml
      lokal agent status --json
      lokal agent check
    """


@agent.command("run")
@config_option
def agent_run(config_path: Path) -> None:
    """Run the agent in the foreground until SIGTERM or Ctrl-C (systemd runs it so).

    It first brings the index in step with the files (changes made while it was stopped
    included), then watches the roots, rescanning them now and then. SIGTERM writes the
    current batch and exits 0.

    \b
    Example:
      lokal agent run --config /etc/lokal/agent.toml
    """
    with friendly_errors():  # without lokal[agent]: which extra, not an ImportError
        from lokal.agent.daemon import Agent

    cfg = _load_config(config_path)
    level = logging.getLogger().level
    # info at least (-v/-vv lower it); under systemd the journal stamps the time itself and
    # reads each line's priority prefix (output.configure_logging)
    level = logging.INFO if level in (logging.NOTSET,) or level > logging.INFO else level
    configure_logging(level, "%(asctime)s %(levelname)s %(message)s", replace=True)
    daemon_log = logging.getLogger("lokal.agent")  # the daemon's logger
    progress = ProgressBars("files", "chunks", lines=daemon_log.info)
    with friendly_errors():
        code = Agent(cfg, progress=progress).run()
    sys.exit(code)


@agent.command("status")
@config_option
@json_option
def agent_status(config_path: Path, as_json: bool) -> None:
    """Files indexed, pending and failed (with reasons), the model, index size, last scan,
    and whether the agent is running. Exits 1 when the agent is not running.

    \b
    Example:
      lokal agent status --config /etc/lokal/agent.toml --json
    """
    from lokal.agent.status import read_status

    cfg = _load_config(config_path)
    with friendly_errors():
        status = read_status(cfg)
    if as_json:
        emit_json(status)
    else:
        running = f"running (pid {status['pid']})" if status["running"] else "not running"
        click.echo(f"agent: {running}; state {status['state']}")
        if status["problem"]:
            click.echo(f"problem: {status['problem']}")
        click.echo(f"index: {status['index']} ({status['index_bytes'] / 2**20:.1f} MB)")
        click.echo(f"model: {status['model']}")
        counts = status["documents"]
        click.echo(
            f"files: {counts.get('indexed', 0)} indexed, {status['pending']} pending, "
            f"{counts.get('skipped', 0)} skipped, {counts.get('failed', 0)} failed; "
            f"{status['chunks']} chunks"
        )
        if status.get("search_copy"):
            from lokal.index.vectors import describe_copy

            click.echo(f"search copy: {describe_copy(status['search_copy'])}")
        for r in status["roots"]:
            state = (
                f"watched ({r['watch']})" if r.get("available") else f"unavailable: {r.get('why')}"
            )
            click.echo(f"root: {r['path']}: {state}")
        if status["last_scan"]:
            click.echo(f"last scan: {status['last_scan']}")
        for p in status["problems"]:
            click.echo(f"  {p['status']}: {p['path']}: {p['reason']}")
        if "sync" in status:
            from lokal.agent.cli.sync import sync_status_line

            click.echo(sync_status_line(status["sync"]))
    if not status["running"]:
        sys.exit(1)


@agent.command("check")
@config_option
@json_option
def agent_check(config_path: Path, as_json: bool) -> None:
    """``lokal check`` on the configured index, and its directory's permissions.

    \b
    Example:
      lokal agent check --config /etc/lokal/agent.toml
    """
    from lokal.agent import access

    cfg = _load_config(config_path)
    for problem in access.directory_problems(cfg.index.parent, cfg.group):
        click.echo(f"warning: {problem}", err=True)
    check_report(cfg.index, as_json)
