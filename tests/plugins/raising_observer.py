"""A test plugin file: an observer that raises on every notification; the run must go on."""

from realfill import hookimpl


@hookimpl
def realfill_train_step_end(step):
    raise RuntimeError(f"observer failed at step {step}")
