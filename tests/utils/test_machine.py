"""The machine description: CPU name, cores, the flags that matter, the label and the cache key."""

from __future__ import annotations

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
