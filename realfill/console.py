"""The one shared Rich console: everything a person watches goes to stderr; stdout stays for data (--json)."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)
