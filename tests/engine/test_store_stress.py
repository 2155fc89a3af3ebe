"""The store under stress, through real pybuild processes: a disk that fills at every point of
a build, builds SIGKILLed at every moment, several processes on one store at once.

Whatever happens, each failure is one clear line, and the next build on the store works
and leaves ``pybuild store check`` clean.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from builder.runtime.overlay import mounts_under
from cache.blobs import sweep_temp
from tests.engine.conftest import Builder
from tests.helpers.leftovers import runtime_containers
from tests.helpers.tools import REPO, run_pybuild, small_fs
from tests.store.imagegen import image_of, noise, write_archive


def _fresh_store(base_archive: Path, root: Path, ctx: Path) -> Path:
    """A store holding busybox:local, its snapshot extracted (a RUN on it built once)."""
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    warm = ctx.parent / "warm"
    warm.mkdir(exist_ok=True)
    (warm / "Dockerfile").write_text("FROM busybox:local\nRUN true\n")
    run_pybuild("build", "-q", str(warm), root=root, check=True)
    return root


def _check_clean(root: Path) -> str:
    done = run_pybuild("store", "check", root=root)
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and "clean" in out, out
    return out


def _fill(fs: Path, filler: Path, keep_kb: int) -> None:
    """Take all of ``fs``'s free space but ``keep_kb`` KiB."""
    st = os.statvfs(fs)
    free_kb = st.f_bavail * st.f_frsize // 1024
    with open(filler, "wb") as f:
        for _ in range(max(free_kb - keep_kb, 0)):
            try:
                f.write(b"\0" * 1024)
            except OSError:
                break


def test_a_disk_full_at_any_point_of_a_build_is_one_line(base_archive: Path, tmp_path: Path) -> None:
    """From too full to open the database to just enough: the store database, the build
    container's files (an internal error before), the RUN's upper dir, its layer, the image.
    Each failure is one line naming the step where there is one; freed, the store is clean."""
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": "FROM busybox:local\nARG SALT\n"
                                               "RUN echo $SALT > /x\n"})
    pristine = _fresh_store(base_archive, tmp_path / "pristine", ctx)
    failures: list[str] = []
    with small_fs(tmp_path / "small", "16m") as small:
        root, filler = small / "root", small / "filler"
        for keep_kb in range(0, 208, 16):
            shutil.rmtree(root, ignore_errors=True)
            subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
            _fill(small, filler, keep_kb)
            p = run_pybuild("build", "-q", "--build-arg", f"SALT={keep_kb}", str(ctx), root=root)
            err = p.stderr.decode()
            filler.unlink()
            if p.returncode:
                # One line; a RUN whose runtime could not start adds the output tail, as for any RUN.
                assert err.startswith(("ERROR: ", "------\n > ")) and "internal error" not in err, (keep_kb, err)
                assert err.count("\n") == 1 or "did not complete successfully" in err, (keep_kb, err)
                assert "no space left on device" in err.lower(), (keep_kb, err)
                failures.append(err)
            assert list((root / "tmp").iterdir()) == [], keep_kb
            _check_clean(root)
        assert failures and p.returncode == 0, failures  # the sweep crossed the edge
        assert any("cannot write the store database" in e for e in failures), failures
        run_pybuild("build", "-q", "--build-arg", "SALT=again", str(ctx), root=root, check=True)
        _check_clean(root)


def test_a_sweep_by_another_process_keeps_a_live_add_scratch_dir(base_archive: Path, tmp_path: Path) -> None:
    """Every writer sweeps the store's tmp/ of what dead processes left. ADD unpacked its
    archive in a temp dir not named by its pid, which a sweep took for abandoned once a minute
    old: a concurrent load or build deleted the files of a long ADD under it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "many.tar", "w") as tar:
        for i in range(8000):
            data = f"{i}\n".encode()
            info = tarfile.TarInfo(f"d{i % 20}/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (ctx / "Dockerfile").write_text("FROM busybox:local\nADD many.tar /many/\n")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", "-t", "many:1", str(ctx)],
                            cwd=REPO, env={**os.environ, "PYBUILD_ROOT": str(root)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    scratch: list[Path] = []
    while not scratch:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        scratch = [p for p in (root / "tmp").glob("*add-*") if (p / "archive-0").exists()]
    old = time.time() - 3600  # as a long ADD's directory is: no entry of its own changes
    os.utime(scratch[0], (old, old))
    sweep_temp(root / "tmp")  # as every writer does (a load, another build's image or snapshot)
    assert scratch[0].exists(), "the sweep removed the live ADD's files"
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert list((root / "tmp").iterdir()) == []
    _check_clean(root)


def test_parallel_stages_from_compressed_archives(base_archive: Path, tmp_path: Path) -> None:
    """Two stages FROM gzipped docker-archives run at once, and each unpacked its archive to
    the same scratch file (named by the pid alone): one stage read the other's image, or found
    the file gone ('/fa' not found in 'a', 'no manifest.json', 'not a tar archive')."""
    archives = {}
    for name in ("a", "b"):
        plain = write_archive(tmp_path / f"{name}.tar", image_of([{f"f{name}": noise(name, 8 << 20)}]))
        archives[name] = tmp_path / f"{name}.tar.gz"
        archives[name].write_bytes(gzip.compress(plain.read_bytes(), 1))
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": (
        f"FROM docker-archive://{archives['a']} AS a\nFROM docker-archive://{archives['b']} AS b\n"
        "FROM busybox:local\nCOPY --from=a /fa /fa\nCOPY --from=b /fb /fb\n")})
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    for _ in range(3):
        run_pybuild("build", "-q", "--no-cache", "-t", "two:1", str(ctx), root=root, check=True)
        run_pybuild("prune", "-a", "-f", root=root, check=True)  # each round unpacks both again
    assert list((root / "tmp").iterdir()) == []
    _check_clean(root)


def test_builds_killed_at_any_moment_leave_a_usable_store(base_archive: Path, tmp_path: Path) -> None:
    """SIGKILL while the context comes in on stdin, while COPY writes a big layer, while a RUN
    writes many files, while ADD unpacks a tar, while the image is written: each next build
    works, the store checks clean, and nothing piles up (a context spooled from stdin stayed
    in run/tmp for good: hundreds of megabytes after a few kills)."""
    ctx = tmp_path / "ctx"
    (ctx / "big").mkdir(parents=True)
    for i in range(40):
        (ctx / "big" / f"f{i}").write_bytes(os.urandom(1 << 20))
    with tarfile.open(ctx / "data.tar", "w") as tar:
        for i in range(300):
            info = tarfile.TarInfo(f"t{i}")
            info.size = 4096
            tar.addfile(info, io.BytesIO(os.urandom(4096)))
    (ctx / "Dockerfile").write_text(
        "FROM busybox:local\nCOPY big /big\n"
        "RUN mkdir /many && for i in $(seq 1 400); do echo $i > /many/f$i; done\n"
        "ADD data.tar /data/\nRUN ls /data | wc -l > /count\n")
    context_tar = tmp_path / "ctx.tar"
    with tarfile.open(context_tar, "w") as tar:
        tar.add(ctx, arcname=".")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    for delay in (0.2, 0.5, 0.8, 1.1, 1.4, 1.8, 2.2, 2.6):
        with open(context_tar, "rb") as stdin:
            proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", "--no-cache", "-"],
                                    cwd=REPO, env=env, stdin=stdin, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.kill()
            proc.wait()
        assert "clean" in _check_clean(root)
        assert runtime_containers(root) == [], delay  # the step died with its build
    with open(context_tar, "rb") as stdin:
        built = run_pybuild("build", "-q", "-t", "after:1", "-", root=root, input=stdin.read(), check=True)
    assert built.stdout.startswith(b"sha256:")
    out = run_pybuild("run", "--rm", "after:1", "cat", "/count", root=root, check=True).stdout
    assert out == b"300\n"
    assert mounts_under(root) == []
    leftovers = [p for sub in ("tmp", "run/tmp", "run/containers", "run/state") if (root / sub).is_dir()
                 for p in (root / sub).iterdir()]
    assert leftovers == []
    _check_clean(root)


def test_prune_and_rmi_wait_for_a_build_on_the_snapshots_they_would_remove(base_archive: Path,
                                                                           tmp_path: Path) -> None:
    """While a RUN has the base image's snapshot as its overlay lower dir, the base is untagged
    and ``prune -a`` asked to remove every snapshot: the build finishes untouched, the prune
    says it waits and runs after it, and the built image still runs (its layers re-extracted)."""
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": "FROM busybox:local\n"
                                               "RUN sleep 3 && cat /bin/busybox > /copy\n"})
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    build = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", "-t", "on-base:1", str(ctx)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((root / "run" / "state").glob("*.json")):  # its RUN's container is up
        assert build.poll() is None and time.monotonic() < deadline, build.communicate()
        time.sleep(0.05)
    run_pybuild("rmi", "busybox:local", root=root, check=True)
    prune = subprocess.Popen([sys.executable, "-m", "builder", "prune", "-a", "-f"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, build_err = build.communicate(timeout=120)
    assert build.returncode == 0, build_err.decode()
    _, prune_err = prune.communicate(timeout=120)
    assert prune.returncode == 0, prune_err.decode()
    assert prune_err.decode().startswith("waiting for the builds and other pybuild commands using the store")
    assert list((root / "snapshots").iterdir()) == []  # the prune did run, after the build
    out = run_pybuild("run", "--rm", "on-base:1", "sha256sum", "/copy", "/bin/busybox", root=root, check=True)
    sums = [line.split()[0] for line in out.stdout.decode().splitlines()]
    assert len(sums) == 2 and sums[0] == sums[1], out.stdout
    _check_clean(root)


def test_the_same_build_three_times_at_once(base_archive: Path, tmp_path: Path) -> None:
    """Three processes build one Dockerfile at once: each may run the same steps and store the
    same layers and snapshots; none removes or spoils another's, and with SOURCE_DATE_EPOCH
    all three make the same image, which a fourth build takes whole from the cache."""
    ctx = Builder(tmp_path, tmp_path).context({
        "Dockerfile": "FROM busybox:local\nCOPY f /f\n"
                      "RUN mkdir /d && for i in $(seq 1 200); do echo $i > /d/$i; done\n"
                      "ADD t.tar /t/\nRUN cat /d/7 /t/f > /joined\n",
        "f": os.urandom(2 << 20)})
    with tarfile.open(ctx / "t.tar", "w") as tar:
        tar.add(ctx / "f", arcname="f")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    env = {**os.environ, "PYBUILD_ROOT": str(root), "SOURCE_DATE_EPOCH": "1700000000"}
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", str(ctx)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode() for _, err in results]
    ids = {out.strip() for out, _ in results}
    assert len(ids) == 1, ids
    _check_clean(root)
    again = run_pybuild("build", "--progress", "plain", str(ctx), root=root, env=env, check=True)
    assert again.stdout.strip() in ids
    assert again.stderr.count(b"CACHED") == 4, again.stderr.decode()
    out = run_pybuild("run", "--rm", again.stdout.strip().decode(), "wc", "-c", "/joined", root=root, check=True)
    assert out.stdout.split()[0] == str(2 + (2 << 20)).encode()


def test_four_builds_with_loads_removals_and_prunes_alongside(base_archive: Path, tmp_path: Path) -> None:
    """Four builds sharing a base and their first steps, while other processes load, tag,
    list, check, remove and prune on the same store: every command succeeds or says why in
    one line (never 'database is locked' nor a traceback), and the store checks clean."""
    files: dict[str, str | bytes] = {"shared.txt": "shared\n"}
    for v in range(4):
        files[f"Dockerfile.{v}"] = (
            "FROM busybox:local\nCOPY shared.txt /shared.txt\n"
            "RUN cat /shared.txt > /prefix.txt && head -c 200000 /dev/urandom > /noise\n"
            f"RUN echo {v} > /variant && mkdir /many && for i in $(seq 1 100); do echo $i > /many/$i; done\n"
            f"COPY v{v}.txt /own.txt\n")
        files[f"v{v}.txt"] = f"own {v}\n"
    ctx = Builder(tmp_path, tmp_path).context(files)
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    builds = [subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", "-t", f"v{v}:1",
                                "-f", str(ctx / f"Dockerfile.{v}"), str(ctx)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for v in range(4)]
    ops = [("images",), ("load", "-i", str(base_archive)), ("tag", "busybox:local", "extra:1"),
           ("rmi", "extra:1"), ("store", "check"), ("prune", "-f"), ("rmi", "v1:1"),
           ("history", "busybox:local")]
    others: list[tuple[tuple[str, ...], int, str]] = []
    lock = threading.Lock()

    def alongside(seed: int) -> None:
        rng = random.Random(seed)
        while any(b.poll() is None for b in builds):
            op = rng.choice(ops)
            p = run_pybuild(*op, root=root)
            with lock:
                others.append((op, p.returncode, p.stderr.decode()))

    threads = [threading.Thread(target=alongside, args=(seed,)) for seed in range(2)]
    for t in threads:
        t.start()
    results = [b.communicate(timeout=300) for b in builds]
    for t in threads:
        t.join()
    assert [b.returncode for b in builds] == [0] * 4, [err.decode() for _, err in results]
    assert others, "nothing ran alongside the builds"
    for op, code, err in others:
        assert "Traceback" not in err and "internal error" not in err and "locked" not in err, (op, err)
        assert code == 0 or err.startswith("Error response from daemon: No such image"), (op, err)
    _check_clean(root)
    for v in range(4):
        if v != 1:  # perhaps untagged meanwhile
            out = run_pybuild("run", "--rm", f"v{v}:1", "cat", "/own.txt", root=root, check=True)
            assert out.stdout == f"own {v}\n".encode()


def test_prune_removes_what_a_killed_build_left_mounted(base_archive: Path, tmp_path: Path) -> None:
    """A SIGKILLed RUN leaves its overlay mounted over the store's snapshots until the next build
    or run recovers it; prune, the command to clean up, now recovers it first (it left it)."""
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": "FROM busybox:local\nRUN sleep 29.3\n"})
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    build = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", str(ctx)], cwd=REPO,
                             env={**os.environ, "PYBUILD_ROOT": str(root)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not mounts_under(root):
        assert build.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    build.kill()
    build.wait()
    run_pybuild("prune", "-a", "-f", root=root, check=True)
    assert mounts_under(root) == []
    leftovers = [p for sub in ("run/containers", "run/state", "run/tmp", "tmp") if (root / sub).is_dir()
                 for p in (root / sub).iterdir()]
    assert leftovers == []
    _check_clean(root)


def test_a_prune_killed_while_it_removes_a_cache_mount_leaves_nothing_held(base_archive: Path,
                                                                          tmp_path: Path) -> None:
    """Prune renames a cache mount aside, then deletes its files. SIGKILLed in between, the
    renamed directory stayed in cachemounts/ as a dot entry: its space held, counted by no
    ``cache du``, removed by no build, and by a prune only an hour after the mount's last use.
    Now it goes aside into tmp/ under the prune's pid, and the next writer sweeps it."""
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": (
        "FROM busybox:local\nRUN --mount=type=cache,target=/c sh -c "
        "'for i in $(seq 1 3000); do echo $i > /c/f$i; done; head -c 20000000 /dev/urandom > /c/big'\n")})
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    killed = 0
    for command in (("cache", "prune", "-f"), ("prune", "-a", "-f")):
        run_pybuild("build", "-q", "--no-cache", str(ctx), root=root, check=True)
        mounts = root / "cachemounts"
        proc = subprocess.Popen([sys.executable, "-m", "builder", *command], cwd=REPO,
                                env={**os.environ, "PYBUILD_ROOT": str(root)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:  # killed the moment the mount is set aside
            if any(p.name.endswith(".gone") for d in (mounts, root / "tmp") for p in d.iterdir()):
                proc.kill()
                killed += 1
                break
        proc.wait()
        run_pybuild("build", "-q", str(Builder(tmp_path, tmp_path).context({"Dockerfile": (
            "FROM busybox:local\nRUN true\n")}, name="other")), root=root, check=True)
        left = [p.name for d in (mounts, root / "tmp") for p in d.iterdir()]
        assert left == [], (command, left)
        _check_clean(root)
    assert killed == 2
