"""The machine at hand: what a speed figure or a speed decision depends on.

The CPU's name, the cores this process may use, the instruction-set flags that change
which settings are fast (AVX2, AVX-512, native bfloat16 through AVX512_BF16 or AMX) and,
only when asked (it imports TensorFlow), whether a GPU is visible.  :func:`describe`
gives the short label benchmarks print beside every figure; :func:`machine_key` the
hash that keys :mod:`flexunet.training.autotune`'s cache; :func:`precision_candidates` the
precisions worth trying here (training's "auto", ``plan``'s probe and ``bench`` all ask it).
No TensorFlow import at module level.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

# the /proc/cpuinfo flags that decide speed settings, in the order the label names them
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    flags: frozenset[str]
    gpus: tuple[str, ...] = ()

    @property
    def native_bf16(self) -> bool:
        """bfloat16 arithmetic in hardware (AVX512_BF16 or AMX); without it bf16 is emulated and slow."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def label(self) -> str:
        """e.g. ``Intel(R) Xeon(R) Processor, 2 cores, AVX-512, AVX512_BF16, AMX``."""
        parts = [self.cpu, f"{self.cores} core{'s' if self.cores != 1 else ''}"]
        if "avx512f" in self.flags:
            parts.append("AVX-512")
        elif "avx2" in self.flags:
            parts.append("AVX2")
        if "avx512_bf16" in self.flags:
            parts.append("AVX512_BF16")
        if self.flags & {"amx_bf16", "amx_tile"}:
            parts.append("AMX")
        parts += [f"GPU {name}" for name in self.gpus]
        return ", ".join(parts)


def precision_candidates(machine: Machine) -> tuple[str, ...]:
    """float32 first; bfloat16 on CPUs with native bf16 (never emulated); float16 where a GPU is visible.

    The last one is the fastest candidate: what a faster machine trains in when it is also as accurate."""
    if machine.gpus:
        return ("float32", "float16")
    return ("float32", "bfloat16") if machine.native_bf16 else ("float32",)


def precision_reason(machine: Machine) -> str:
    """Why :func:`precision_candidates` gives what it gives, in words (for log lines and run records)."""
    if machine.gpus:
        return "a GPU is visible, so float16 is worth trying"
    if machine.native_bf16:
        return "this CPU has native bfloat16 (AVX512_BF16 or AMX), so bfloat16 is worth trying"
    return "no native bfloat16 on this CPU (AVX512_BF16 or AMX) and no GPU, so float32 only: an emulated bf16 is slower"


def _cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """CPU model name and the :data:`FLAGS` it has, from /proc/cpuinfo's text (first processor)."""
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = " ".join(value.split())
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name, frozenset(flags & set(FLAGS))


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _busy_ticks(stat_text: str, cpus: set[int] | None) -> int:
    """Clock ticks the CPUs in ``cpus`` (all where None) spent on any work, from /proc/stat's text."""
    total = 0
    for line in stat_text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and int(name[3:]) not in cpus):
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        total += user + nice + system + irq + softirq + steal
    return total


def _own_ticks(self_stat_text: str) -> int:
    """Clock ticks this process (all its threads) has run, from /proc/self/stat's text."""
    fields = self_stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])            # utime, stime: fields 14 and 15 of the whole line


class OtherLoad:
    """How many of this process's cores other programs kept busy while the block ran.

    ``with OtherLoad() as load: ...`` then ``load.cores`` (e.g. 1.3 of 2), or None where the
    system does not say (no /proc/stat) or the block was too short to tell (under :attr:`shortest`).  A timing taken beside another program's work is slower
    than the machine's own speed: whoever chooses by a timing should know.
    """

    shortest = 0.5                              # seconds: a shorter block says None

    def __init__(self, stat: Path = Path("/proc/stat"), self_stat: Path = Path("/proc/self/stat")) -> None:
        self.stat, self.self_stat = stat, self_stat
        self.cores: float | None = None
        self._start: tuple[float, int, int] | None = None
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self._cpus = set(cpus) if cpus is not None else None

    def _sample(self) -> tuple[float, int, int] | None:
        try:
            return (time.monotonic(), _busy_ticks(self.stat.read_text(), self._cpus),
                    _own_ticks(self.self_stat.read_text()))
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> "OtherLoad":
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None or end[0] - self._start[0] < self.shortest:
            return                              # a clock tick is 10 ms: a shorter block's figure is noise
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy, own = end[1] - self._start[1], end[2] - self._start[2]
        self.cores = max(0.0, (busy - own) / hz / (end[0] - self._start[0]))


def gpu_names() -> tuple[str, ...]:
    """Names of the GPUs TensorFlow sees (imports TensorFlow)."""
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        names.append(details.get("device_name") or device.name)
    return tuple(names)


def detect(gpu: bool = False, cpuinfo: Path = CPUINFO) -> Machine:
    """This machine; ``gpu``: also ask TensorFlow for visible GPUs."""
    try:
        name, flags = _cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: no flags known, so nothing flag-dependent is chosen
        name, flags = "", frozenset()
    return Machine(cpu=name or platform.processor() or platform.machine() or "unknown CPU", cores=cpu_cores(),
                   flags=flags, gpus=gpu_names() if gpu else ())


def machine_key(machine: Machine, tf_version: str | None = None) -> str:
    """16 hex digits naming this CPU (name, flags, cores), its GPUs and the TensorFlow version."""
    if tf_version is None:
        import tensorflow as tf

        tf_version = tf.__version__
    text = "|".join([machine.cpu, ",".join(sorted(machine.flags)), str(machine.cores), ",".join(machine.gpus),
                     tf_version])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(gpu: bool = False) -> str:
    """The label of this machine (benchmarks print it beside every figure)."""
    return detect(gpu).label
