"""Fault injection for the Ray tests: a ``before_write`` hook handed to ``fuse_dir_ray`` that makes one
worker process die in the middle of writing an output, as a process killed mid-write would."""

import os

from tokfuse_rt.outputs import atomic_write


class DieWhileWriting:
    """Called before each output is written. The worker process whose ``at``-th write this is exits
    (``os._exit``) with its temporary file created and half written; with ``marker`` only the first
    process to create that file dies (once per job, whatever Ray restarts), writing its pid there."""

    def __init__(self, at: int, marker):
        self.at, self.marker, self.count = int(at), str(marker), 0

    def __call__(self, out_path) -> None:
        self.count += 1
        if self.count != self.at:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

        def die_half_written(f):
            f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
            f.flush()
            os._exit(70)

        atomic_write(out_path, die_half_written)


def injectable(hook):
    """``hook`` made loadable in Ray's worker processes, which cannot import the tests folder: its
    module is pickled by value."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return hook
