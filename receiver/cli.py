"""`tc-receiver` (or `python -m receiver`): the product's one command line.

    tc-receiver                      what `make run` runs (the same as `run`)
    tc-receiver run                  the Procfile processes on one host, or the local trial
    tc-receiver worker               one worker process (`python -m receiver.worker`)
    tc-receiver sweeper [--once]     the missed-callback sweeper (`python -m receiver.sweeper`)
    tc-receiver inspect TASK_ID      everything known about a task, oldest first (--json)
    tc-receiver dead-letters list    the dead letters, newest first
    tc-receiver replay ...           dead letters or rejected records, chosen by filters, reconciled afresh

Each reads the same environment as the product (SPEC 8); a bad value stops
it with the message that names the variable.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

import click

from receiver.config import ConfigError, load_settings
from receiver.inbox import DeadLetterStore, Inbox, RecordLookup, StoredRecord, open_inbox
from receiver.inspection import NOT_KEPT_ON_SQS, as_json, as_table, iso, timeline

REPLAY_CHUNK = 100  # records made pending per transaction
SCREENFUL = 20  # a replay of more records than this shows a progress bar


def _inbox() -> Inbox:
    try:
        return open_inbox(load_settings())
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from error


def _dead_letter_store(inbox: Inbox) -> DeadLetterStore:
    if not isinstance(inbox, DeadLetterStore):
        raise click.ClickException(f"{type(inbox).__name__} keeps no dead letters")
    return inbox


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """The Tencent Cloud media callback receiver. Without a command: `run`."""
    if ctx.invoked_subcommand is None:
        ctx.exit(_launch())


def _launch() -> int:
    from receiver.launcher import main as launch

    return launch()


@cli.command()
def run() -> None:
    """The Procfile processes on one host (web, worker, sweeper with RUN_SWEEPER=true); the local trial
    without Tencent Cloud credentials. What `make run` runs."""
    sys.exit(_launch())


@cli.command()
def worker() -> None:
    """One worker process: claim, reconcile with Tencent Cloud, forward, settle."""
    from receiver.worker.process import main as run_worker

    run_worker()


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--once", is_flag=True, help="sweep once, print the report as JSON, and exit")
def sweeper(once: bool) -> None:
    """The missed-callback sweeper: finished tasks that never called back are put in the inbox."""
    from receiver.sweeper.process import main as run_sweeper

    sys.exit(run_sweeper(["--once"] if once else []))


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
def inspect(task_id: str, as_json_output: bool) -> None:
    """Everything known about TASK_ID, oldest first: callbacks and door answers, Describe answers,
    rejections, events forwarded, dead letters."""
    inbox = _inbox()
    if isinstance(inbox, RecordLookup):
        from receiver.stores import timeline_beside

        items, note = timeline(inbox.records_of_task(task_id), timeline_beside(inbox).of_task(task_id)), None
    else:
        items = [{"at": record.received_at, "record_id": record.id, "what": "dead", "error": error}
                 for record, _, error in _dead_letter_store(inbox).dead_letters(1000) if record.task_id == task_id]
        note = NOT_KEPT_ON_SQS
    click.echo(as_json(task_id, items, note) if as_json_output else as_table(task_id, items, note))


@cli.group("dead-letters")
def dead_letters() -> None:
    """The dead-letter store: records buried after MAX_ATTEMPTS failures."""


@dead_letters.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json_output", is_flag=True, help="machine-readable output")
def list_dead_letters(limit: int, as_json_output: bool) -> None:
    """The dead letters, newest first: record, task, attempts, last error."""
    letters = _dead_letter_store(_inbox()).dead_letters(limit)
    if as_json_output:
        click.echo(json.dumps([{"record_id": r.id, "source": r.source, "event_type": r.event_type,
                                "task_id": r.task_id, "received_at": iso(r.received_at), "attempts": attempts,
                                "last_error": error} for r, attempts, error in letters], indent=2))
        return
    for record, attempts, error in letters:
        click.echo(f"{record.id}  {record.source} {record.event_type} task={record.task_id} "
                   f"received={iso(record.received_at)} attempts={attempts}  last error: {error}")
    click.echo(f"{len(letters)} dead letter(s)", err=True)


def _moment(value: str | None) -> float | None:
    """An ISO 8601 time (UTC unless it says otherwise), or a duration ago: 90s, 15m, 6h, 2d."""
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise click.BadParameter(f"{value!r}: expected an ISO 8601 time or a duration such as 6h") from error
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@cli.command()
@click.argument("ids", nargs=-1)
@click.option("--state", type=click.Choice(["dead", "rejected", "any"]), default="any", show_default=True,
              help="dead letters, rejected records, or both")
@click.option("--reason", help="rejected records with this reason (e.g. unknown_task)")
@click.option("--source", type=click.Choice(["mps", "vod", "ams"]))
@click.option("--since", help="received at or after: ISO 8601, or a duration ago (6h, 2d)")
@click.option("--until", help="received before: ISO 8601, or a duration ago")
@click.option("--dry-run", is_flag=True, help="list what would be replayed, change nothing")
def replay(ids: tuple[str, ...], state: str, reason: str | None, source: str | None, since: str | None,
           until: str | None, dry_run: bool) -> None:
    """Reconcile dead letters or rejected records afresh (all filters must match; IDS narrow to those records).

    They go back to the inbox as pending, behind new callbacks, at the same
    rate limits; their events keep their event_id, so one already forwarded is
    not forwarded again."""
    inbox = _inbox()
    if not isinstance(inbox, RecordLookup):
        if reason or source or since or until or state == "rejected":
            raise click.ClickException("an SQS inbox keeps no rejected records and cannot filter dead letters: "
                                       "replay dead letters by id, or all of them")
        if dry_run:
            raise click.ClickException("an SQS inbox cannot list a dry run: `dead-letters list` shows them")
        count = _dead_letter_store(inbox).replay_dead(list(ids) or None, time.time())
        click.echo(f"replayed {count} dead letter(s)")
        return
    states = ("dead", "rejected") if state == "any" else (state,)
    if reason is not None:
        states = ("rejected",)
    chosen = inbox.settled_records(states, reason, source, _moment(since), _moment(until), list(ids) or None)
    for stored in chosen:
        click.echo(_replay_line(stored))
    if dry_run:
        click.echo(f"{len(chosen)} record(s) would be replayed (dry run: nothing changed)", err=True)
        return
    replayed = 0
    chunks = [chosen[i:i + REPLAY_CHUNK] for i in range(0, len(chosen), REPLAY_CHUNK)]
    with click.progressbar(chunks, label="replaying", file=sys.stderr,
                           hidden=len(chosen) <= SCREENFUL) as bar:
        for chunk in bar:
            replayed += inbox.replay([stored.record.id for stored in chunk], time.time())
    click.echo(f"replayed {replayed} record(s): the worker reconciles them again")


def _replay_line(stored: StoredRecord) -> str:
    record = stored.record
    why = stored.reason if stored.state == "rejected" else stored.last_error
    return (f"{record.id}  {stored.state} {record.source} {record.event_type} task={record.task_id} "
            f"received={iso(record.received_at)}  {why or ''}")


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point; exits with the command's status."""
    cli.main(args=argv, prog_name="tc-receiver")
