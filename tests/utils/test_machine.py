"""The machine description: CPU name, cores, the flags that matter, the label and the cache key."""

from __future__ import annotations

import pytest

from flexunet.utils.machine import Machine, _cpuinfo, detect, machine_key, precision_candidates, precision_reason

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8
"""
OLD = """processor\t: 0
model name\t: AMD   Old   CPU
flags\t\t: fpu sse2 avx avx2
"""


def test_cpuinfo_reads_name_and_only_the_flags_that_matter():
    name, flags = _cpuinfo(XEON)
    assert name == "Intel(R) Xeon(R) Processor"
    assert flags == {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}   # avx512bw, amx_int8 dropped
    name, flags = _cpuinfo(OLD)
    assert name == "AMD Old CPU" and flags == {"avx2"}


def test_label_and_native_bf16():
    xeon = Machine("Intel(R) Xeon(R) Processor", 2, _cpuinfo(XEON)[1])
    assert xeon.label == "Intel(R) Xeon(R) Processor, 2 cores, AVX-512, AVX512_BF16, AMX"
    assert xeon.native_bf16
    old = Machine("AMD Old CPU", 1, _cpuinfo(OLD)[1])
    assert old.label == "AMD Old CPU, 1 core, AVX2" and not old.native_bf16
    assert Machine("X", 4, frozenset({"amx_bf16"})).native_bf16


def test_machine_key_changes_with_cpu_flags_cores_and_tensorflow():
    base = Machine("Intel(R) Xeon(R) Processor", 2, _cpuinfo(XEON)[1])
    key = machine_key(base, "2.21.0")
    assert key == machine_key(Machine(base.cpu, 2, base.flags), "2.21.0") and len(key) == 16
    others = [machine_key(Machine("Other CPU", 2, base.flags), "2.21.0"),
              machine_key(Machine(base.cpu, 4, base.flags), "2.21.0"),
              machine_key(Machine(base.cpu, 2, frozenset({"avx2"})), "2.21.0"),
              machine_key(base, "2.22.0")]
    assert key not in others and len(set(others)) == 4


def test_detect_reads_a_cpuinfo_file_and_survives_a_missing_one(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(XEON)
    found = detect(cpuinfo=info)
    assert found.cpu == "Intel(R) Xeon(R) Processor" and found.native_bf16 and found.cores >= 1
    missing = detect(cpuinfo=tmp_path / "absent")
    assert missing.flags == frozenset() and not missing.native_bf16 and missing.cpu


def test_precision_candidates_follow_the_flags():
    xeon = Machine("Intel(R) Xeon(R) Processor", 2, _cpuinfo(XEON)[1])
    old = Machine("AMD Old CPU", 1, _cpuinfo(OLD)[1])
    assert precision_candidates(old) == ("float32",) and "no native bfloat16" in precision_reason(old)
    assert precision_candidates(xeon) == ("float32", "bfloat16") and "native bfloat16" in precision_reason(xeon)
    assert precision_candidates(Machine("AMD", 2, frozenset({"avx512f"}))) == ("float32",)   # AVX-512 alone: no
    gpu = Machine("AMD Old CPU", 1, old.flags, gpus=("GPU",))
    assert precision_candidates(gpu) == ("float32", "float16") and "GPU" in precision_reason(gpu)


def _stat(cpu0: tuple, cpu1: tuple) -> str:
    """/proc/stat's first lines: user nice system idle iowait irq softirq steal per CPU."""
    total = tuple(a + b for a, b in zip(cpu0, cpu1))
    return "".join(f"{name} {' '.join(map(str, v))} 0 0\n" for name, v in (("cpu", total), ("cpu0", cpu0),
                                                                           ("cpu1", cpu1))) + "intr 1 2\n"


def _self_stat(utime: int, stime: int) -> str:
    """/proc/self/stat: pid (comm) then fields 3.. (state ppid ... utime=14 stime=15)."""
    return "123 (python (x)) S " + " ".join(["0"] * 10) + f" {utime} {stime} 0 0 20 0\n"


def test_other_load_counts_the_cores_other_programs_kept_busy(tmp_path, monkeypatch):
    import flexunet.utils.machine as machine

    stat, self_stat = tmp_path / "stat", tmp_path / "self_stat"
    clock = iter([10.0, 12.0])                                        # the block runs 2 s
    monkeypatch.setattr(machine.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(machine.os, "sysconf", lambda name: 100)     # 100 ticks a second
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    stat.write_text(_stat((1000, 0, 100, 5000, 0, 0, 0, 0), (2000, 0, 0, 5000, 0, 0, 0, 0)))
    self_stat.write_text(_self_stat(50, 10))
    with machine.OtherLoad(stat, self_stat) as load:
        # 2 s on 2 cores = 400 ticks: the CPUs did 350 ticks of work (idle and iowait not counted),
        # this process 90 of them (utime + stime, its threads included): others 260 ticks = 1.3 cores
        stat.write_text(_stat((1150, 0, 120, 5050, 30, 0, 0, 0), (2170, 10, 0, 5000, 0, 0, 0, 0)))
        self_stat.write_text(_self_stat(130, 20))
    assert load.cores == pytest.approx(1.3)


def test_other_load_counts_only_this_process_cpus_and_says_none_without_proc(tmp_path, monkeypatch):
    import flexunet.utils.machine as machine

    stat, self_stat = tmp_path / "stat", tmp_path / "self_stat"
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(machine.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(machine.os, "sysconf", lambda name: 100)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    stat.write_text(_stat((0,) * 8, (0,) * 8))
    self_stat.write_text(_self_stat(0, 0))
    with machine.OtherLoad(stat, self_stat) as load:
        stat.write_text(_stat((40, 0, 0, 60, 0, 0, 0, 0), (100, 0, 0, 0, 0, 0, 0, 0)))   # cpu1 is not ours
    assert load.cores == pytest.approx(0.4)
    with machine.OtherLoad(tmp_path / "missing", self_stat) as load:
        pass
    assert load.cores is None
    clock = iter([0.0, 0.01])                                            # 10 ms: one clock tick, no figure
    with machine.OtherLoad(stat, self_stat) as load:
        stat.write_text(_stat((41, 0, 0, 60, 0, 0, 0, 0), (100, 0, 0, 0, 0, 0, 0, 0)))
    assert load.cores is None
