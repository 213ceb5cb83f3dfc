"""Which malloc this process runs on: XLA:CPU is much faster on tcmalloc or jemalloc than on glibc's.

XLA:CPU allocates each call's scratch buffer (260 MB for a `cpu`-size stage-2 step) from its worker
threads and frees it when the call returns. glibc serves a request that large from a thread arena
with a fresh mmap and unmaps it on free, so every training step faults in all the memory it touches
again: 11 million minor page faults in one `cpu`-size throughput run, and training steps 1.1-1.9x as
long as on tcmalloc (benchmarks/THROUGHPUT.md). tcmalloc and jemalloc keep freed memory mapped.
glibc's own knobs can't fix it without slowing small calls: one arena (the only way to keep a 260 MB
chunk off mmap) makes batch-1 `act` 20-30% slower through lock contention.

An allocator has to be chosen before the process starts: `LD_PRELOAD=<path to libtcmalloc>`.
"""

from __future__ import annotations

import glob

PRELOAD_HINT = ("apt install libtcmalloc-minimal4 and run with "
                "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def allocator_from_maps(lines) -> str:
    """'tcmalloc', 'jemalloc', 'glibc' or 'unknown' from the lines of a /proc/<pid>/maps file."""
    libraries = {line.rsplit("/", 1)[-1].strip() for line in lines if ".so" in line}
    for name in ("tcmalloc", "jemalloc"):
        if any(name in lib for lib in libraries):
            return name
    return "glibc" if any(lib.startswith(("libc.so", "libc-")) for lib in libraries) else "unknown"


def active_allocator() -> str:
    """The malloc this process runs on ('unknown' without /proc, e.g. on macOS)."""
    try:
        with open("/proc/self/maps") as maps:
            return allocator_from_maps(maps)
    except OSError:
        return "unknown"


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc shared library, for the hint."""
    found = [path for pattern in ("/usr/lib/*/libtcmalloc*.so.4", "/usr/lib64/libtcmalloc*.so.4")
             for path in sorted(glob.glob(pattern)) if "debug" not in path]
    return found[0] if found else None


def slow_allocator_hint(backend: str) -> str | None:
    """A one-line hint when JAX's `backend` is XLA:CPU running on glibc malloc, else None."""
    if backend != "cpu" or active_allocator() != "glibc":
        return None
    path = find_tcmalloc()
    how = f"run with LD_PRELOAD={path}" if path else PRELOAD_HINT
    return ("this process uses glibc malloc, which makes XLA:CPU re-fault its scratch memory on every "
            f"call (training steps up to 1.9x slower); {how}")
