"""Fault injection for tests/test_faults.py, loaded by Python at start-up in a ``realfill`` subprocess
whose ``PYTHONPATH`` starts with this folder. Nothing in realfill knows about it. ``REALFILL_FAULT`` says
what to do, ``;``-separated:

- ``signal:train:N:SIG``  send SIG (KILL, INT, TERM) to this process when training step N ends
- ``signal:sample:SIG``   ... when the first batch of samples is drawn (before any is written)
- ``signal:rank:SIG``     ... when the contact sheet is about to be drawn (ranking.json, result.png written)
- ``signal:ranked:K:SIG`` ... when the K-th ranking is done (an ablation's K-th run, before its evaluation)
- ``wait:train:N:FILE``   at the end of training step N, wait until FILE exists (keeps a writer busy)
- ``enospc:GLOB:SKIP``    ``os.fsync`` of a file whose path matches GLOB fails with ENOSPC, after SKIP
  matching calls went through: a full disk, as the file system reports it when the data is forced out
"""

from __future__ import annotations

import errno
import fnmatch
import os
import signal
import time

FAULTS = [part.split(":") for part in os.environ.get("REALFILL_FAULT", "").split(";") if part]


def _signal(name: str) -> None:
    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


class FaultPlugin:
    """Registered in every plugin manager of the process: the hooks are realfill's own."""

    ranked = 0

    def realfill_train_step_end(self, step):
        for fault in FAULTS:
            if fault[:2] == ["signal", "train"] and int(fault[2]) == step:
                _signal(fault[3])
            if fault[:2] == ["wait", "train"] and int(fault[2]) == step:
                while not os.path.exists(fault[3]):
                    time.sleep(0.05)

    def realfill_run_start(self, run_dir):
        for fault in FAULTS:
            if fault[:2] == ["signal", "sample"]:
                import realfill.sampling as sampling

                real = sampling.sample_completions

                def sample_completions(*args, _real=real, _sig=fault[2], **kwargs):
                    on_batch = kwargs.get("on_batch")

                    def first_batch(done, total):
                        if on_batch is not None:
                            on_batch(done, total)
                        _signal(_sig)

                    kwargs["on_batch"] = first_batch
                    return _real(*args, **kwargs)

                sampling.sample_completions = sample_completions
            if fault[:2] == ["signal", "rank"]:
                import realfill.contact_sheet as sheet

                def contact_sheets(*args, _sig=fault[2], **kwargs):
                    _signal(_sig)

                sheet.contact_sheets = contact_sheets  # what write_contact_sheets draws with

    def realfill_ranking_done(self, ranking):
        FaultPlugin.ranked += 1
        for fault in FAULTS:
            if fault[:2] == ["signal", "ranked"] and int(fault[2]) == FaultPlugin.ranked:
                _signal(fault[3])


def _install_plugin() -> None:
    import realfill.plugins as plugins

    init = plugins.RealfillPlugins.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.register(FaultPlugin(), name="test-faults")

    plugins.RealfillPlugins.__init__ = __init__


def _install_enospc(pattern: str, skip: int) -> None:
    real = os.fsync
    seen = [0]

    def fsync(fd):
        try:
            path = os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}")
        except OSError:
            path = ""
        if fnmatch.fnmatch(path, pattern):
            seen[0] += 1
            if seen[0] > skip:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(fd)

    os.fsync = fsync


if FAULTS:
    if any(f[0] in ("signal", "wait") for f in FAULTS):
        _install_plugin()
    for f in FAULTS:
        if f[0] == "enospc":
            _install_enospc(f[1], int(f[2]) if len(f) > 2 else 0)
