"""A test plugin file that fails at import, as a plugin with a missing dependency would."""

import realfill_no_such_dependency  # noqa: F401
