"""The seccomp filter of runc/crun build containers.

docker applies its default seccomp profile to every RUN step; without one, a
RUN could create a user namespace (and hold every capability inside it), use
the kernel keyring, which is not namespaced, or reach io_uring and userfaultfd,
the kernel's usual exploit surfaces. This profile refuses, with EPERM as docker
does, the system calls docker's default profile refuses to a container with
docker's default capabilities. It is written as a deny list (allow by default)
so that a new system call a build tool needs is not refused by an old pybuild;
the capability set (see ``spec.DEFAULT_CAPABILITIES``) already refuses what
needs a dropped capability, so this list only adds defence in depth there.

``clone`` is refused only with a namespace flag, and ``clone3`` answers
ENOSYS, as docker's profile does, so that libc falls back to ``clone``, whose
flags a filter can see.
"""

from __future__ import annotations

import errno
import os
from typing import Any

# Refused outright: namespaces and mounts, the keyring, kernel modules and
# kexec, io_uring, userfaultfd, perf and bpf, handle-based opens (the "shocker"
# escape), clocks, swap, reboot, accounting, raw I/O ports, NUMA policy, and
# obsolete calls.
DENIED = (
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr",
    "add_key", "keyctl", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "userfaultfd", "perf_event_open", "bpf", "fanotify_init", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at",
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog",
    "iopl", "ioperm", "kcmp", "process_vm_readv", "process_vm_writev",
    "mbind", "set_mempolicy", "get_mempolicy", "move_pages",
    "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "nfsservctl",
)

# clone(2) flags that make a namespace (CLONE_NEWNS ... CLONE_NEWCGROUP).
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "armv7l": ["SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}


def profile(machine: str | None = None) -> dict[str, Any]:
    """The ``linux.seccomp`` object of an OCI runtime config for this host."""
    machine = machine or os.uname().machine
    # clone's flags are its first argument everywhere but s390, where the stack comes first
    flags_arg = 1 if machine.startswith("s390") else 0
    syscalls: list[dict[str, Any]] = [
        {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    for flag in NAMESPACE_FLAGS.values():
        syscalls.append({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM,
            "args": [{"index": flags_arg, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        })
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ARCHITECTURES.get(machine, []),
        "syscalls": syscalls,
    }
