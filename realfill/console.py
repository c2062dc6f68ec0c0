"""The one shared Rich console: everything a person watches goes to stderr; stdout stays for data (--json)."""

from rich.console import Console

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)


def table_markdown(table) -> str:
    """A Rich table as a Markdown table (title and caption as lines around it), its cells' markup dropped."""
    from rich.text import Text

    def plain(cell) -> str:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return " ".join(text.split()).replace("|", "\\|")

    columns = table.columns
    lines = [plain(table.title)] if table.title else []
    lines += ["| " + " | ".join(plain(c.header) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(plain(cell) for cell in row) + " |" for row in zip(*(c._cells for c in columns))]
    if table.caption:
        lines.append(plain(table.caption) if "\n" not in str(table.caption) else str(table.caption))
    return "\n".join(lines)


def print_table(console: Console, table) -> None:
    """Print a table a person reads with nothing cut (Rich would squeeze it into the width, cutting row
    names to "multi-homo…"): as it is where it fits; into a file or pipe (a log) at its own width, however
    wide; in a terminal too narrow for it, as a Markdown table whose long lines the terminal wraps."""
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    if needed <= console.width:
        console.print(table)
    elif not console.is_terminal:
        saved = console._width
        console.width = needed
        try:
            console.print(table)
        finally:
            console._width = saved
    else:
        console.print(table_markdown(table), soft_wrap=True, markup=False, highlight=False)
