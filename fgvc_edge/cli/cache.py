"""`fgvc-edge cache`: what the export and calibration caches hold (entries, size, ages), and pruning them."""
import json
import time
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fgvc_edge.caches import DAY, Cache, CacheEntry, list_caches, prune_caches
from fgvc_edge.cli._common import command, console

app = typer.Typer(help="List the export and calibration caches (sizes, counts, ages) or prune them.",
                  no_args_is_help=False, invoke_without_command=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return "{:.0f} {}".format(value, unit) if unit == "B" else "{:.1f} {}".format(value, unit)
        value /= 1024
    return "{:.1f} GB".format(value)


def _age(stamp: Optional[float], now: float) -> str:
    if stamp is None:
        return "-"
    seconds = max(0.0, now - stamp)
    if seconds >= DAY:
        return "{:.1f} d".format(seconds / DAY)
    if seconds >= 3600:
        return "{:.1f} h".format(seconds / 3600)
    return "{:.0f} min".format(seconds / 60)


def _cache_record(cache: Cache, now: float) -> dict:
    return {"cache": cache.name, "folder": cache.folder, "entries": len(cache.entries), "bytes": cache.size,
            "oldest_days": None if cache.oldest is None else (now - cache.oldest) / DAY,
            "newest_days": None if cache.newest is None else (now - cache.newest) / DAY}


@app.callback()
@command
def cache_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """List the caches under the working directory: entries, size, and the ages of the oldest and newest use."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    now = time.time()
    caches = list_caches()
    if json_out:
        console.print_json(json.dumps([_cache_record(cache, now) for cache in caches]))
        return
    table = Table(title="fgvc-edge caches")
    for header in ("cache", "folder", "entries", "size", "oldest", "newest"):
        table.add_column(header, justify="left" if header in ("cache", "folder") else "right")
    for cache in caches:
        table.add_row(cache.name, cache.folder, str(len(cache.entries)), _size(cache.size), _age(cache.oldest, now),
                      _age(cache.newest, now))
    console.print(table)
    console.print("ages since last use; `fgvc-edge cache prune --older-than DAYS` or `--all` removes entries "
                  "(each is rebuilt when needed)", highlight=False)


@app.command("prune")
@command
def prune_cmd(
    older_than: Annotated[Optional[float], typer.Option("--older-than", help="Remove entries unused for more than DAYS.", metavar="DAYS")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove cache entries unused for more than --older-than DAYS, or --all of them."""
    removed: List[CacheEntry] = prune_caches(older_than_days=older_than, everything=everything, dry_run=dry_run)
    total = sum(entry.size for entry in removed)
    if json_out:
        console.print_json(json.dumps({"dry_run": dry_run, "entries": len(removed), "bytes": total,
                                       "files": [path for entry in removed for path in entry.files]}))
        return
    console.print("{} {} entries ({})".format("would remove" if dry_run else "removed", len(removed), _size(total)),
                  highlight=False)
