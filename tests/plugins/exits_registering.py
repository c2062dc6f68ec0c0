"""A test plugin file whose registration hook raises SystemExit."""

from realfill import hookimpl


@hookimpl
def realfill_register_rankers(registry):
    raise SystemExit("bye from a registration hook")
