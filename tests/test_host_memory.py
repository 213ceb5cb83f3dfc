"""The allocator check behind the launcher's and the benchmark's tcmalloc hint."""

import os
import subprocess
import sys

import pytest

from mage_jax import host_memory

LIBC = "7f0000000000-7f0000001000 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
TCMALLOC = "7f0000002000-7f0000003000 r-xp 00000000 08:01 124 /usr/lib/libtcmalloc_minimal.so.4.5.10\n"
JEMALLOC = "7f0000004000-7f0000005000 r-xp 00000000 08:01 125 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
ANON = "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n"


def test_allocator_from_maps():
    assert host_memory.allocator_from_maps([ANON, LIBC]) == "glibc"
    assert host_memory.allocator_from_maps([TCMALLOC, ANON, LIBC]) == "tcmalloc"
    assert host_memory.allocator_from_maps([LIBC, JEMALLOC]) == "jemalloc"
    assert host_memory.allocator_from_maps([ANON]) == "unknown"


def _allocator_in_subprocess(preload: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    code = ("from mage_jax import host_memory as h; "
            "print(h.active_allocator()); print(h.slow_allocator_hint('cpu'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_glibc_process_gets_the_preload_hint():
    allocator, hint = _allocator_in_subprocess(None)
    if allocator != "glibc":
        pytest.skip(f"this Python's C library is {allocator}, not glibc")
    assert "LD_PRELOAD=" in hint and "glibc malloc" in hint
    assert host_memory.slow_allocator_hint("gpu") is None  # device memory: no hint off CPU


@pytest.mark.skipif(host_memory.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_preloaded_tcmalloc_is_detected_and_silences_the_hint():
    assert _allocator_in_subprocess(host_memory.find_tcmalloc()) == ["tcmalloc", "None"]
