"""A test plugin file whose hook name is misspelled (rankers -> ranker): check_pending must catch it."""

from realfill import hookimpl


@hookimpl
def realfill_register_ranker(registry):
    raise AssertionError("never called")
