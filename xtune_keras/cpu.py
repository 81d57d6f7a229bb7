"""What this CPU is, from /proc/cpuinfo, without TensorFlow: ``train.precision: auto`` reads its
flags, and every benchmark prints its model and the flags that decide matmul speed (this
workplace's CPUs vary between sessions: AMX or not)."""
import os
import platform

CPUINFO = "/proc/cpuinfo"
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo(cpuinfo_text=None):
    if cpuinfo_text is not None:
        return cpuinfo_text
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def _first(field, cpuinfo_text=None):
    for line in _cpuinfo(cpuinfo_text).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return None


def cpu_flags(cpuinfo_text=None):
    """The flags of the first CPU in ``/proc/cpuinfo`` (or in ``cpuinfo_text``); empty if unknown."""
    return set((_first("flags", cpuinfo_text) or "").split())


def cpu_name(cpuinfo_text=None):
    return _first("model name", cpuinfo_text) or platform.processor() or platform.machine() or "unknown"


def cpu_generation(cpuinfo_text=None):
    """``"family F model M"`` from /proc/cpuinfo, or None: a virtual machine's model name may be as
    bare as "AMD EPYC", and two sessions' "AMD EPYC" machines ran the same int8 benchmark at a third
    of the speed apart (bench/RESULTS.md §6); only the numbers tell which generation ran."""
    family, model = _first("cpu family", cpuinfo_text), _first("model", cpuinfo_text)
    return "family %s model %s" % (family, model) if family and model else None


def cpu_description(cpuinfo_text=None):
    """``"<model>[, family F model M] (<speed flags present>)"``, e.g. ``AMD EPYC, family 23 model 1 (avx2)``."""
    flags = cpu_flags(cpuinfo_text)
    name = ", ".join(part for part in (cpu_name(cpuinfo_text), cpu_generation(cpuinfo_text)) if part)
    return "%s (%s)" % (name, ", ".join(f for f in SPEED_FLAGS if f in flags) or "no AVX2")


def machine_description(cpuinfo_text=None, cores=None):
    """``"<cpu_description>, <N> cores"``: what a benchmark figure or a reproduction's time names."""
    return "%s, %d cores" % (cpu_description(cpuinfo_text), cores or os.cpu_count())
