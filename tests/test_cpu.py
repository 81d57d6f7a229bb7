"""xtune_keras.cpu: the CPU's model and flags from /proc/cpuinfo, without TensorFlow."""
import subprocess
import sys

from xtune_keras.cpu import cpu_description, cpu_flags, cpu_name, machine_description

CPUINFO = "processor\t: 0\nmodel name\t: Example Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16\n\nprocessor\t: 1\n"


def test_model_flags_and_description_of_a_cpuinfo_text():
    assert cpu_name(CPUINFO) == "Example Xeon"
    assert cpu_flags(CPUINFO) == {"fpu", "avx2", "avx512f", "amx_bf16"}
    assert cpu_description(CPUINFO) == "Example Xeon (avx2, avx512f, amx_bf16)"
    assert cpu_flags("") == set() and cpu_description("model name : Old\n") == "Old (no AVX2)"
    assert machine_description(CPUINFO, cores=2) == "Example Xeon (avx2, avx512f, amx_bf16), 2 cores"


def test_the_family_and_model_numbers_tell_apart_cpus_of_one_name():
    epyc = "processor\t: 0\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n"
    assert cpu_name(epyc) == "AMD EPYC"
    assert cpu_description(epyc) == "AMD EPYC, family 23 model 1 (avx2)"


def test_reading_the_cpu_loads_no_tensorflow():
    code = "import sys, xtune_keras.cpu as c; c.cpu_description(); assert 'tensorflow' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
