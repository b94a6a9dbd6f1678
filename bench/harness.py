#!/usr/bin/env python3
"""The benchmark's measuring part, started by bench/run (which installs, builds, and
cleans up). Standard library only.

It starts N OpenSSH servers on loopback (127.0.10.1 ...), one per host, each with its own
host key, all listed in one known_hosts file that every tool checks strictly; generates
each workload for each tool (lifeboat, ansible-playbook, pyinfra, the floor binary, and
scp/rsync for copies); runs every tool once per repetition in a rotating order under
GNU time; and writes the medians and per-repetition ratios to a JSON file and a Markdown
table (which bench/run puts into docs/benchmarks.md).

Every sshd it starts is recorded in WORK/pids before it is waited for, so that bench/run
can end them even when this script is killed.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

USER = "lifeboat-test"
HOME = Path("/home") / USER
DEST_ROOT = HOME / "lifeboat-bench"
SUBNET = "127.0.10."  # hosts are 127.0.10.1 .. 127.0.10.N (N <= 250)

WORKLOADS = {
    # name: hosts, kind, parameters
    "W1": dict(hosts=4, kind="cmd", steps=20, branches=1, cmd=["/bin/true"]),
    "W2@50": dict(hosts=50, kind="cmd", steps=10, branches=1, cmd=["/bin/true"]),
    "W2@200": dict(hosts=200, kind="cmd", steps=10, branches=1, cmd=["/bin/true"]),
    "W3": dict(hosts=4, kind="cmd", steps=5, branches=3, cmd=["sleep", "0.2"]),
    "W4-small": dict(hosts=4, kind="put", count=200, size=64 * 1024),
    "W4-big": dict(hosts=4, kind="put", count=1, size=512 * 1024 * 1024),
}
# lifeboat-tmpfs: the same lifeboat run with its state directory (the journal, fsync per
# record) on /dev/shm, where fsync costs nothing: what the journal's disk syncs cost.
# Workloads run as one group, so the ratio of their times is measured pair by pair.
PAIRED = [("W2@50", "W2@200")]
CMD_TOOLS = ["lifeboat", "lifeboat-tmpfs", "floor", "pyinfra", "ansible"]
PUT_TOOLS = ["lifeboat", "floor", "scp", "rsync", "pyinfra", "ansible"]
SHM_STATE = Path("/dev/shm")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_ok(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{cmd!r} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


# ---------------------------------------------------------------------------- hosts


def free_port(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def banner(addr, port):
    try:
        with socket.create_connection((addr, port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_hosts(work, n):
    """Starts n sshd servers; returns [(name, addr, port)] and writes known_hosts."""
    hdir = work / "hosts"
    hdir.mkdir()
    os.chmod(work, 0o755)
    os.chmod(hdir, 0o755)
    key = work / "id_ed25519"
    run_ok(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
    auth = hdir / "authorized_keys"
    shutil.copy(work / "id_ed25519.pub", auth)
    os.chmod(auth, 0o644)
    pending, hosts, kh = [], [], []
    pidfile = open(work / "pids", "a")
    for i in range(1, n + 1):
        name, addr = f"h{i:03d}", f"{SUBNET}{i}"
        d = hdir / name
        d.mkdir()
        os.chmod(d, 0o755)
        run_ok(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(d / "host_key")])
        pending.append((name, addr, d))
    for attempt in range(5):
        started = []
        for name, addr, d in pending:
            port = free_port(addr)
            conf = d / "sshd_config"
            conf.write_text(
                "\n".join(
                    [
                        f"ListenAddress {addr}:{port}",
                        f"HostKey {d / 'host_key'}",
                        f"PidFile {d / 'sshd.pid'}",
                        f"AuthorizedKeysFile {auth}",
                        "UsePAM no",
                        "StrictModes no",
                        "PubkeyAuthentication yes",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "MaxSessions 64",
                        "MaxStartups 400",
                        "UseDNS no",
                        "PrintMotd no",
                        f"AllowUsers {USER}",
                        "Subsystem sftp internal-sftp",
                    ]
                )
                + "\n"
            )
            p = subprocess.Popen(
                ["/usr/sbin/sshd", "-D", "-f", str(conf), "-E", str(d / "sshd.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            pidfile.write(f"{p.pid}\n")
            pidfile.flush()
            started.append((name, addr, d, port, p))
        retry = []
        deadline = time.monotonic() + 30
        for name, addr, d, port, p in started:
            while True:
                if p.poll() is not None:
                    retry.append((name, addr, d))
                    break
                if banner(addr, port):
                    hostkey = (d / "host_key.pub").read_text().strip()
                    hosts.append((name, addr, port))
                    kh.append(f"[{addr}]:{port} {hostkey}")
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"sshd for {name} did not answer on {addr}:{port}")
                time.sleep(0.02)
        if not retry:
            break
        log(f"{len(retry)} sshd did not start (port taken?), again")
        pending = retry
    else:
        raise SystemExit("some sshd servers would not start: see " + str(hdir))
    hosts.sort()
    (work / "known_hosts").write_text("\n".join(kh) + "\n")
    with open(work / "hosts.tsv", "w") as f:
        for h in hosts:
            f.write(f"{h[0]} {h[1]} {h[2]}\n")
    return hosts


# ---------------------------------------------------------------------------- workloads


def write_inventories(work, hosts, n, tag=None, kh=None):
    """INI inventory for lifeboat and ansible, python inventory for pyinfra, tsv for the
    floor: hosts{n}.ini, .py, .tsv (or {tag}.*), for the first n hosts."""
    sub = hosts[:n]
    kh = kh or work / "known_hosts"
    tag = tag or f"hosts{n}"
    key = work / "id_ed25519"
    ini = [f"[bench]"]
    for name, addr, port in sub:
        ini.append(f"{name} ansible_host={addr} ansible_port={port}")
    ini += [
        "",
        "[bench:vars]",
        f"ansible_user={USER}",
        f"ansible_ssh_private_key_file={key}",
        f"lifeboat_known_hosts={kh}",
        "lifeboat_host_key_checking=strict",
        f"ansible_ssh_extra_args='-o UserKnownHostsFile={kh} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'",
        "ansible_python_interpreter=/usr/bin/python3",
        "",
    ]
    (work / f"{tag}.ini").write_text("\n".join(ini))
    py = ["hosts = ["]
    for name, addr, port in sub:
        data = dict(
            ssh_hostname=addr,
            ssh_port=port,
            ssh_user=USER,
            ssh_key=str(key),
            ssh_known_hosts_file=str(kh),
            ssh_strict_host_key_checking="yes",
            ssh_allow_agent=False,
            ssh_look_for_keys=False,
        )
        py.append(f"    ({name!r}, {data!r}),")
    py.append("]")
    (work / f"{tag}.py").write_text("\n".join(py) + "\n")
    with open(work / f"{tag}.tsv", "w") as f:
        for name, addr, port in sub:
            f.write(f"{name} {addr} {port}\n")


def shell_words(argv):
    return " ".join(argv)


def gen_cmd(wdir, w):
    """Lifeboat playbook, ansible playbook and pyinfra deploy for a command workload."""
    cmd = shell_words(w["cmd"])
    lb = ["name: bench", "hosts: bench", "steps:"]
    tasks = []
    for b in range(w["branches"]):
        for s in range(w["steps"]):
            sid = f"b{b}s{s:02d}"
            lb.append(f"  - id: {sid}")
            if s > 0:  # each branch is a chain: steps run one after the other, like a task list
                lb.append(f"    needs: [b{b}s{s - 1:02d}]")
            lb.append(f"    command: {cmd}")
            tasks.append(sid)
    (wdir / "lifeboat.yml").write_text("\n".join(lb) + "\n")
    an = ["- hosts: bench", "  gather_facts: false", "  tasks:"]
    for sid in tasks:
        an += [f"    - name: {sid}", f"      command: {cmd}"]
    (wdir / "ansible.yml").write_text("\n".join(an) + "\n")
    pi = ["from pyinfra.operations import server", ""]
    for sid in tasks:
        pi.append(f"server.shell(name={sid!r}, commands=[{cmd!r}])")
    (wdir / "pyinfra_deploy.py").write_text("\n".join(pi) + "\n")


def gen_put(wdir, w, work):
    """Source files, and the copy playbooks for each tool; destinations are per tool and host."""
    src = wdir / "src"
    src.mkdir()
    names = []
    for i in range(w["count"]):
        name = f"f{i:03d}.bin"
        with open(src / name, "wb") as f:
            left = w["size"]
            while left > 0:  # random bytes: ssh compression (ansible's -C) cannot cheat
                n = min(left, 4 << 20)
                f.write(os.urandom(n))
                left -= n
        names.append(name)
    (wdir / "files.txt").write_text("\n".join(names) + "\n")
    dest = f"{DEST_ROOT}/TOOL/{{{{ inventory_hostname }}}}"
    lb = [
        "name: bench-copy",
        "hosts: bench",
        "vars:",
        f"  dest: {dest.replace('TOOL', 'lifeboat')}",
        "steps:",
        "  - id: mkdir",
        "    file: {path: \"{{ dest }}\", state: directory}",
        "  - id: copy",
        "    needs: [mkdir]",
        "    copy: {src: \"src/\", dest: \"{{ dest }}\"}",
    ]
    (wdir / "lifeboat.yml").write_text("\n".join(lb) + "\n")
    an = [
        "- hosts: bench",
        "  gather_facts: false",
        "  vars:",
        f"    dest: \"{dest.replace('TOOL', 'ansible')}\"",
        "  tasks:",
        "    - name: mkdir",
        "      file: {path: \"{{ dest }}\", state: directory}",
        "    - name: copy",
        "      copy: {src: \"src/\", dest: \"{{ dest }}/\"}",
    ]
    (wdir / "ansible.yml").write_text("\n".join(an) + "\n")
    pi = [
        "from pyinfra import host",
        "from pyinfra.operations import files",
        "",
        f"dest = {str(DEST_ROOT)!r} + '/pyinfra/' + host.name",
        "files.directory(name='mkdir', path=dest)",
        f"files.sync(name='copy', src={str(src)!r}, dest=dest)",
    ]
    (wdir / "pyinfra_deploy.py").write_text("\n".join(pi) + "\n")


def ssh_opts(work):
    return [
        "-i", str(work / "id_ed25519"),
        "-o", f"UserKnownHostsFile={work / 'known_hosts'}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-F", "/dev/null",
    ]


def gen_copy_scripts(wdir, w, work, hosts):
    """scp and rsync, one process per host at once, as shell scripts."""
    src = wdir / "src"
    files = " ".join(f"{src}/{n}" for n in (wdir / "files.txt").read_text().split())
    opts = " ".join(ssh_opts(work))
    for tool in ("scp", "rsync"):
        lines = ["#!/bin/bash", "set -u", "pids=()"]
        for name, addr, port in hosts[: w["hosts"]]:
            d = f"{DEST_ROOT}/{tool}/{name}"
            if tool == "scp":
                # scp makes no directories: the first command makes it, over its own login.
                lines.append(
                    f"( ssh {opts} -p {port} {USER}@{addr} mkdir -p {d} && "
                    f"scp -q {opts} -P {port} {files} {USER}@{addr}:{d}/ ) & pids+=($!)"
                )
            else:
                lines.append(
                    f"rsync -a --mkpath -e 'ssh {opts} -p {port}' {files} {USER}@{addr}:{d}/ & pids+=($!)"
                )
        lines += ["rc=0", 'for p in "${pids[@]}"; do wait "$p" || rc=1; done', "exit $rc"]
        (wdir / f"{tool}.sh").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- running


def command_for(tool, w, wdir, work, n, args, tag=None, kh=None):
    tag = tag or f"hosts{n}"
    kh = kh or work / "known_hosts"
    inv_ini = str(work / f"{tag}.ini")
    if tool in ("lifeboat", "lifeboat-tmpfs"):
        state = work / "state" if tool == "lifeboat" else SHM_STATE / f"{work.name}-state"
        return [
            args.lifeboat, "run", str(wdir / "lifeboat.yml"), "-i", inv_ini,
            "--forks", str(n), "--state-dir", str(state), "--lock-dir", str(DEST_ROOT / "locks"),
        ]
    if tool == "ansible":
        return [
            str(args.venv / "bin" / "ansible-playbook"), "-i", inv_ini,
            "--forks", str(n), str(wdir / "ansible.yml"),
        ]
    if tool == "pyinfra":
        return [
            str(args.venv / "bin" / "pyinfra"), "-y", "--parallel", str(n),
            str(work / f"{tag}.py"), str(wdir / "pyinfra_deploy.py"),
        ]
    floor = [
        args.floor, "cmd" if w["kind"] == "cmd" else "put",
        "--hosts", str(work / f"{tag}.tsv"), "--key", str(work / "id_ed25519"),
        "--known-hosts", str(kh), "--user", USER,
    ]
    if tool == "floor" and w["kind"] == "cmd":
        return floor + ["--steps", str(w["steps"]), "--branches", str(w["branches"]), "--"] + w["cmd"]
    if tool == "floor":
        files = [str(wdir / "src" / f) for f in (wdir / "files.txt").read_text().split()]
        return floor + ["--dest", f"{DEST_ROOT}/floor/{{host}}", "--"] + files
    if tool in ("scp", "rsync"):
        return ["bash", str(wdir / f"{tool}.sh")]
    raise ValueError(tool)


def tool_env(work):
    env = dict(os.environ)
    env.pop("SSH_AUTH_SOCK", None)
    env.update(
        NO_COLOR="1",
        LIFEBOAT_SSH_CONFIG="none",
        ANSIBLE_CONFIG=str(work / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-local"),
        PYTHONDONTWRITEBYTECODE="",
    )
    return env


def write_ansible_cfg(work):
    cp = work / "cp"
    cp.mkdir(exist_ok=True)
    (work / "ansible.cfg").write_text(
        "\n".join(
            [
                "[defaults]",
                "host_key_checking = True",
                "retry_files_enabled = False",
                "",
                "[ssh_connection]",
                "pipelining = True",
                # ssh_args stay the default: -C -o ControlMaster=auto -o ControlPersist=60s
                f"control_path_dir = {cp}",
                "",
            ]
        )
    )


def proc_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def persisted_masters(work):
    """ssh ControlPersist masters that ansible left behind (they hold our control_path_dir)."""
    mark = str(work / "cp")
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit() and int(e) != os.getpid():
            c = proc_cmdline(e)
            if c.startswith("ssh") and mark in c:
                out.append(int(e))
    return out


def proc_cpu_rss(pid):
    """(user+system seconds, peak RSS KiB) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        f = stat[stat.rfind(")") + 2 :].split()
        cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        hwm = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        return cpu, hwm
    except (OSError, ValueError, IndexError):
        return 0.0, 0


def end_masters(work):
    """Adds up the masters' CPU (their time is not in ansible's rusage: they detach), then
    ends them by pid, so that the next run starts without connections like every other tool."""
    cpu, rss = 0.0, 0
    pids = persisted_masters(work)
    for p in pids:
        c, r = proc_cpu_rss(p)
        cpu += c
        rss = max(rss, r)
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and "ssh" in proc_cmdline(p)]
        time.sleep(0.02)
    return cpu, rss


def clean_dest():
    if DEST_ROOT.exists():
        shutil.rmtree(DEST_ROOT)
    DEST_ROOT.mkdir(parents=True)
    for t in PUT_TOOLS:
        (DEST_ROOT / t).mkdir()
    run_ok(["chown", "-R", f"{USER}:{USER}", str(DEST_ROOT)])


def check_copies(w, tool, hosts):
    """Every host got every file, at its size."""
    for name, _, _ in hosts[: w["hosts"]]:
        d = DEST_ROOT / tool / name
        files = [f for f in d.iterdir() if f.is_file()] if d.is_dir() else []
        if len(files) != w["count"] or any(f.stat().st_size != w["size"] for f in files):
            return f"{d}: {len(files)} files, expected {w['count']} of {w['size']} bytes"
    return None


def busy_ticks():
    """Clock ticks the machine's CPUs have spent busy so far (idle, iowait and steal
    left out), from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(v) - v[3] - v[4] - v[7]


def settle(limit=10.0):
    """Waits until the machine is quiet (under a tenth of a core busy over 200 ms), at
    most `limit` seconds: what one run leaves behind (sshd sessions closing, a tool's
    ssh masters ending) must not fall on the next."""
    deadline = time.monotonic() + limit
    window = 0.2
    quiet = 0.1 * window * os.sysconf("SC_CLK_TCK")
    while time.monotonic() < deadline:
        b0 = busy_ticks()
        time.sleep(window)
        if busy_ticks() - b0 <= quiet:
            return


def measure(tool, cmd, cwd, env, logf, timeout):
    settle()
    tf = cwd / ".time"
    t0 = time.perf_counter()
    with open(logf, "ab") as lf:
        lf.write(f"\n$ {' '.join(cmd)}\n".encode())
        lf.flush()
        p = subprocess.Popen(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", str(tf)] + cmd,
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
            start_new_session=True,
        )
        # A blocking wait, so the end is seen when it happens: `wait(timeout=...)`
        # polls, sleeping up to 50 ms between looks, which rounded every run longer
        # than 64 ms up to the next of 114, 164, 214 ms... The timeout is a timer's.
        expired = threading.Event()

        def kill():
            expired.set()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        rc = p.wait()
        wall = time.perf_counter() - t0
        timer.cancel()
        if expired.is_set():
            rc = "timeout"
    try:
        u, s, m = tf.read_text().strip().splitlines()[-1].split()
        cpu, rss_kib = float(u) + float(s), int(m)
    except (OSError, ValueError):
        cpu, rss_kib = float("nan"), 0
    return rc, wall, cpu, rss_kib


def check_strict(work, hosts, args):
    """Every tool must refuse a host whose key is not the one in its known_hosts: one step
    on h001 with a known_hosts that names another key for it must fail, for every tool."""
    run_ok(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(work / "wrong_key")])
    name, addr, port = hosts[0]
    wrong = work / "known_hosts_wrong"
    wrong.write_text(f"[{addr}]:{port} {(work / 'wrong_key.pub').read_text().strip()}\n")
    write_inventories(work, hosts, 1, tag="wrongkey", kh=wrong)
    d = work / "strict"
    d.mkdir()
    w = dict(hosts=1, kind="cmd", steps=1, branches=1, cmd=["/bin/true"])
    gen_cmd(d, w)
    env = tool_env(work)
    for tool in CMD_TOOLS:
        if tool not in args.tools and tool != "lifeboat":
            continue
        cmd = command_for(tool, w, d, work, 1, args, tag="wrongkey", kh=wrong)
        rc, *_ = measure(tool, cmd, d, env, d / "log", 300)
        if tool == "ansible":
            end_masters(work)
        if rc == 0:
            raise SystemExit(f"{tool} accepted a host key that is not in its known_hosts: see {d / 'log'}")
        log(f"strict host key checking: {tool} refused the wrong key (exit {rc})")


def groups(names):
    """The workloads to run together, in the order named: W2's two sizes form one group
    (their ratio is a target), every other workload is a group of its own."""
    out = []
    for w in names:
        pair = next((p for p in PAIRED if w in p), None)
        if pair and all(x in names for x in pair):
            if w == pair[0]:
                out.append(list(pair))
        else:
            out.append([w])
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_workloads(wnames, work, hosts, args, results):
    """Runs the workloads of one group, `--reps` times. Each repetition runs every tool
    (in an order that rotates between repetitions) on every workload of the group, one
    right after the other (in an order that alternates), so a ratio between two
    workloads of a group (W2's 200 hosts to its 50) is measured pair by pair, as the
    ratios between tools are, and the load the runs leave behind falls on both alike."""
    spec = {wn: WORKLOADS[wn] for wn in wnames}
    tools = []
    for wn in wnames:
        w = spec[wn]
        for t in CMD_TOOLS if w["kind"] == "cmd" else PUT_TOOLS:
            if t not in tools and (t in args.tools or t == "lifeboat"):
                tools.append(t)
    runs = {wn: [t for t in tools if t in (CMD_TOOLS if spec[wn]["kind"] == "cmd" else PUT_TOOLS)] for wn in wnames}
    runs = {wn: [t for t in ts if f"{t}@{wn}" not in args.skip or t == "lifeboat"] for wn, ts in runs.items()}
    wdirs, logs = {}, {}
    for wn in wnames:
        w = spec[wn]
        wdir = work / wn
        wdir.mkdir()
        if w["kind"] == "cmd":
            gen_cmd(wdir, w)
        else:
            gen_put(wdir, w, work)
            gen_copy_scripts(wdir, w, work, hosts)
        wdirs[wn], logs[wn] = wdir, wdir / "log"
    env = tool_env(work)
    load0 = {wn: loadavg() for wn in wnames}
    res = {wn: {t: [] for t in runs[wn]} for wn in wnames}
    for rep in range(args.reps):
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        sizes = wnames if rep % 2 == 0 else wnames[::-1]
        for tool in order:
            for wname in sizes:
                if tool not in runs[wname]:
                    continue
                w, wdir, logf = spec[wname], wdirs[wname], logs[wname]
                if w["kind"] == "put":
                    clean_dest()
                cmd = command_for(tool, w, wdir, work, w["hosts"], args)
                rc, wall, cpu, rss = measure(tool, cmd, wdir, env, logf, args.timeout)
                if tool == "ansible":
                    mcpu, mrss = end_masters(work)
                    cpu += mcpu
                    rss = max(rss, mrss)
                err = None if rc == 0 else f"exit {rc}"
                if err is None and w["kind"] == "put":
                    err = check_copies(w, tool, hosts)
                if err:
                    log(f"{wname} {tool} rep {rep + 1}: FAILED ({err}); see {logf}")
                res[wname][tool].append(dict(wall=wall, cpu=cpu, rss_mib=rss / 1024, error=err))
                log(f"{wname} rep {rep + 1}/{args.reps} {tool:8s} wall {wall:8.3f} s  cpu {cpu:7.3f} s  rss {rss / 1024:7.1f} MiB{'  ' + err if err else ''}")
    for wname in wnames:
        if spec[wname]["kind"] == "put":
            clean_dest()
        out = {}
        for t in runs[wname]:
            out[t] = summary(res[wname][t], res[wname]["lifeboat"])
        results["workloads"][wname] = dict(
            spec=dict(spec[wname]), tools=out, load_at_start=load0[wname], load_at_end=loadavg()
        )
    if len(wnames) == 2:
        # How the second workload's time compares with the first's, run by run.
        small, big = wnames
        scaling = {}
        for t in runs[small]:
            if t not in runs[big]:
                continue
            pairs = [
                b["wall"] / a["wall"]
                for a, b in zip(res[small][t], res[big][t])
                if not a["error"] and not b["error"]
            ]
            scaling[t] = dict(pairs=pairs, ratio=med(pairs))
        results.setdefault("scaling", {})[f"{small}->{big}"] = scaling
    write_json(args, results)


def summary(runs, lifeboat_runs):
    """Medians of a tool's runs, and of its wall time over lifeboat's, repetition by
    repetition."""
    ok = [r for r in runs if not r["error"]]
    ratios = [
        r["wall"] / lb["wall"]
        for r, lb in zip(runs, lifeboat_runs)
        if not r["error"] and not lb["error"]
    ]
    return dict(
        runs=runs,
        ok=len(ok),
        wall=med([r["wall"] for r in ok]),
        cpu=med([r["cpu"] for r in ok]),
        rss_mib=med([r["rss_mib"] for r in ok]),
        ratio=med(ratios),
    )


def run_per_step(work, args, results):
    """The engine's cost per step and per run over the floor, apart: lifeboat and the
    floor, interleaved, on W1's 4 hosts with a chain of 1 and of 41 steps, many times
    (each run is short; W1's few repetitions cannot tell 20 ms apart on a loaded
    machine). Per run: the difference at 1 step. Per step: the difference of the
    slopes between 1 and 41 steps."""
    lengths = (1, 41)
    tools = [t for t in ("lifeboat", "floor") if t in args.tools or t == "lifeboat"]
    if "floor" not in tools or args.step_reps < 1:
        return
    env = tool_env(work)
    walls = {(t, k): [] for t in tools for k in lengths}
    chains = {k: dict(hosts=4, kind="cmd", steps=k, branches=1, cmd=["/bin/true"]) for k in lengths}
    dirs = {}
    for k in lengths:
        d = work / f"chain-{k}"
        d.mkdir()
        gen_cmd(d, chains[k])
        dirs[k] = d
    for rep in range(args.step_reps):
        for k in lengths:
            for tool in tools if rep % 2 == 0 else tools[::-1]:
                cmd = command_for(tool, chains[k], dirs[k], work, 4, args)
                rc, wall, _, _ = measure(tool, cmd, dirs[k], env, dirs[k] / "log", args.timeout)
                if rc != 0:
                    raise SystemExit(f"per-step chains: {tool} failed (exit {rc}); see {dirs[k] / 'log'}")
                walls[(tool, k)].append(wall)
    m = {key: med(v) for key, v in walls.items()}
    per_run = m[("lifeboat", 1)] - m[("floor", 1)]
    span = lengths[1] - lengths[0]
    slope = {t: (m[(t, lengths[1])] - m[(t, lengths[0])]) / span for t in tools}
    per_step = slope["lifeboat"] - slope["floor"]
    at_20 = (per_run + 19 * per_step) / 20
    results["per_step"] = dict(
        reps=args.step_reps,
        lengths=list(lengths),
        medians={f"{t}@{k}": m[(t, k)] for t, k in walls},
        per_run=per_run,
        per_step=per_step,
        at_20=at_20,
    )
    log(
        f"per-step chains ({args.step_reps} reps): per run {per_run * 1000:.1f} ms, per step "
        f"{per_step * 1000:.2f} ms over the floor; at 20 steps {at_20 * 1000:.2f} ms per step"
    )
    write_json(args, results)


def write_json(args, results):
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(args.out)


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def machine():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        mem_gib=round(int(mem) / 1024 / 1024, 1),
        kernel=platform.release(),
        os=(Path("/etc/os-release").read_text().split('PRETTY_NAME="', 1)[-1].split('"')[0]
            if Path("/etc/os-release").exists() else "?"),
    )


def versions(args):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001 - a version is informative only
            return f"? ({e})"

    return dict(
        lifeboat=first_line([args.lifeboat, "--version"]),
        ansible=first_line([str(args.venv / "bin" / "ansible-playbook"), "--version"]),
        pyinfra=first_line([str(args.venv / "bin" / "pyinfra"), "--version"]).replace("pyinfra: ", ""),
        openssh=first_line(["ssh", "-V"]),
        rsync=first_line(["rsync", "--version"]),
        python=sys.version.split()[0],
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--tools", default="lifeboat,lifeboat-tmpfs,floor,pyinfra,ansible,scp,rsync")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip", default="", help="TOOL@WORKLOAD pairs not to run, comma separated")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--lifeboat", required=True)
    ap.add_argument("--floor", required=True)
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--load-note", default="")
    ap.add_argument("--step-reps", type=int, default=25)
    args = ap.parse_args()
    args.tools = set(args.tools.split(","))
    args.skip = set(x for x in args.skip.split(",") if x)
    names = [w for w in args.workloads.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    if not 1 <= args.reps <= 100:
        raise SystemExit("--reps must be 1..100")
    work = args.work
    nmax = max(WORKLOADS[w]["hosts"] for w in names)
    log(f"starting {nmax} sshd servers on {SUBNET}1..{nmax}")
    hosts = start_hosts(work, nmax)
    for n in sorted({WORKLOADS[w]["hosts"] for w in names} | {4}):
        write_inventories(work, hosts, n)
    write_ansible_cfg(work)
    (work / "ansible-local").mkdir(exist_ok=True)
    results = dict(
        started=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        reps=args.reps,
        skipped=sorted(args.skip),
        machine=machine(),
        versions=versions(args),
        load_before=loadavg(),
        load_note=args.load_note,
        workloads={},
    )
    # One untimed run of every tool first (Python byte-code, page cache, binaries).
    log("warm-up: W1 once per tool, untimed")
    warm = work / "warmup"
    warm.mkdir()
    gen_cmd(warm, WORKLOADS["W1"])
    env = tool_env(work)
    for tool in CMD_TOOLS:
        if tool in args.tools or tool == "lifeboat":
            rc, *_ = measure(tool, command_for(tool, WORKLOADS["W1"], warm, work, 4, args), warm, env, warm / "log", args.timeout)
            if tool == "ansible":
                end_masters(work)
            if rc != 0:
                raise SystemExit(f"warm-up: {tool} failed (exit {rc}); see {warm / 'log'}")
    check_strict(work, hosts, args)
    for group in groups(names):
        for w in group:
            log(f"workload {w}: {WORKLOADS[w]}")
        run_workloads(group, work, hosts, args, results)
        if "W1" in group:
            log(f"per-step chains: lifeboat and the floor at 1 and 41 steps, {args.step_reps} times")
            run_per_step(work, args, results)
    shutil.rmtree(SHM_STATE / f"{work.name}-state", ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    results["load_after"] = loadavg()
    write_json(args, results)
    log(f"results: {args.out}")


if __name__ == "__main__":
    main()
