"""The Debian package, as an operator installs it: built by scripts/package, installed with
apt (which resolves its dependencies), started the way its systemd unit starts browserd (the
unit's ExecStart and EnvironmentFile, the real /var/lib/browserd), driven through the
official SDK and Playwright, then removed and purged. And deploy/check.py over the container
recipe and Kubernetes manifests, with that package.

It installs into this machine's /usr: it refuses to run where a browserd package is already
installed, and leaves the machine as it found it (user, data dir) when it made them."""

import glob
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from browserbase import Browserbase
from playwright.sync_api import sync_playwright

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = "/usr/lib/systemd/system/browserd.service"
ENV_FILE = "/etc/browserd/env"
DATA_DIR = "/var/lib/browserd"
KEY = "bd_package_test_key"


def run(*argv, check=True, **kw):
    out = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check:
        assert out.returncode == 0, f"{argv}: {out.stdout}{out.stderr}"
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def installed():
    return run("dpkg-query", "-W", "-f=${Status}", "browserd", check=False).stdout.startswith("install ok installed")


def exec_start(unit_text):
    """The unit's ExecStart command line, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", unit_text)
    line = next(l for l in joined.splitlines() if l.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def env_file(path):
    """KEY=value lines, as systemd's EnvironmentFile= reads them (no comments, no blanks)."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
    return env


@pytest.fixture(scope="module")
def deb():
    if installed():
        pytest.fail("a browserd package is installed on this machine: this test installs and purges its own, remove it first")
    run(os.path.join(REPO, "scripts", "package"), "--debug", cwd=REPO)
    debs = glob.glob(os.path.join(REPO, "target", "debian", "browserd_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def machine_as_found():
    """Puts back what installing made that purging keeps (the data dir, the system user)."""
    had_user = any(p.pw_name == "browserd" for p in pwd.getpwall())
    had_data = os.path.exists(DATA_DIR)
    yield
    if installed():
        run("dpkg", "--purge", "browserd", check=False)
    if not had_data:
        subprocess.run(["rm", "-rf", DATA_DIR])
    if not had_user:
        subprocess.run(["deluser", "--system", "browserd"], capture_output=True)
        subprocess.run(["delgroup", "--system", "browserd"], capture_output=True)


def test_the_package_installs_runs_a_session_and_purges(deb, machine_as_found):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run("apt-get", "install", "-y", "-q", deb, env=env)
    assert installed()

    # What the package put where, with the modes that matter.
    version = run("/usr/bin/browserd", "--version").stdout
    commit = run("git", "rev-parse", "--short=12", "HEAD", cwd=REPO).stdout.strip()
    assert f"(commit {commit})" in version, version
    assert stat.S_IMODE(os.stat(ENV_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(DATA_DIR).st_mode) == 0o700
    assert pwd.getpwnam("browserd").pw_shell.endswith("nologin")
    entry = "/usr/share/browserd/entrypoint.sh"
    assert os.access(entry, os.X_OK)
    with open(entry) as a, open(os.path.join(REPO, "deploy", "entrypoint.sh")) as b:
        assert a.read() == b.read()
    assert os.path.exists("/usr/share/doc/browserd/operations.md"), "the unit's Documentation="
    verify = run("systemd-analyze", "verify", UNIT, check=False)
    assert verify.returncode == 0 and "browserd.service" not in verify.stderr, verify.stderr

    # Started the way the unit starts it: its command (the ports moved to free ones, this
    # machine's 3000 may be taken), its environment file, as root, the unit's data dir.
    with open(UNIT) as f:
        unit = f.read()
    assert "EnvironmentFile=-/etc/browserd/env" in unit and "User=root" in unit
    argv = exec_start(unit)
    assert argv[0] == "/usr/bin/browserd" and "--data-dir" in argv and DATA_DIR in argv
    port, metrics = free_port(), free_port()
    argv = [a.replace("127.0.0.1:3000", f"127.0.0.1:{port}").replace("127.0.0.1:9300", f"127.0.0.1:{metrics}") for a in argv]
    with open(ENV_FILE, "a") as f:
        f.write(f"BROWSERD_API_KEY={KEY}\n")
    server_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env_file(ENV_FILE)}
    log = open(os.path.join(REPO, "target", "debian", "browserd-package-test.log"), "w")
    server = subprocess.Popen(argv, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        bb = Browserbase(api_key=KEY, base_url=base)

        def ready():
            try:
                return bb.projects.list() is not None
            except Exception:
                assert server.poll() is None, f"the installed browserd exited: {open(log.name).read()}"
                return False

        wait_until(ready, what="the installed browserd to answer")
        session = bb.sessions.create(keep_alive=True)
        assert session.status == "RUNNING"
        with sync_playwright() as p:
            browser = p.chromium.connect_over_cdp(session.connect_url)
            page = browser.contexts[0].pages[0]
            assert page.evaluate("navigator.userAgent").startswith("Mozilla/")
            assert page.evaluate("6 * 7") == 42
            browser.close()
        bb.sessions.update(session.id, status="REQUEST_RELEASE")
        assert bb.sessions.retrieve(session.id).status == "COMPLETED"
        # The session's files and the database live in the unit's data dir.
        assert os.path.exists(os.path.join(DATA_DIR, "browserd.db"))
        # A keepAlive session left running: its browser outlives the server (the unit's
        # KillMode=process), until the package is removed.
        kept = bb.sessions.create(keep_alive=True)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        log.close()
    assert code == 0, open(log.name).read()
    # (The warm pool's browsers stopped with the server: what runs on is the kept session's.)
    assert run("pgrep", "-af", DATA_DIR, check=False).stdout.strip(), f"the keepAlive browser of {kept.id} outlived browserd"

    # An upgrade (the same package again: postinst runs as for an upgrade) keeps the
    # secrets file's mode and content.
    run("apt-get", "install", "-y", "-q", "--reinstall", deb, env=env)
    assert stat.S_IMODE(os.stat(ENV_FILE).st_mode) == 0o600
    assert f"BROWSERD_API_KEY={KEY}" in open(ENV_FILE).read()

    # Removed: the session still running is ended first (its browser stopped), the binary
    # and the unit go, the secrets stay until purge, the data always.
    run("apt-get", "remove", "-y", "-q", "browserd", env=env)
    left = run("pgrep", "-af", DATA_DIR, check=False).stdout
    assert left.strip() == "", f"left running after remove: {left}"
    assert not os.path.exists("/usr/bin/browserd") and not os.path.exists(UNIT)
    assert os.path.exists(ENV_FILE), "a conffile is kept until purge"
    purge = run("dpkg", "--purge", "browserd")
    assert not os.path.exists(ENV_FILE) and not installed()
    assert os.path.exists(os.path.join(DATA_DIR, "browserd.db")), "the data is never removed"
    assert "kept" in purge.stdout
    # Nothing of it still runs.
    left = run("pgrep", "-af", "/usr/bin/browserd|" + DATA_DIR, check=False).stdout
    assert left.strip() == "", left


def test_the_deploy_files_pass_their_checks_with_this_package(deb):
    """deploy/check.py: the compose file and Kubernetes manifests parse and validate, name
    only real flags, the entrypoint starts the installed binary with the flags it should,
    and the package ships that entrypoint (the Containerfile's)."""
    out = run(sys.executable, os.path.join(REPO, "deploy", "check.py"),
              os.path.join(REPO, "target", "debug", "browserd"), "--deb", deb, "--require-deb",
              check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout
    assert "skip" not in out.stdout, out.stdout
