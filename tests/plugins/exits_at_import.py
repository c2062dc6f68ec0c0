"""A test plugin file that raises SystemExit(3) at import (exit 3 is realfill's out-of-disk code)."""

raise SystemExit(3)
