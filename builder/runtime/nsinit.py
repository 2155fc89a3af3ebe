"""The in-namespace half of the chroot isolation; run as a script, standard library only.

``python -I -S nsinit.py PLAN ERRFD PARENT_PID`` (PLAN: a :mod:`marshal` file):
unshare mount, pid, ipc, uts (and net) namespaces, fork the container's pid 1,
mount /proc, /dev, /sys, the /etc files and the extra mounts onto the already
mounted overlay rootfs, pivot_root into it, drop to docker's capability
bounding set, apply the seccomp profile (with libseccomp, where installed),
become the user and exec. With a terminal, pid 1 opens a
pseudo-terminal in the container's devpts (as runc does) and this process
relays it to its stdio. The signals of :data:`FORWARDED` that this process gets go to
pid 1 (``pybuild run`` forwards its own, as docker run does). A setup failure is written to ERRFD (marshalled
``{"error": ..., "start": bool}``) and never reaches the process output.
Both processes die with their parent (PR_SET_PDEATHSIG), so a killed pybuild
leaves no process behind, and the namespaces, mounts included, vanish with
them. Imports are kept to fast ones (marshal, not json; _signal, not signal):
this process starts for every RUN step.
"""

import _signal as signal
import ctypes
import errno
import fcntl
import marshal
import os
import resource
import stat
import struct
import sys
import warnings  # noqa: F401  (os.execvpe imports it; after pivot_root the stdlib is gone)

FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}

CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))

libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """``start``: the step's own fault (its command, cwd or mounts), reported as runc's
    create errors are; ``reason``: the system's words alone (strerror)."""

    def __init__(self, message, start=False, reason=""):
        super().__init__(message)
        self.start = start
        self.reason = reason or message


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}", reason=os.strerror(err))


def mount(source, target, fstype, flags, data=""):
    check(libc.mount(source.encode() if source else None, target.encode(),
                     fstype.encode() if fstype else None, flags, data.encode() if data else None),
          f"mount {fstype or 'bind'} on {target}")


def in_root(root, path):
    """``root + path`` with every symlink followed as if ``root`` were ``/``, resolved at mount
    time as runc's securejoin does: a link that an earlier mount brought (a bind of the context
    holding ``b -> /etc``) must not lead a later mount point, or the stub made for it, out of
    the container onto the host."""
    remaining = [p for p in path.split("/") if p not in ("", ".")]
    remaining.reverse()
    current = []
    hops = 0
    while remaining:
        part = remaining.pop()
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root + "/" + "/".join([*current, part])
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            is_link = False
        if not is_link:
            current.append(part)
            continue
        hops += 1
        if hops > 255:
            raise SetupError(f"mount on {path}: too many levels of symbolic links")
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = []
        remaining.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return root + "".join("/" + p for p in current)


def ensure(path, is_dir):
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))


def loopback_up():
    """``ip link set lo up``, as docker's none network has it."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, ifreq))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def mount_cgroupfs(root, cgroupfs, privileged):
    """/sys/fs/cgroup as runc shows it on the host's cgroups: each hierarchy's directory of the
    container's cgroup, bound read-only (a pure cgroup v2 host has one, at the top)."""
    target = f"{root}/sys/fs/cgroup"
    if not cgroupfs or not os.path.isdir(target):
        return
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    if len(cgroupfs) == 1 and cgroupfs[0][0] == "":
        mount(cgroupfs[0][1], target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_BIND | MS_REMOUNT | flags)
        return
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    for name, source in cgroupfs:
        os.makedirs(f"{target}/{name}", 0o755, exist_ok=True)
        mount(source, f"{target}/{name}", None, MS_BIND | MS_REC)
        mount(None, f"{target}/{name}", None, MS_BIND | MS_REMOUNT | flags)
        if "," in name and "/" not in name:  # cpu,cpuacct: cpu and cpuacct lead there, as under runc
            for part in name.split(","):
                if not os.path.lexists(f"{target}/{part}"):
                    os.symlink(name, f"{target}/{part}")
    if not privileged:
        mount(None, target, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")


def mount_system(root, shm_size, privileged, cgroupfs=()):
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
    dev = f"{root}/dev"
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    for sub in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{sub}", 0o755)
    # in the order of the OCI spec's mounts, so that /proc/mounts reads as under runc
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("sysfs", f"{root}/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV | (0 if privileged else MS_RDONLY))
    mount_cgroupfs(root, cgroupfs, privileged)
    mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NOEXEC | MS_NODEV)
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, f"mode=1777,size={shm_size}")


def make_devices(root, devices):
    """CDI device nodes, on the /dev tmpfs (their paths were checked to be under /dev/)."""
    for path, kind, major, minor, mode, uid, gid in devices:
        target = root + path
        current = root + "/dev"
        for part in path.split("/")[2:-1]:  # never through a link (/dev/fd is one)
            current += "/" + part
            if os.path.islink(current):
                raise SetupError(f"CDI device node {path}: {current[len(root):]} is a link")
            if not os.path.isdir(current):
                os.mkdir(current, 0o755)
        node = {"b": stat.S_IFBLK, "p": stat.S_IFIFO}.get(kind, stat.S_IFCHR)
        if os.path.lexists(target):  # one of ours (/dev/null...): the device's own replaces it
            os.unlink(target)
        os.mknod(target, mode | node, os.makedev(major, minor))
        os.chmod(target, mode)
        os.chown(target, uid, gid)


TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCSCTTY = 0x540E
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414


def open_console(root, channel):
    """A pseudo-terminal of the container's own devpts, as runc makes one: the master goes to
    the helper over ``channel``; the slave is returned, to become the process's stdio."""
    master = os.open(f"{root}/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, struct.pack("i", 0)))[0]
    slave = os.open(f"{root}/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    import socket

    socket.send_fds(channel, [b"m"], [master])
    os.close(master)
    return slave


def attach_console(slave):
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def relay_console(channel, pid):
    """Copy our stdin to the terminal and the terminal to our stdout until pid 1 is gone;
    the caller's own terminal, if stdin is one, is put in raw mode meanwhile (as runc does)."""
    import select
    import socket
    import termios
    import tty

    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if not fds:
        return
    master = fds[0]
    saved = None
    if os.isatty(0):
        saved = termios.tcgetattr(0)
        fcntl.ioctl(master, TIOCSWINSZ, fcntl.ioctl(0, TIOCGWINSZ, b"\0" * 8))
        tty.setraw(0)
    try:
        sources = [0, master]
        while master in sources:
            ready, _, _ = select.select(sources, [], [])
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    sources.remove(0)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal has gone
                    data = b""
                if data:
                    os.write(1, data)
                else:
                    sources.remove(master)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)


PROPAGATION = {"private": MS_PRIVATE, "shared": MS_SHARED, "slave": MS_SLAVE}


def propagation_flags(name):
    """mount(2) flags of an OCI propagation option (``rslave``: recursive slave)."""
    return PROPAGATION[name.removeprefix("r")] | (MS_REC if name.startswith("r") else 0)


def bind(source, target, readonly, propagation="rprivate"):
    """A bind mount where device nodes do not work (there is no device cgroup here)."""
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NODEV | (MS_RDONLY if readonly else 0))
    mount(None, target, None, propagation_flags(propagation))


def mount_extra(root, plan):
    """The step's RUN --mount targets; one that cannot be mounted (a directory over a file...)
    is the step's error, named by its target in the container as runc names it."""
    for item in plan["mounts"]:
        target = in_root(root, item["target"])
        source = item["source"] if item["type"] == "bind" else "tmpfs"
        try:
            if item["type"] == "bind":
                ensure(target, os.path.isdir(item["source"]))
                bind(item["source"], target, item["readonly"], item["options"][1])
            else:
                ensure(target, True)
                before = os.stat(target).st_mode  # as runc: the tmpfs takes its mount point's mode
                data = ",".join(o for o in item["options"] if "=" in o)
                mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, data)
                os.chmod(target, stat.S_IMODE(before))
        except (SetupError, OSError) as err:
            reason = err.reason if isinstance(err, SetupError) else err.strerror
            raise SetupError(f'error mounting "{source}" to rootfs at "{item["target"]}": {reason}',
                             start=True) from None


def mask_paths(root, plan):
    for path in plan["masked"]:
        target = in_root(root, path)
        if not os.path.exists(target):
            continue
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY)
        else:
            mount(f"{root}/dev/null", target, None, MS_BIND)  # must stay a working /dev/null
    for path in plan["readonly"]:
        target = in_root(root, path)
        if os.path.exists(target):
            bind(target, target, True)


def pivot(root):
    machine = os.uname().machine
    number = SYS_PIVOT_ROOT.get(machine)
    if number is None:
        raise SetupError(f"pivot_root: unsupported architecture {machine}")
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
    try:
        os.chdir(root)
        check(libc.syscall(number, b".", b"."), "pivot_root")
        # as runc: in the old root (now stacked on the new one), made a slave so that its
        # unmount cannot reach the host through a peer group the old root shares with it
        os.fchdir(old)
        mount(None, ".", None, MS_SLAVE | MS_REC)
        check(libc.umount2(b".", MNT_DETACH), "unmount the old root")
    finally:
        os.close(old)
    os.chdir("/")


def drop_capabilities(keep):
    if keep is None:  # privileged: keep them all
        return
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    wanted = {CAPS[name] for name in keep}
    for cap in range(last + 1):
        if cap not in wanted:
            check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


class ArgCmp(ctypes.Structure):
    """libseccomp's struct scmp_arg_cmp."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_FLTATR_CTL_NNP = 3
SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
            "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


def seccomp_filter(profile):
    """Build the runtime-spec seccomp ``profile`` with libseccomp (loaded while the host's
    libraries are still reachable); None where libseccomp is not installed: no filter, as
    docker runs where the kernel or the host lacks seccomp."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    for name in ("seccomp_load", "seccomp_release"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    if profile["defaultAction"] != "SCMP_ACT_ALLOW":
        raise SetupError(f"seccomp: unsupported default action {profile['defaultAction']}")
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SetupError("seccomp: cannot create a filter")
    # no_new_privs stays off, as under docker: setuid programs keep working in RUN steps
    check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "seccomp: clear no_new_privs")
    for arch in profile["architectures"]:
        token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
        if token:
            result = lib.seccomp_arch_add(ctx, token)
            if result not in (0, -errno.EEXIST):
                raise SetupError(f"seccomp: add architecture {arch}: {os.strerror(-result)}")
    for rule in profile["syscalls"]:
        if rule["action"] != "SCMP_ACT_ERRNO":
            raise SetupError(f"seccomp: unsupported action {rule['action']}")
        action = SCMP_ACT_ERRNO | (rule["errnoRet"] & 0xFFFF)
        args = rule.get("args", [])
        array = (ArgCmp * max(len(args), 1))(
            *[ArgCmp(a["index"], SCMP_CMP[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args])
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # unknown to this libseccomp: nothing to refuse
                continue
            result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
            if result != 0:
                raise SetupError(f"seccomp: rule for {name}: {os.strerror(-result)}")
    return lib, ctx


def load_seccomp(built):
    if built is None:
        return
    lib, ctx = built
    result = lib.seccomp_load(ctx)
    lib.seccomp_release(ctx)
    if result != 0:
        raise SetupError(f"seccomp: load the filter: {os.strerror(-result)}")


def become_user(plan):
    user = plan["user"]
    os.setgroups(user["sgids"])
    os.setgid(user["gid"])
    os.setuid(user["uid"])


def change_dir(cwd):
    try:
        os.chdir(cwd)
    except OSError as err:
        raise SetupError(f"chdir to cwd ({cwd!r}) failed: {err.strerror}", start=True) from None


def exec_process(plan):
    args, env = plan["args"], plan["env"]
    for sig in signal.valid_signals():  # nothing ignored or blocked, as under docker
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    environ = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    try:
        if "/" in args[0]:
            os.execve(args[0], args, environ)
        os.execvpe(args[0], args, environ)
    except FileNotFoundError:
        where = "" if "/" in args[0] else " in $PATH"
        raise SetupError(f'exec: "{args[0]}": executable file not found{where}', start=True) from None
    except OSError as err:
        raise SetupError(f'exec: "{args[0]}": {err.strerror}', start=True) from None


def container_init(plan, errfd, channel):
    """pid 1 of the new pid namespace: set up the mounts, then become the process."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # a mount namespace of our own: pivot_root moves every process of a namespace, and the
    # helper (our parent) must stay outside the container's root
    check(libc.unshare(CLONE_NEWNS), "unshare")
    seccomp = seccomp_filter(plan["seccomp"]) if plan["seccomp"] is not None else None
    root = plan["rootfs"]
    if plan["root_propagation"] == "rshared":
        # "/" kept the host's peer groups, for a shared bind's mounts to reach the host; what
        # is mounted in the root (/proc, /dev, binds) must not: the root itself is private
        mount(None, root, None, MS_PRIVATE)
    name = plan["hostname"].encode()
    check(libc.sethostname(name, len(name)), "sethostname")
    if plan["network"] == "none":
        loopback_up()
    for key, value in plan["sysctl"].items():  # /proc/sys/net is the current namespace's
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    mount_system(root, plan["shm_size"], plan["privileged"], plan["cgroupfs"])
    make_devices(root, plan["devices"])
    console = open_console(root, channel) if channel is not None else None
    for item in plan["etc"]:
        bind(item["source"], in_root(root, item["target"]), False)
    mount_extra(root, plan)
    mask_paths(root, plan)
    pivot(root)
    # No device cgroup guards this container as under runc: device nodes that came with the
    # image, or that a bind brings, must not open (and CAP_MKNOD is not given, see chroot.py)
    mount(None, "/", None, MS_BIND | MS_REMOUNT | (0 if plan["privileged"] else MS_NODEV)
          | (MS_RDONLY if plan["readonly_rootfs"] else 0))
    os.umask(plan["umask"])
    for name, soft, hard in plan["rlimits"]:  # -1: RLIM_INFINITY
        resource.setrlimit(getattr(resource, name), (soft, hard))
    drop_capabilities(plan["capabilities"])
    # loaded while still root (without no_new_privs, loading needs CAP_SYS_ADMIN), as runc does;
    # nothing after it (chdir, setuid, exec) is refused
    load_seccomp(seccomp)
    # as runc: chdir as root first (a cwd only root can enter is fine), else as the user
    try:
        os.chdir(plan["cwd"])
        entered = True
    except PermissionError:
        entered = False
    except OSError as err:
        raise SetupError(f"chdir to cwd ({plan['cwd']!r}) failed: {err.strerror}", start=True) from None
    become_user(plan)
    if not entered:
        change_dir(plan["cwd"])
    if console is not None:
        attach_console(console)
    else:
        os.setsid()  # as runc's init: pid 1 leads its own session and process group
    os.set_inheritable(errfd, False)
    exec_process(plan)


def report(errfd, error):
    os.write(errfd, marshal.dumps({"error": str(error), "start": getattr(error, "start", False)}))


def main():
    plan_path, errfd, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # pybuild is already gone
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(plan_path, "rb") as f:
        plan = marshal.load(f)
    try:
        for procs in plan["cgroup_procs"]:  # the limits hold from here on, for every child
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
    except OSError as err:
        report(errfd, SetupError(f"join cgroup {os.path.dirname(procs)}: {err.strerror}"))
        os._exit(1)
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if plan["network"] == "none":
        flags |= CLONE_NEWNET
    try:
        check(libc.unshare(flags), "unshare")
        # nothing of the container's reaches the host, nor the host's the container, unless a
        # bind asks: slave binds need "/" a slave, shared ones the host's peer groups kept
        if plan["root_propagation"] != "rshared":
            mount(None, "/", None, MS_REC | (MS_SLAVE if plan["root_propagation"] else MS_PRIVATE))
    except SetupError as err:
        report(errfd, err)
        os._exit(1)
    theirs = ours = None
    if plan["terminal"]:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            if ours is not None:
                ours.close()
            container_init(plan, errfd, theirs)
        except (SetupError, OSError) as err:
            report(errfd, err)
        except BaseException as err:  # never let pid 1 fall back into the helper's code
            report(errfd, SetupError(f"internal error: {type(err).__name__}: {err}"))
        os._exit(127)
    os.close(errfd)
    def forward(signum, frame):  # pybuild run's signal proxy: pid 1 gets what pybuild gets
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    if ours is not None:
        theirs.close()
        relay_console(ours, pid)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    try:
        main()
    except OSError as err:
        if err.errno == errno.EPIPE:
            os._exit(1)
        raise
