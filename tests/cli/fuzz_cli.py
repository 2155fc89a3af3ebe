"""Fuzz the pybuild CLI with user mistakes; flag what breaks "errors are for people".

Runs a few hundred invocations (bad flags and values, wrong arity, unknown images, missing,
unreadable or wrong-kind files, odd Dockerfiles) against a scratch store and prints each one
whose stderr has a traceback or "internal error", that exits 0 on bad input, that exits
non-zero with nothing on stderr, or that prints more than one ERROR. Not a test (some cases
are judgement calls, listed in OK_EXPECTED); run it after changing the CLI:

    python3 tests/cli/fuzz_cli.py [NAME-SUBSTRING...]    # needs root, busybox, setpriv

Every result is written to WORKDIR/results.jsonl for reading the messages themselves.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
W = Path(os.environ.get("FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="pybuild-fuzz-"))
ROOT = str(W / "root")


def setup() -> None:
    """The files the cases use, and a busybox image 'bb' in the scratch store."""
    bb = W / "bbctx"
    bb.mkdir(exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", bb / "busybox")
    (bb / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\n'
                                   'RUN ["/bin/busybox","--install","-s","/bin"]\nCMD ["sh"]\n')
    subprocess.run([sys.executable, "-m", "builder", "build", "-q", "-t", "bb", str(bb)], cwd=REPO,
                   env=dict(os.environ, PYBUILD_ROOT=ROOT), check=True, capture_output=True)
    c = W / "ctx"
    c.mkdir(exist_ok=True)
    (c / "Dockerfile").write_text("FROM bb\nRUN true\n")
    (W / "afile").write_text("x")
    (W / "dfdir" / "Dockerfile").mkdir(parents=True, exist_ok=True)
    d = W / "dfs"
    d.mkdir(exist_ok=True)
    (d / "nul").write_bytes(b"FROM bb\nRUN echo a\x00b\n")
    (d / "badutf8").write_bytes(b"FROM bb\nRUN echo \xff\xfe\xc3\n")
    (d / "bom").write_bytes(b"\xef\xbb\xbfFROM bb\nRUN true\n")
    (d / "bigline").write_text("FROM bb\nRUN echo " + "a" * 10_000_000 + "\n")
    (d / "nested").write_text("FROM bb\nARG A=1\nENV X=" + "${A:-" * 2000 + "z" + "}" * 2000 + "\n")
    (d / "nested2").write_text("FROM bb\nENV X=" + "${" * 500 + "\n")
    (d / "heredoc").write_text("# syntax=docker/dockerfile:1\nFROM bb\nRUN <<EOF\necho hi\n")
    (d / "empty").write_text("")
    (d / "comments").write_text("# only\n")
    (d / "nofrom").write_text("RUN true\n")
    (d / "unknown").write_text("FROM bb\nFOO bar\n")
    (d / "badfrom").write_text("FROM BB:Latest\n")
    (d / "copymissing").write_text("FROM bb\nCOPY nope /x\n")
    (d / "arg-from").write_text("ARG X\nFROM ${X}\n")
    (d / "deep-cont").write_text("FROM bb\nRUN echo \\\n" * 1 + "\\\n" * 50000 + "x\n")
    (d / "crlf").write_bytes(b"FROM bb\r\nRUN true\r\n")
    (d / "onlyws").write_text("   \n\t\n")
    (d / "badinstr").write_text("FROM bb\nEXPOSE notaport\n")
    (d / "healthbad").write_text("FROM bb\nHEALTHCHECK --interval=xx CMD true\n")
    (d / "copyflag").write_text("FROM bb\nCOPY --chown=a:b:c afile /x\n")
    (d / "onbuild").write_text("FROM bb\nONBUILD ONBUILD RUN true\n")
    (d / "stopsig").write_text("FROM bb\nSTOPSIGNAL SIGFOO\n")
    (d / "user").write_text("FROM bb\nUSER nosuch\nRUN true\n")
    (d / "workdir").write_text("FROM bb\nWORKDIR\n")
    (d / "fromas").write_text("FROM bb AS 1bad\n")
    (d / "fromas2").write_text("FROM bb AS\n")
    (d / "copyfrom").write_text("FROM bb\nCOPY --from=nosuchstage /x /y\n")
    (d / "mountbad").write_text("FROM bb\nRUN --mount=type=foo true\n")
    (d / "mountbad2").write_text("FROM bb\nRUN --mount=type=secret,id= true\n")
    (d / "shellbad").write_text("FROM bb\nSHELL sh -c\n")
    (d / "cmdjson").write_text('FROM bb\nCMD ["a", \n')
    (d / "entry").write_text('FROM bb\nENTRYPOINT ["/nonexist"]\nRUN true\n')
    (d / "runfail").write_text('FROM bb\nRUN exit 3\n')
    (d / "runnotfound").write_text('FROM bb\nRUN ["/nope"]\n')
    (d / "addurl").write_text('FROM bb\nADD http://127.0.0.1:1/x /x\n')
    (d / "addchecksum").write_text('FROM bb\nADD --checksum=sha256:zz afile /x\n')
    (d / "envbad").write_text('FROM bb\nENV =x\n')
    (d / "envbad2").write_text('FROM bb\nENV A\n')
    (d / "label").write_text('FROM bb\nLABEL\n')
    (d / "arg2").write_text('FROM bb\nARG =x\n')
    (d / "volume").write_text('FROM bb\nVOLUME\n')
    (d / "maint").write_text('FROM bb\nMAINTAINER\n')
    (d / "fromplat").write_text('FROM --platform=foo bb\n')
    (d / "fromflag").write_text('FROM --nope bb\n')
    (d / "digest").write_text('FROM bb@sha256:zzz\n')
    (d / "esc").write_text('# escape=x\nFROM bb\n')
    (d / "syntax").write_text('# syntax=nosuch/frontend\nFROM bb\n')
    (d / "check").write_text('# check=error=true\nfrom bb\n')
    (d / "checkbad").write_text('# check=nope\nFROM bb\n')
    (W / "secret").write_text("s")
    (W / "notar").write_text("not a tar")
    (W / "trunc.tar").write_bytes(b"\0" * 100)
    (W / "emptyfile").write_text("")
    (W / "badjson.tar").unlink(missing_ok=True)
    subprocess.run(["tar", "-C", str(W), "-cf", str(W / "badjson.tar"), "afile"], check=True)

CASES: list[tuple[str, list[str]]] = []


def case(name: str, *argv: str) -> None:
    CASES.append((name, list(argv)))


def make_cases() -> None:
    """Every invocation, by name; the Dockerfile cases are one per file setup() wrote."""
    F = str(W)
    B = ["build", "-q"]

    # global / top
    case("unknown-cmd-as-ctx", "nosuchcmd")
    case("root-missing-value", "--root")
    case("root-empty", "--root", "", "images")
    case("root-is-file", "--root", f"{F}/afile", "images")
    case("root-is-file-build", "--root", f"{F}/afile", "build", f"{F}/ctx")
    case("root-under-file", "--root", f"{F}/afile/sub", "images")
    case("bad-flag-top", "--nope")
    case("debug-only", "--debug")
    # build
    case("build-no-ctx", "build")
    case("build-ctx-missing", *B, f"{F}/nosuch")
    case("build-ctx-file", *B, f"{F}/afile")
    case("build-ctx-empty", *B, "")
    case("build-two-ctx", *B, f"{F}/ctx", f"{F}/ctx")
    case("build-df-dir", *B, f"{F}/dfdir")
    case("build-f-dir", *B, "-f", f"{F}/dfdir", f"{F}/ctx")
    case("build-f-missing", *B, "-f", f"{F}/nosuch", f"{F}/ctx")
    case("build-f-empty", *B, "-f", "", f"{F}/ctx")
    case("build-f-noarg", *B, f"{F}/ctx", "-f")
    for n in sorted(os.listdir(W / "dfs")):
        case(f"build-df-{n}", *B, "--no-cache", "-f", f"{F}/dfs/{n}", f"{F}/ctx")
        case(f"parse-df-{n}", "parse", "-f", f"{F}/dfs/{n}", f"{F}/ctx")
        case(f"lint-df-{n}", "lint", "-f", f"{F}/dfs/{n}", f"{F}/ctx")
    for t in ["UPPER", "a:b:c", "a@sha256:zz", "-", ":", "a:", ":tag", "a" * 300, "x:" + "t" * 200, "", " ", "a//b", "a/../b", "ümlaut", "a:tag@sha256:" + "0" * 64 + "x"]:
        case(f"build-tag-{t[:20]}", *B, "-t", t, f"{F}/ctx")
    for ba in ["", "=", "=x", "NOEQ", "A=B=C", "A B=c"]:
        case(f"build-arg-{ba}", *B, "--build-arg", ba, f"{F}/ctx")
    for p in ["", "bogus", "linux", "linux/", "/amd64", "windows/amd64", "linux/arm64", "linux/amd64/v9/x", "linux/amd64,linux/arm64", "LINUX/AMD64", "linux/amd64/"]:
        case(f"build-platform-{p}", *B, "--platform", p, f"{F}/ctx")
        case(f"pull-platform-{p}", "pull", "--platform", p, "bb")
        case(f"load-platform-{p}", "load", "--platform", p, "-i", f"{F}/notar")
    for s in ["", "id", "id=", "src=/x", "id=a,src=/nonexist", "id=a,env=", "id=a,bogus=1", "id=a,src=" + F + "/secret,type=foo", "type=env", "=,=", "id=a,src"]:
        case(f"build-secret-{s}", *B, "--secret", s, f"{F}/ctx")
    for s in ["", "=", "default=/nonexist", "a=b=c", "default,", "bad id=/x", ",,,", "default=" + F + "/afile"]:
        case(f"build-ssh-{s}", *B, "--ssh", s, f"{F}/ctx")
    for o in ["", "type=", "type=bogus", "dest=/x", "type=local", "type=tar", "type=local,bogus=1", "type=docker,dest=" + F + "/nosuchdir/x.tar", "type=oci,dest=" + F + "/dfdir", "type=image,name=UPPER", "type=registry", "type=local,dest=" + F + "/afile", F + "/notkv", "type=tar,dest=" + F + "/afile/x", f"type=docker,compression=bogus,dest={F}/o.tar", "type=image,compression-level=abc", "type=local,dest=-"]:
        case(f"build-o-{o[:30]}", *B, "-o", o, f"{F}/ctx")
    for c in ["", "type=", "type=bogus", "type=registry", "type=registry,ref=UPPER", "type=local", "type=local,src=" + F + "/nosuch", "type=local,src=" + F + "/afile", "type=gha", "ref", "type=inline,bogus=1", "type=registry,ref=127.0.0.1:1/x", "type=local,src=" + F + "/dfdir"]:
        case(f"build-cache-from-{c[:30]}", *B, "--cache-from", c, f"{F}/ctx")
    for c in ["", "type=", "type=bogus", "type=registry", "type=local", "type=local,dest=" + F + "/afile", "type=local,dest=" + F + "/afile/x", f"type=local,dest={F}/cc,mode=bogus", "type=registry,ref=127.0.0.1:1/x", "type=inline,mode=max", f"type=local,dest={F}/cc,compression=bogus"]:
        case(f"build-cache-to-{c[:30]}", *B, "--cache-to", c, f"{F}/ctx")
    for flag, vals in {
        "--progress": ["bogus", ""], "--network": ["bogus", "container:x"], "--isolation": ["bogus"],
        "--jobs": ["0", "-1", "abc", ""], "--shm-size": ["abc", "-1", "", "1q"], "--memory": ["abc", "-5", "1x"],
        "--memory-swap": ["abc"], "--cpu-shares": ["abc", "-1"], "--cpu-period": ["abc", "1"], "--cpu-quota": ["abc"],
        "--cpuset-cpus": ["abc", "999", "1-0"], "--cpuset-mems": ["zzz"], "--ulimit": ["", "nofile", "nofile=a", "bogus=1", "nofile=10:5"],
        "--add-host": ["", "noip", "h:notip", ":1.2.3.4"], "--label": ["", "=x", "novalue"], "--annotation": ["", "=x", "bogus:k=v", "x"],
        "--allow": ["", "bogus", "network.host,bogus"], "--build-context": ["", "noeq", "a=", "=x", "a=" + F + "/nosuch", "a=docker-image://UPPER", "a=oci-layout://" + F + "/nosuch"],
        "--target": ["", "nosuch"], "--no-cache-filter": ["nosuch"], "--call": ["", "bogus", "check,format=bogus", "targets,bogus=1"],
        "--iidfile": [F + "/nosuchdir/x", F + "/dfdir", F + "/afile/x", ""], "--metadata-file": [F + "/nosuchdir/x", F + "/dfdir"],
        "--cdi-spec-dir": [F + "/nosuch", F + "/afile"], "--insecure-registry": ["", "::"], "--cgroup-parent": ["../../x"],
    }.items():
        for v in vals:
            case(f"build{flag}-{v[:25]}", *B, flag, v, f"{F}/ctx")
    case("build-push-no-tag", *B, "--push", f"{F}/ctx")
    case("build-load-push-oflag", *B, "--load", "-o", f"type=local,dest={F}/o1", f"{F}/ctx")
    case("build-two-o", *B, "-o", f"type=local,dest={F}/o1", "-o", f"type=tar,dest={F}/o2.tar", f"{F}/ctx")
    case("build-check-and-call", *B, "--check", "--call", "build", f"{F}/ctx")
    case("build-dry-run-explain", *B, "--dry-run", "--explain", f"{F}/ctx")
    case("build-stdin-empty", "build", "-q", "-")
    case("build-url-bad", *B, "http://127.0.0.1:1/x.tar")
    case("build-git-bad", *B, "git://127.0.0.1:1/x.git")
    case("build-f-stdin-ctx-stdin", *B, "-f", "-", "-")
    case("build-nocache-bool", *B, "--no-cache=maybe", f"{F}/ctx")
    case("build-cgroup-parent-abs", *B, "--cgroup-parent", "/nosuch/../../x", f"{F}/ctx")
    # run
    case("run-noargs", "run")
    case("run-unknown", "run", "nosuchimage:latest", "true")
    case("run-unknown-never", "run", "--pull", "never", "nosuchimage", "true")
    case("run-upper", "run", "UPPER", "true")
    case("run-cmd-missing", "run", "bb", "/nonexistent")
    case("run-exit3", "run", "bb", "sh", "-c", "exit 3")
    case("run-bad-env", "run", "-e", "", "bb", "true")
    case("run-bad-env2", "run", "-e", "=x", "bb", "true")
    case("run-bad-vol", "run", "-v", "nocolon", "bb", "true")
    case("run-bad-vol2", "run", "-v", f"{F}/nosuch:/x", "bb", "true")
    case("run-bad-vol3", "run", "-v", "rel:/x", "bb", "true")
    case("run-bad-vol4", "run", "-v", f"{F}/ctx:relative", "bb", "true")
    case("run-bad-vol5", "run", "-v", f"{F}/ctx:/x:bogus", "bb", "true")
    case("run-bad-user", "run", "-u", "nosuch", "bb", "true")
    case("run-bad-user2", "run", "-u", ":", "bb", "true")
    case("run-bad-wd", "run", "-w", "relative", "bb", "true")
    case("run-bad-entry", "run", "--entrypoint", "/nope", "bb")
    case("run-bad-entry-empty", "run", "--entrypoint", "", "bb")
    case("run-bad-pull", "run", "--pull", "bogus", "bb", "true")
    case("run-bad-mem", "run", "-m", "abc", "bb", "true")
    case("run-bad-cpus", "run", "--cpus", "abc", "bb", "true")
    case("run-bad-cpus0", "run", "--cpus", "-1", "bb", "true")
    case("run-bad-ulimit", "run", "--ulimit", "x", "bb", "true")
    case("run-bad-hostname", "run", "-h", "", "bb", "true")
    case("run-bad-hostname2", "run", "-h", "a b!", "bb", "true")
    case("run-bad-addhost", "run", "--add-host", "x", "bb", "true")
    case("run-bad-shm", "run", "--shm-size", "zz", "bb", "true")
    case("run-digest", "run", "bb@sha256:" + "0" * 64, "true")
    case("run-badref", "run", "bb@sha256:zz", "true")
    case("run-tty-nonatty", "run", "-t", "bb", "true")
    # images/inspect/history/tag/rmi
    case("images-extra", "images", "a", "b")
    case("images-bad-filter", "images", "--filter", "bogus=1")
    case("images-bad-filter2", "images", "--filter", "noeq")
    case("images-bad-filter3", "images", "--filter", "before=nosuch")
    case("images-bad-filter4", "images", "--filter", "since=nosuch")
    case("images-bad-filter5", "images", "--filter", "dangling=maybe")
    case("images-bad-filter6", "images", "--filter", "reference=[")
    case("images-bad-format", "images", "--format", "{{.Nope}}")
    case("images-bad-format2", "images", "--format", "{{")
    case("images-bad-format3", "images", "--format", "{{json}}")
    case("images-bad-format4", "images", "--format", "{{index .Repository 5}}")
    case("images-badref", "images", "UPPER")
    case("images-badref2", "images", "a:b:c")
    case("inspect-noargs", "inspect")
    case("inspect-unknown", "inspect", "nosuch")
    case("inspect-unknown-and-known", "inspect", "bb", "nosuch")
    case("inspect-bad-format", "inspect", "-f", "{{.Nope}}", "bb")
    case("inspect-bad-format2", "inspect", "-f", "{{", "bb")
    case("inspect-bad-format3", "inspect", "-f", "{{.Config.Env.x}}", "bb")
    case("inspect-bad-format4", "inspect", "-f", "{{index .RepoTags 9}}", "bb")
    case("inspect-bad-format5", "inspect", "-f", "{{range .}}{{.}}{{end}}{{template \"x\"}}", "bb")
    case("inspect-bad-type", "inspect", "--type", "container", "bb")
    case("inspect-bad-type2", "inspect", "--type", "bogus", "bb")
    case("inspect-badref", "inspect", "UPPER")
    case("inspect-digest", "inspect", "sha256:zz")
    case("inspect-shortid-empty", "inspect", "")
    case("history-noargs", "history")
    case("history-two", "history", "bb", "bb")
    case("history-unknown", "history", "nosuch")
    case("history-H-bad", "history", "-H=maybe", "bb")
    case("history-bad-format", "history", "--format", "{{.Nope}}", "bb")
    case("history-empty", "history", "")
    case("tag-noargs", "tag")
    case("tag-one", "tag", "bb")
    case("tag-three", "tag", "bb", "a", "b")
    case("tag-unknown", "tag", "nosuch", "x")
    case("tag-upper", "tag", "bb", "UPPER")
    case("tag-digest-target", "tag", "bb", "x@sha256:" + "0" * 64)
    case("tag-long", "tag", "bb", "x:" + "t" * 129)
    case("tag-longname", "tag", "bb", "a" * 256)
    case("tag-empty", "tag", "bb", "")
    case("tag-empty-src", "tag", "", "x")
    case("tag-colon", "tag", "bb", "x:")
    case("tag-badchars", "tag", "bb", "x:t@g")
    case("rmi-noargs", "rmi")
    case("rmi-unknown", "rmi", "nosuch")
    case("rmi-upper", "rmi", "UPPER")
    case("rmi-empty", "rmi", "")
    case("rmi-id-prefix-bad", "rmi", "zz")
    case("rmi-digest-bad", "rmi", "sha256:zz")
    case("prune-extra", "prune", "x", "-f")
    case("prune-bad-keep", "prune", "--keep-storage", "abc", "-f")
    case("prune-bad-keep2", "prune", "--keep-storage", "-1", "-f")
    case("prune-bad-filter", "prune", "--filter", "x", "-f")
    case("prune-noforce-stdin-eof", "prune")
    case("store-noargs", "store")
    case("store-bogus", "store", "bogus")
    case("store-check-extra", "store", "check", "x")
    case("cache-noargs", "cache")
    case("cache-bogus", "cache", "bogus")
    case("cache-ls-bad", "cache", "ls", "--format", "{{.Nope}}")
    case("cache-ls-bad2", "cache", "ls", "--format", "bogus")
    case("cache-prune-bad-keep", "cache", "prune", "-f", "--keep-storage", "abc")
    case("cache-prune-bad-filter", "cache", "prune", "-f", "--filter", "bogus")
    case("cache-prune-bad-filter2", "cache", "prune", "-f", "--filter", "until=xx")
    case("cache-du-extra", "cache", "du", "x")
    # save / load
    case("save-noargs", "save")
    case("save-unknown", "save", "-o", f"{F}/s.tar", "nosuch")
    case("save-to-dir", "save", "-o", f"{F}/dfdir", "bb")
    case("save-to-missing-dir", "save", "-o", f"{F}/nosuchdir-save/x.tar", "bb")
    case("save-under-file", "save", "-o", f"{F}/afile/x.tar", "bb")
    case("save-empty-o", "save", "-o", "", "bb")
    case("save-tty", "save", "bb")
    case("save-bad-format", "save", "--format", "bogus", "bb")
    case("save-upper", "save", "-o", f"{F}/s.tar", "UPPER")
    case("load-missing", "load", "-i", f"{F}/nosuch.tar")
    case("load-dir", "load", "-i", f"{F}/dfdir")
    case("load-notar", "load", "-i", f"{F}/notar")
    case("load-trunc", "load", "-i", f"{F}/trunc.tar")
    case("load-empty", "load", "-i", f"{F}/emptyfile")
    case("load-tar-no-manifest", "load", "-i", f"{F}/badjson.tar")
    case("load-stdin-empty", "load")
    case("load-extra", "load", "x")
    # registry
    case("pull-noargs", "pull")
    case("pull-upper", "pull", "UPPER")
    case("pull-baddigest", "pull", "x@sha256:zz")
    case("pull-longtag", "pull", "x:" + "t" * 200)
    case("pull-empty", "pull", "")
    case("pull-unreach", "pull", "127.0.0.1:1/x")
    case("pull-two", "pull", "a", "b")
    case("pull-bad-insecure", "pull", "--insecure-registry", "", "127.0.0.1:1/x")
    case("push-noargs", "push")
    case("push-unknown", "push", "127.0.0.1:1/nosuch")
    case("push-upper", "push", "UPPER")
    case("push-unreach", "push", "bb")
    case("login-bad", "login", "127.0.0.1:1", "-u", "a", "-p", "b")
    case("login-nouser", "login", "127.0.0.1:1", "-p", "b")
    case("login-pw-stdin-and-p", "login", "127.0.0.1:1", "-u", "a", "-p", "b", "--password-stdin")
    case("login-stdin-empty", "login", "127.0.0.1:1", "-u", "a", "--password-stdin")
    case("login-empty-server", "login", "", "-u", "a", "-p", "b")
    case("login-url-server", "login", "http://127.0.0.1:1/v2/", "-u", "a", "-p", "b")
    case("login-two", "login", "a", "b")
    case("logout-never", "logout", "127.0.0.1:9")
    case("logout-two", "logout", "a", "b")
    case("logout-empty", "logout", "")
    case("search-noargs", "search")
    case("search-unreach", "search", "--registry", "127.0.0.1:1", "x")
    case("search-limit", "search", "--limit", "abc", "x")
    case("search-limit0", "search", "--limit", "0", "--registry", "127.0.0.1:1", "x")
    case("search-limit-big", "search", "--limit", "1000", "--registry", "127.0.0.1:1", "x")
    # parse/lint
    case("parse-missing", "parse", f"{F}/nosuch")
    case("parse-file", "parse", f"{F}/afile")
    case("parse-f-dir", "parse", "-f", f"{F}/dfdir")
    case("parse-stdin-empty", "parse", "-f", "-")
    case("lint-missing", "lint", f"{F}/nosuch")
    case("lint-f-dir", "lint", "-f", f"{F}/dfdir")
    case("lint-bad-arg", "lint", "--build-arg", "", f"{F}/ctx")
    case("lint-bad-target", "lint", "--target", "nosuch", f"{F}/ctx")
    case("image-ls-bad", "image", "ls", "--bogus")
    case("image-rm-noargs", "image", "rm")


# Cases where exit 0 is right (docker, buildx or BuildKit accept them too), as triaged:
OK_EXPECTED = {
    "debug-only", "root-empty", "logout-never", "logout-empty", "images-badref", "images-badref2",
    "build-df-bom", "build-df-crlf", "build-df-cmdjson", "build-df-entry", "build-df-syntax",
    "build-df-check", "build-df-deep-cont", "build-f-empty", "build-arg-NOEQ", "build-arg-A=B=C",
    "build-arg-A B=c", "build-platform-", "build-platform-LINUX/AMD64", "build-o-", "build-o-type=tar",
    "build--label-novalue", "build--call-", "build--iidfile-", "build--allow-", "build--add-host-",
    "build--no-cache-filter-nosuch", "build-load-push-oflag", "build-two-o", "build-dry-run-explain",
    "run-exit3", "run-tty-nonatty", "prune-noforce-stdin-eof", "store-noargs", "cache-noargs",
    "save-empty-o", "save-tty", "build-df-badutf8", "build-secret-id=a,env=", "build--cpu-shares--1",
    "build--annotation-bogus:k=v", "build--insecure-registry-", "build--insecure-registry-::",
    "build-check-and-call", "run-bad-vol2", "run-bad-user2", "run-bad-hostname2",
}
# a missing -o/--iidfile directory is made, a --cache-from that cannot be read is a warning, a
# --build-context or --cdi-spec-dir is read only when used (as buildx and BuildKit do)
OK_EXIT0_PREFIXES_BUILD = ("build-o-type=docker,dest=", f"build-o-{W}"[:30], "build-cache-from-",
                           "build--build-context-a=oci-layout", "build--iidfile-", "build--metadata-file-",
                           "build--cdi-spec-dir-")
OK_SILENT = {"run-exit3"}  # the container's own exit code, as docker run: no message of pybuild's
# parse prints the syntax tree and lint only the checks: a Dockerfile that fails later is fine
OK_EXIT0_PREFIXES = ("parse-df-", "lint-df-")


def run(c, root=ROOT, env=None, timeout=120, stdin=subprocess.DEVNULL):
    name, argv = c
    e = {**os.environ, "PYBUILD_ROOT": root, **(env or {})}
    cmd = [sys.executable, "-m", "builder", *argv]
    if name.startswith("nodac-"):
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, cwd=REPO, env=e, timeout=timeout, stdin=stdin)
    except subprocess.TimeoutExpired:
        return name, argv, -999, "", "TIMEOUT"
    return name, argv, p.returncode, p.stdout.decode(errors="replace")[-300:], p.stderr.decode(errors="replace")

def judge(name, rc, out, err):
    """What is wrong with one result (empty: nothing)."""
    checks = {
        "TRACEBACK": "Traceback" in err,
        "INTERNAL": "internal error" in err,
        "TIMEOUT": rc == -999,
        "EXIT0": rc == 0 and name not in OK_EXPECTED
                 and not name.startswith(OK_EXIT0_PREFIXES + OK_EXIT0_PREFIXES_BUILD),
        "EMPTY-MSG": rc not in (0, -999) and not err.strip() and name not in OK_SILENT,
        "MULTI-ERROR": err.count("ERROR") > 1,
    }
    return [problem for problem, found in checks.items() if found]

def unreadable_cases() -> list[tuple[str, list[str]]]:
    """Mode-000 files and directories, run as root without CAP_DAC_OVERRIDE (as a user sees them)."""
    u = W / "unreadable"
    u.mkdir(exist_ok=True)
    for name in ("file", "dir", "df", "ctxdir"):
        (u / name).mkdir(exist_ok=True)
        (u / name / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
        (u / name / "a").write_text("a")
    (u / "file" / "a").chmod(0)
    (u / "df" / "Dockerfile").chmod(0)
    (u / "ctxdir").chmod(0)
    (u / "locked").mkdir(mode=0, exist_ok=True)
    (u / "archive.tar").write_text("")
    (u / "archive.tar").chmod(0)
    return [
        ("nodac-copy-unreadable-file", ["build", "-q", str(u / "file")]),
        ("nodac-unreadable-dockerfile", ["build", "-q", str(u / "df")]),
        ("nodac-unreadable-context", ["build", "-q", str(u / "ctxdir")]),
        ("nodac-output-under-locked", ["build", "-q", "-o", f"type=local,dest={u}/locked/o", str(u / "dir")]),
        ("nodac-tar-under-locked", ["build", "-q", "-o", f"type=tar,dest={u}/locked/o.tar", str(u / "dir")]),
        ("nodac-iidfile-under-locked", ["build", "-q", "--iidfile", f"{u}/locked/id", str(u / "dir")]),
        ("nodac-load-unreadable", ["load", "-i", str(u / "archive.tar")]),
        ("nodac-save-under-locked", ["save", "-o", f"{u}/locked/s.tar", "bb"]),
        ("nodac-parse-unreadable", ["parse", str(u / "df")]),
        ("nodac-secret-unreadable", ["build", "-q", "--secret", f"id=s,src={u}/file/a", str(u / "dir")]),
    ]


if __name__ == "__main__":
    setup()
    make_cases()
    CASES.extend(unreadable_cases())
    only = sys.argv[1:]
    cases = [c for c in CASES if not only or any(o in c[0] for o in only)]
    with cf.ThreadPoolExecutor(2) as ex:
        results = list(ex.map(run, cases))
    bad = 0
    with open(W / "results.jsonl", "w") as f:
        for name, _argv, rc, out, err in results:
            probs = judge(name, rc, out, err)
            f.write(json.dumps(dict(name=name, rc=rc, err=err[-2000:], probs=probs)) + "\n")
            if probs:
                bad += 1
                print(f"[{','.join(probs)}] {name} rc={rc}: {err.strip().splitlines()[-1][:250] if err.strip() else out[:200]!r}")
    print(f"{len(results)} cases, {bad} flagged")
