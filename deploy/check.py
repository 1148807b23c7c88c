#!/usr/bin/env python3
"""Checks deploy/: the Containerfile, compose.yaml, entrypoint.sh and kubernetes/*.yaml.

    python3 deploy/check.py ./target/debug/browserd [--deb PATH] [--require-deb]

Needs PyYAML and kubernetes-validate (pip install pyyaml kubernetes-validate). It runs no
container and no server: it

  (a) parses compose.yaml and every document of kubernetes/*.yaml;
  (b) validates the Kubernetes manifests with kubernetes-validate, strict (unknown fields are
      errors), against Kubernetes 1.30 (the oldest they are for: appArmorProfile) and the
      newest version the package ships, and checks what a schema cannot see (Secret keys,
      Service selectors and port names, probes, the sandbox's privileges);
  (c) takes every browserd command line the files make (the entrypoint's, with each compose
      service's `command` and each Kubernetes container's `args` appended) and checks each
      --flag against `BROWSERD --help` and `BROWSERD serve --help`, then runs the binary with
      the whole command line and --help appended: clap parses and validates every flag and
      value (unknown flags, a flag given twice, a bad address or number, a value not among
      the possible ones) before it prints the help, so exit 0 means browserd accepts it.
      Every other --word in the files, comments included, must be a browserd flag or one of
      a short list of other tools' options, and every BROWSERD_* name a variable browserd
      reads (its help's [env: ...]);
  (d) runs entrypoint.sh with BROWSERD_ENTRYPOINT_DRY_RUN=1 (under /bin/sh, and dash if
      installed) and checks the command it prints, and that it refuses secrets as flags;
  (e) checks the Containerfile: its base, that it COPYs only the .deb from the build context
      (target/debian), that its ENTRYPOINT is tini and the entrypoint where the package
      installs it (/usr/share/browserd/entrypoint.sh), and that its ports, volume and health
      check agree with the entrypoint; and, when a .deb is found (--deb, or exactly one
      target/debian/browserd_*_amd64.deb), that the package ships that entrypoint, identical
      to deploy/entrypoint.sh and executable, and /usr/bin/browserd.

Prints one line per check and exits 1 if any failed.
"""

import argparse
import difflib
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("deploy/check.py needs PyYAML: pip install pyyaml kubernetes-validate")
try:
    import kubernetes_validate
except ImportError:  # pragma: no cover
    sys.exit("deploy/check.py needs kubernetes-validate: pip install pyyaml kubernetes-validate")

DEPLOY = Path(__file__).resolve().parent

# Where the browserd package installs the entrypoint (the package must ship it there, 0755).
PACKAGE_ENTRYPOINT = "/usr/share/browserd/entrypoint.sh"
ENTRYPOINT = ["/usr/bin/tini", "--", PACKAGE_ENTRYPOINT]
# What deploy/entrypoint.sh runs before the container's arguments.
EXPECTED_COMMAND = [
    "/usr/bin/browserd", "--log-format", "json", "serve",
    "--listen", "0.0.0.0:3000",
    "--data-dir", "/var/lib/browserd",
    "--metrics-listen", "0.0.0.0:9300",
]
API_PORT, METRICS_PORT, DATA_DIR = 3000, 9300, "/var/lib/browserd"
# Set by the entrypoint: giving them again is an error (or, for --log-format, a second say).
ENTRYPOINT_FLAGS = {"--log-format", "--listen", "--data-dir", "--metrics-listen"}
# Secrets: environment only.
SECRET_FLAGS = {"--api-key", "--context-key", "--database"}
SECRET_ENV = {"BROWSERD_API_KEY", "BROWSERD_CONTEXT_KEY", "BROWSERD_DATABASE"}
# The entrypoint's own variable, not browserd's.
OWN_ENV = {"BROWSERD_ENTRYPOINT_DRY_RUN"}
# The capabilities the sandbox needs on top of a runtime's defaults (Containerfile,
# "Privileges"), and the ones a Kubernetes pod that drops ALL must add back.
SANDBOX_CAPS = {"SYS_ADMIN", "NET_ADMIN"}
SANDBOX_CAPS_FROM_ALL = SANDBOX_CAPS | {
    "SYS_CHROOT", "SETUID", "SETGID", "SETPCAP", "CHOWN", "FOWNER", "DAC_OVERRIDE", "KILL",
}
# --words in the files that belong to other programs, and which.
OTHER_TOOLS_OPTIONS = {
    "--format": "podman build",
    "--name": "podman/docker run",
    "--cap-add": "podman/docker run",
    "--security-opt": "podman/docker run",
    "--env-file": "podman/docker run",
    "--privileged": "podman/docker run",
    "--profile": "docker compose",
    "--from-literal": "kubectl create secret",
    "--no-install-recommends": "apt-get",
    "--interval": "HEALTHCHECK",
    "--timeout": "HEALTHCHECK",
    "--start-period": "HEALTHCHECK",
    "--retries": "HEALTHCHECK",
    "--unshare-pid": "bwrap",
    "--unshare-net": "bwrap",
    "--mount": "nsenter",
    "--net": "nsenter",
    "--reuid": "setpriv",
    "--regid": "setpriv",
    "--clear-groups": "setpriv",
    "--bounding-set": "setpriv",
    "--no-sandbox": "chromium",
}
# Values for Kubernetes' $(VAR) expansion of fieldRef variables in args.
FIELD_SAMPLES = {"metadata.name": "browserd-node-0", "status.podIP": "10.1.2.3"}
K8S_OLDEST = "1.30"

FAILURES = []


def ok(what):
    print(f"ok    {what}")


def fail(what, why):
    FAILURES.append(what)
    print(f"FAIL  {what}: {why}")


def skip(what, why):
    print(f"skip  {what}: {why}")


def check(what, problems):
    """ok when `problems` is empty, else one FAIL listing them."""
    if problems:
        fail(what, "; ".join(problems))
    else:
        ok(what)


def rel(path):
    try:
        return str(Path(path).relative_to(DEPLOY.parent))
    except ValueError:
        return str(path)


# --- browserd's own flags and variables ------------------------------------------------------

def help_text(binary, *args):
    out = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        sys.exit(f"{binary} {' '.join(args)} --help failed ({out.returncode}): {out.stderr}")
    return out.stdout


FLAG_LINE = re.compile(r"^\s+(?:-[A-Za-z], )?(--[a-z0-9][a-z0-9-]*)", re.M)
ENV_NAME = re.compile(r"\[env: (BROWSERD_[A-Z0-9_]+)")


def browserd_interface(binary):
    top, serve = help_text(binary), help_text(binary, "serve")
    top_flags = set(FLAG_LINE.findall(top))
    serve_flags = set(FLAG_LINE.findall(serve))
    env = set(ENV_NAME.findall(top)) | set(ENV_NAME.findall(serve))
    if not top_flags or not serve_flags or not env:
        sys.exit(f"could not read flags from {binary} --help")
    print(f"      {binary}: {len(top_flags)} global flags, {len(serve_flags)} serve flags, "
          f"{len(env)} BROWSERD_* variables")
    return top_flags, serve_flags, env


def suggest(flag, known):
    close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def check_command(where, argv, binary, top_flags, serve_flags, extra_start):
    """`argv`: a full browserd command line (argv[0] the binary); `extra_start`: where the
    arguments the deployment adds to the entrypoint's begin."""
    problems = []
    if "serve" not in argv:
        return [f"no `serve` in {argv}"]
    serve_at = argv.index("serve")
    for i, arg in enumerate(argv[1:], start=1):
        if not arg.startswith("--"):
            continue
        flag = arg.split("=", 1)[0]
        known = top_flags if i < serve_at else serve_flags
        if flag not in known:
            problems.append(f"{flag} is not a browserd{'' if i < serve_at else ' serve'} "
                            f"flag{suggest(flag, known)}")
        if flag in SECRET_FLAGS:
            problems.append(f"{flag} passes a secret as a flag: use its environment variable")
        if i >= extra_start and flag in ENTRYPOINT_FLAGS:
            problems.append(f"{flag} is already set by entrypoint.sh")
    # browserd itself: clap checks every flag and value before it honours --help.
    run = subprocess.run([binary, *argv[1:], "--help"], capture_output=True, text=True,
                         timeout=60)
    if run.returncode != 0:
        first = (run.stderr.strip().splitlines() or ["(no output)"])[0]
        problems.append(f"browserd refuses the command line: {first}")
    return problems


def max_sessions(args):
    """The value of --max-sessions in `args` (either spelling), or None."""
    value = None
    for i, a in enumerate(args):
        if a.startswith("--max-sessions="):
            value = a.split("=", 1)[1]
        elif a == "--max-sessions" and i + 1 < len(args):
            value = args[i + 1]
    return value


def scan_words(files, top_flags, serve_flags, env):
    """Every --word and BROWSERD_* name anywhere in the files, comments included."""
    flags = top_flags | serve_flags
    word = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
    var = re.compile(r"\b(BROWSERD_[A-Z0-9_]+)")
    unknown, unknown_env, seen = [], [], 0
    for path in files:
        for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
            for w in word.findall(line):
                seen += 1
                if w not in flags and w not in OTHER_TOOLS_OPTIONS:
                    unknown.append(f"{rel(path)}:{n}: {w}{suggest(w, flags)}")
            for v in var.findall(line):
                if v not in env and v not in OWN_ENV:
                    unknown_env.append(f"{rel(path)}:{n}: {v}{suggest(v, env)}")
    check(f"every --word in the deploy files ({seen} found) is a browserd flag or a listed "
          "option of another tool", unknown)
    check("every BROWSERD_* name in the deploy files is a variable browserd reads", unknown_env)


# --- (d) the entrypoint ----------------------------------------------------------------------

def run_entrypoint(shell, args, env_extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_extra}
    return subprocess.run([shell, str(DEPLOY / "entrypoint.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=30)


def check_entrypoint():
    path = DEPLOY / "entrypoint.sh"
    text = path.read_text()
    problems = []
    if not text.startswith("#!/bin/sh\n"):
        problems.append("does not start with #!/bin/sh")
    if not re.search(r"^set -eu$", text, re.M):
        problems.append("no `set -eu`")
    if not os.access(path, os.X_OK):
        problems.append("not executable")
    syntax = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    if syntax.returncode != 0:
        problems.append(f"sh -n: {syntax.stderr.strip()}")
    check("entrypoint.sh: POSIX sh, set -eu, executable, parses", problems)

    shells = ["/bin/sh"] + [s for s in ["dash"] if shutil.which(s)]
    extra = ["--max-sessions", "3", "--egress-allow", "10.20.0.0/16", "a b", "it's", ""]
    for shell in shells:
        out = run_entrypoint(shell, extra, {"BROWSERD_ENTRYPOINT_DRY_RUN": "1"})
        problems = []
        if out.returncode != 0:
            problems.append(f"exit {out.returncode}: {out.stderr.strip()}")
        else:
            lines = out.stdout.splitlines()
            if len(lines) != 1:
                problems.append(f"printed {len(lines)} lines, not one")
            argv = shlex.split(out.stdout)
            if argv != EXPECTED_COMMAND + extra:
                problems.append(f"printed {argv}, expected {EXPECTED_COMMAND + extra}")
        check(f"entrypoint.sh dry run under {shell} prints {' '.join(EXPECTED_COMMAND)} "
              "and the arguments, quoted", problems)

        refused = []
        for secret in (["--api-key", "k"], ["--api-key=k"], ["--context-key=00"],
                       ["--database", "postgres://u:p@h/d"]):
            out = run_entrypoint(shell, secret, {"BROWSERD_ENTRYPOINT_DRY_RUN": "1"})
            if out.returncode == 0 or out.stdout:
                refused.append(f"{secret[0]} was accepted")
        check(f"entrypoint.sh under {shell} refuses --api-key, --context-key, --database",
              refused)
    out = run_entrypoint("/bin/sh", [], {"BROWSERD_ENTRYPOINT_DRY_RUN": "1"})
    return shlex.split(out.stdout) if out.returncode == 0 else list(EXPECTED_COMMAND)


# --- (e) the Containerfile -------------------------------------------------------------------

def containerfile_instructions(text):
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def check_containerfile(entrypoint_argv):
    text = (DEPLOY / "Containerfile").read_text()
    instructions = containerfile_instructions(text)
    by = {}
    for keyword, rest in instructions:
        by.setdefault(keyword, []).append(rest)

    check("Containerfile: FROM debian:trixie-slim",
          [] if by.get("FROM") == ["debian:trixie-slim"] else [f"FROM {by.get('FROM')}"])

    problems = []
    sample = "browserd_1.2.3_amd64.deb"
    for rest in by.get("COPY", []) + by.get("ADD", []):
        parts = shlex.split(rest)
        if any(p.startswith("--") for p in parts):
            problems.append(f"COPY {rest}: options (--from, --chown...) are not expected")
        for source in parts[:-1]:
            if "/" in source or ".." in source:
                problems.append(f"COPY source {source} is not a file at the top of the "
                                "build context (target/debian)")
            elif not fnmatch.fnmatch(sample, source) or not source.startswith("browserd_"):
                problems.append(f"COPY source {source} is not the browserd .deb that "
                                "scripts/package writes")
    if not by.get("COPY"):
        problems.append("no COPY of the .deb")
    check("Containerfile: COPYs only browserd_*_amd64.deb from the build context", problems)

    problems = []
    runs = " ".join(by.get("RUN", []))
    if not re.search(r"apt-get install [^;&|]*\btini\b", runs):
        problems.append("tini (the ENTRYPOINT's /usr/bin/tini) is not installed")
    if "/var/lib/apt/lists/*" not in runs:
        problems.append("apt lists are not removed")
    entry = by.get("ENTRYPOINT", [])
    try:
        entry_argv = json.loads(entry[-1]) if entry else None
    except json.JSONDecodeError:
        entry_argv = None
    if entry_argv != ENTRYPOINT:
        problems.append(f"ENTRYPOINT {entry} is not the exec form of {json.dumps(ENTRYPOINT)}")
    if PACKAGE_ENTRYPOINT not in runs:
        problems.append(f"the RUN does not check that the package installed {PACKAGE_ENTRYPOINT}")
    if by.get("CMD"):
        problems.append("a CMD would add arguments to every run")
    check(f"Containerfile: ENTRYPOINT tini -- {PACKAGE_ENTRYPOINT} (the package's), "
          "tini installed, apt lists cleaned", problems)

    problems = []
    exposed = {int(p.split("/")[0]) for rest in by.get("EXPOSE", []) for p in rest.split()}
    if exposed != {API_PORT, METRICS_PORT}:
        problems.append(f"EXPOSE {sorted(exposed)}, entrypoint listens on "
                        f"{API_PORT} and {METRICS_PORT}")
    if by.get("VOLUME") != [DATA_DIR]:
        problems.append(f"VOLUME {by.get('VOLUME')}, entrypoint's data dir is {DATA_DIR}")
    health = " ".join(by.get("HEALTHCHECK", []))
    if "/healthz" not in health or f"/127.0.0.1/{API_PORT}" not in health:
        problems.append("HEALTHCHECK does not GET /healthz on the API port")
    if entrypoint_argv[:len(EXPECTED_COMMAND)] != EXPECTED_COMMAND:
        problems.append("the entrypoint does not run the expected command")
    check("Containerfile: EXPOSE, VOLUME and HEALTHCHECK agree with the entrypoint", problems)
    return health


def find_deb(explicit):
    if explicit:
        return Path(explicit)
    debs = sorted((DEPLOY.parent / "target" / "debian").glob("browserd_*_amd64.deb"))
    if len(debs) == 1:
        return debs[0]
    return None if not debs else debs


def check_deb(deb, required):
    what = f"the package ships {PACKAGE_ENTRYPOINT} (0755, identical to deploy/entrypoint.sh) and /usr/bin/browserd"
    if isinstance(deb, list):
        return fail(what, f"several .debs in target/debian ({', '.join(p.name for p in deb)}): "
                          "the Containerfile needs exactly one; pass --deb")
    if deb is None:
        if required:
            return fail(what, "no target/debian/browserd_*_amd64.deb (run scripts/package)")
        return skip(what, "no target/debian/browserd_*_amd64.deb yet (scripts/package)")
    if not shutil.which("dpkg-deb"):
        return skip(what, "dpkg-deb is not installed")
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True)
    if listing.returncode != 0:
        return fail(what, f"dpkg-deb -c {deb}: {listing.stderr.strip()}")
    entries = {}
    for line in listing.stdout.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6:
            entries[fields[5].split(" -> ")[0]] = fields[0]
    problems = []
    for path, mode in (("." + PACKAGE_ENTRYPOINT, "-rwxr-xr-x"), ("./usr/bin/browserd", None)):
        if path not in entries:
            problems.append(f"{path[1:]} is not in {deb.name}")
        elif mode and entries[path] != mode:
            problems.append(f"{path[1:]} has mode {entries[path]}, not {mode}")
    if "." + PACKAGE_ENTRYPOINT in entries:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            shipped = (Path(tmp) / PACKAGE_ENTRYPOINT.lstrip("/")).read_bytes()
            if shipped != (DEPLOY / "entrypoint.sh").read_bytes():
                problems.append(f"{PACKAGE_ENTRYPOINT} in {deb.name} differs from deploy/entrypoint.sh")
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                             text=True).stdout
    for package in ("chromium", "bubblewrap", "util-linux"):
        if not re.search(rf"(^|[,|]\s*){re.escape(package)}\b", depends):
            problems.append(f"Depends lacks {package} (the sandbox and browsers need it)")
    check(f"{what} [{deb.name}]", problems)


# --- (a) compose -----------------------------------------------------------------------------

def compose_commands(compose, image):
    """(service, its command list) for each service running the browserd image."""
    out = []
    for name, service in (compose.get("services") or {}).items():
        if service.get("image") == image:
            out.append((name, service))
    return out


def check_compose(compose, entrypoint_argv, binary, top_flags, serve_flags, container_health):
    services = compose.get("services") or {}
    browserd = compose_commands(compose, "localhost/browserd:latest")
    check("compose.yaml: parses, with browserd services",
          [] if browserd else ["no service runs localhost/browserd:latest"])
    for name, service in browserd:
        problems = []
        command = service.get("command", [])
        if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
            problems.append(f"command must be a list of strings (quote YAML's on/off/yes/no "
                            f"and numbers): {command!r}")
            command = [str(a) for a in command] if isinstance(command, list) else []
        if service.get("entrypoint") is not None:
            problems.append("overrides the image's entrypoint")
        env = service.get("environment") or {}
        env_names = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
        if env_names & SECRET_ENV:
            problems.append(f"secrets in `environment` ({', '.join(sorted(env_names & SECRET_ENV))}): "
                            "use env_file")
        argv = entrypoint_argv + command
        problems += check_command(name, argv, binary, top_flags, serve_flags, len(entrypoint_argv))
        runs_browsers = max_sessions(command) != "0"
        caps = set(service.get("cap_add") or [])
        opts = set(service.get("security_opt") or [])
        if runs_browsers:
            if not SANDBOX_CAPS <= caps:
                problems.append(f"runs browsers without cap_add {sorted(SANDBOX_CAPS - caps)}")
            for opt in ("seccomp=unconfined", "apparmor=unconfined"):
                if opt not in opts:
                    problems.append(f"runs browsers without security_opt {opt}")
        elif caps:
            problems.append(f"runs no browsers but adds {sorted(caps)}")
        if service.get("privileged"):
            problems.append("privileged: true")
        targets = {str(v).split(":")[1] if isinstance(v, str) else v.get("target")
                   for v in service.get("volumes") or []}
        if DATA_DIR not in targets:
            problems.append(f"no volume on {DATA_DIR}")
        for port in service.get("ports") or []:
            inside = int(str(port).rsplit(":", 1)[-1].split("/")[0])
            if inside not in (API_PORT, METRICS_PORT):
                problems.append(f"publishes container port {inside}, browserd listens on "
                                f"{API_PORT} and {METRICS_PORT}")
        test = (service.get("healthcheck") or {}).get("test") or []
        if not test or json.dumps(test[1:]) not in container_health:
            problems.append("healthcheck differs from the Containerfile's HEALTHCHECK")
        role = "browsers" if runs_browsers else "API only"
        check(f"compose.yaml: service {name} ({role}): {' '.join(command) or '(no extra flags)'}",
              problems)
    for name, service in services.items():
        if name.startswith("x-"):
            continue
        deps = service.get("depends_on") or {}
        missing = [d for d in deps if d not in services]
        if missing:
            fail(f"compose.yaml: service {name}", f"depends on undefined {missing}")


# --- (b) Kubernetes --------------------------------------------------------------------------

def k8s_documents():
    docs = []
    files = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return files, docs


def kn(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def check_k8s_schemas(docs):
    versions = [K8S_OLDEST, kubernetes_validate.latest_version()]
    versions = sorted(set(".".join(v.split(".")[:2]) for v in versions),
                      key=lambda v: tuple(map(int, v.split("."))))
    for version in versions:
        problems = []
        for path, doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                problems.append(f"{path.name} {kn(doc)}: {where}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError,
                    kubernetes_validate.InvalidSchemaError) as e:
                problems.append(f"{path.name} {kn(doc)}: {e.message}")
        check(f"kubernetes-validate {kubernetes_validate.__version__}, strict, Kubernetes "
              f"{version}: {len(docs)} resources ({', '.join(kn(d) for _, d in docs)})",
              problems)


def pod_templates(docs):
    for path, doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            yield path, doc, doc["spec"]["template"]


def expand(arg, env):
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def check_k8s_semantics(docs, entrypoint_argv, binary, top_flags, serve_flags):
    namespaces = {d["metadata"]["name"] for _, d in docs if d["kind"] == "Namespace"}
    secrets = {}
    for _, d in docs:
        if d["kind"] == "Secret":
            keys = set((d.get("stringData") or {})) | set((d.get("data") or {}))
            secrets[(d["metadata"].get("namespace"), d["metadata"]["name"])] = keys
    services = [d for _, d in docs if d["kind"] == "Service"]

    problems = [f"{kn(d)} is in namespace {d['metadata'].get('namespace')!r}, not one of "
                f"{sorted(namespaces)}" for _, d in docs
                if d["kind"] != "Namespace" and d["metadata"].get("namespace") not in namespaces]
    check("kubernetes: every resource is in the Namespace the manifests create", problems)

    for path, doc, template in pod_templates(docs):
        ns = doc["metadata"].get("namespace")
        labels = template["metadata"].get("labels") or {}
        spec = template["spec"]
        problems = []
        selector = doc["spec"]["selector"].get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append("selector does not match the pod template's labels")
        if doc["kind"] == "StatefulSet":
            headless = [s for s in services if s["metadata"]["name"] == doc["spec"]["serviceName"]
                        and s["spec"].get("clusterIP") == "None"]
            if not headless:
                problems.append(f"serviceName {doc['spec']['serviceName']} is not a headless Service")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append("automountServiceAccountToken is not false")
        if spec.get("enableServiceLinks") is not False:
            problems.append("enableServiceLinks is not false (Service variables could look like BROWSERD_*)")
        grace = spec.get("terminationGracePeriodSeconds")
        for c in spec["containers"]:
            if "browserd" not in c.get("image", ""):
                continue
            if "command" in c:
                problems.append(f"{c['name']}: `command` replaces the image's entrypoint")
            env_list = c.get("env") or []
            env, defined = {}, set()
            for e in env_list:
                name = e["name"]
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                field = (e.get("valueFrom") or {}).get("fieldRef")
                if name in SECRET_ENV and not ref:
                    problems.append(f"{name} is not from a secretKeyRef")
                if ref and ref["key"] not in secrets.get((ns, ref["name"]), set()):
                    problems.append(f"{name}: Secret {ref['name']} has no key {ref['key']}")
                if field:
                    env[name] = FIELD_SAMPLES.get(field["fieldPath"], "sample")
                elif "value" in e:
                    env[name] = e["value"]
                defined.add(name)
            missing = SECRET_ENV - defined
            if missing:
                problems.append(f"{c['name']}: no {sorted(missing)}")
            args = c.get("args") or []
            if not all(isinstance(a, str) for a in args):
                problems.append(f"args must be strings: {args!r}")
                args = [str(a) for a in args]
            for a in args:
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var not in env:
                        problems.append(f"{a}: $({var}) is not an env var defined before it")
            argv = entrypoint_argv + [expand(a, env) for a in args]
            problems += check_command(kn(doc), argv, binary, top_flags, serve_flags,
                                      len(entrypoint_argv))
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            if ports.get("http") != API_PORT or ports.get("metrics") != METRICS_PORT:
                problems.append(f"ports {ports}: expected http {API_PORT}, metrics {METRICS_PORT}")
            probes = {k: (c.get(k) or {}).get("httpGet", {}) for k in
                      ("readinessProbe", "livenessProbe", "startupProbe")}
            if probes["readinessProbe"].get("path") != "/readyz":
                problems.append("readinessProbe is not GET /readyz")
            for k in ("livenessProbe", "startupProbe"):
                if probes[k].get("path") != "/healthz":
                    problems.append(f"{k} is not GET /healthz")
            if any(p.get("port") not in ("http", API_PORT) for p in probes.values() if p):
                problems.append("a probe is not on the API port")
            if not ((c.get("lifecycle") or {}).get("preStop")) or not grace:
                problems.append("no preStop or terminationGracePeriodSeconds")
            mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
            if DATA_DIR not in mounts:
                problems.append(f"nothing mounted on {DATA_DIR}")
            res = c.get("resources") or {}
            if not (res.get("requests") and (res.get("limits") or {}).get("memory")):
                problems.append("no resource requests and memory limit")
            sc = c.get("securityContext") or {}
            caps = sc.get("capabilities") or {}
            added, dropped = set(caps.get("add") or []), set(caps.get("drop") or [])
            gateway = max_sessions(args) == "0"
            if sc.get("privileged"):
                problems.append("privileged: true")
            if gateway:
                if added:
                    problems.append(f"runs no browsers but adds {sorted(added)}")
            else:
                need = SANDBOX_CAPS_FROM_ALL if "ALL" in dropped else SANDBOX_CAPS
                if not need <= added:
                    problems.append(f"runs browsers without capabilities {sorted(need - added)}")
                if (sc.get("seccompProfile") or {}).get("type") != "Unconfined":
                    problems.append("runs browsers without seccompProfile Unconfined (pivot_root)")
                if (sc.get("appArmorProfile") or {}).get("type") != "Unconfined":
                    problems.append("runs browsers without appArmorProfile Unconfined (mount)")
                if max_sessions(args) is None:
                    problems.append("no --max-sessions: browserd would size it from the host's memory")
                # A pod's restart kills its browsers: only a drain lets sessions finish, and
                # the grace period must outlast it.
                if "--shutdown=drain" not in args:
                    problems.append("runs browsers without --shutdown=drain (SIGTERM would cut sessions short)")
                drain = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--drain-timeout=")), 21600)
                if not grace or grace < drain:
                    problems.append(f"terminationGracePeriodSeconds {grace} is shorter than the drain ({drain} s)")
                if "/dev/shm" not in mounts:
                    problems.append("no memory-backed /dev/shm (a container's is 64 MiB)")
            role = "API only" if gateway else "browsers"
            check(f"{path.name} {kn(doc)} ({role}): {' '.join(args)}", problems)
            problems = []

    problems = []
    for s in services:
        selector = s["spec"].get("selector") or {}
        matched = [(doc, t) for _, doc, t in pod_templates(docs)
                   if all((t["metadata"].get("labels") or {}).get(k) == v
                          for k, v in selector.items())]
        if not matched:
            problems.append(f"{kn(s)} selects no pods")
        for port in s["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            for doc, t in matched:
                names = {p.get("name") for c in t["spec"]["containers"] for p in c.get("ports") or []}
                numbers = {p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports") or []}
                if target not in names and target not in numbers:
                    problems.append(f"{kn(s)} port {port.get('name')}: {kn(doc)} has no port {target}")
    for _, d in docs:
        if d["kind"] in ("NetworkPolicy", "PodDisruptionBudget"):
            sel = d["spec"].get("podSelector") or d["spec"].get("selector") or {}
            match = sel.get("matchLabels") or {}
            if not any(all((t["metadata"].get("labels") or {}).get(k) == v for k, v in match.items())
                       for _, _, t in pod_templates(docs)):
                problems.append(f"{kn(d)} selects no pods")
    check("kubernetes: Services, NetworkPolicies and the PodDisruptionBudget select pods, "
          "and Service ports name container ports", problems)


# --- main ------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("browserd", help="the browserd binary whose --help is the reference")
    parser.add_argument("--deb", help="the browserd .deb to check (default: the one in target/debian)")
    parser.add_argument("--require-deb", action="store_true", help="fail when there is no .deb")
    args = parser.parse_args()
    binary = str(Path(args.browserd).resolve())
    print(f"checking {DEPLOY}")

    top_flags, serve_flags, env = browserd_interface(binary)

    # (a) parse
    compose_path = DEPLOY / "compose.yaml"
    try:
        compose = yaml.safe_load(compose_path.read_text())
        ok(f"parse {rel(compose_path)}")
    except yaml.YAMLError as e:
        fail(f"parse {rel(compose_path)}", str(e))
        compose = {}
    try:
        k8s_files, docs = k8s_documents()
        ok(f"parse {len(k8s_files)} files in {rel(DEPLOY / 'kubernetes')}: {len(docs)} resources")
    except yaml.YAMLError as e:
        fail("parse kubernetes/*.yaml", str(e))
        k8s_files, docs = [], []

    # (d) the entrypoint, whose command the others extend
    entrypoint_argv = check_entrypoint()
    problems = check_command("entrypoint.sh", entrypoint_argv, binary, top_flags, serve_flags,
                             len(entrypoint_argv))
    check(f"entrypoint.sh's command is accepted by browserd: {' '.join(entrypoint_argv)}", problems)

    # (e) the Containerfile, and the package when there is one
    health = check_containerfile(entrypoint_argv)
    check_deb(find_deb(args.deb), args.require_deb)

    # (c) flags, in compose and Kubernetes (each checked with its file), and words anywhere
    if compose:
        check_compose(compose, entrypoint_argv, binary, top_flags, serve_flags, health)
    # (b) Kubernetes
    if docs:
        check_k8s_schemas(docs)
        check_k8s_semantics(docs, entrypoint_argv, binary, top_flags, serve_flags)
    scan_words([DEPLOY / "Containerfile", compose_path, DEPLOY / "entrypoint.sh", *k8s_files],
               top_flags, serve_flags, env)

    print()
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
