#!/usr/bin/env python3
"""W5: what a physical backup buys at restore time, measured on one MariaDB server.

A private MariaDB server (its own datadir, socket and loopback port under the work
directory, started and stopped by a control script as a service manager would) is filled
with at least --size-gib GiB of nova-like rows (generated here, nothing shipped). Then, in
one run, on the same server:

1. lifeboat's physical full backup (`mariadb_backup` action full);
2. 1 % of the rows change;
3. the Operations Guide's logical backup: `mysqldump --opt --all-databases | gzip`;
4. lifeboat's incremental backup on top of the full one (the same moment as the dump);
5. the SQL restore: the nova databases are dropped, then `gunzip < dump | mysql`, until
   the server answers with the data (the RTO of the logical path);
6. lifeboat's physical restore of the chain (full + incremental): prepare, stop, move
   aside, move back, start, until the server answers (the RTO of the physical path).

After each restore the tables' CHECKSUM TABLE must equal those taken at the backup.
Wall times, bytes on disk and the ratios go to --out (JSON) and into docs/benchmarks.md
between the `<!-- bench:w5 -->` markers.

Needs root, mariadb-server, mariadb-client, mariadb-backup and zstd (bench/run installs them).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

START = "<!-- bench:w5:start -->"
END = "<!-- bench:w5:end -->"
DATABASES = ["nova", "nova_api", "nova_cell0"]


def log(msg):
    print(f"[w5 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def du(path):
    """Bytes under path, the redo log left out (its size is fixed by the server's settings)."""
    out = subprocess.run(["du", "-sb", "--exclude=ib_logfile*", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


class Server:
    """A MariaDB server under a control script (start | stop | status)."""

    def __init__(self, work):
        self.dir = work / "server"
        self.data = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.port = free_port()
        (self.dir / "tmp").mkdir(parents=True)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", f"--tmpdir={self.dir / 'tmp'}",
             "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        command = " ".join([
            "/usr/sbin/mariadbd", "--no-defaults", "--user=root", f"--datadir={self.data}",
            f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--pid-file={self.dir / 'mysqld.pid'}", f"--tmpdir={self.dir / 'tmp'}",
            f"--log-error={self.dir / 'error.log'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=2G", "--innodb-log-file-size=512M",
            "--max-allowed-packet=256M",
        ])
        self.ctl = self.dir / "ctl"
        self.ctl.write_text(f"""#!/bin/sh
dir='{self.dir}'
alive() {{ pid=$(cat "$dir/mysqld.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" | cut -c1)" != Z ]; }}
case "$1" in
start) alive && exit 0; setsid {command} < /dev/null >> "$dir/ctl.log" 2>&1 & ;;
stop) alive || exit 0; kill "$pid"; i=0; while alive; do i=$((i + 1)); [ "$i" -lt 6000 ] || exit 1; sleep 0.05; done ;;
status) alive ;;
esac
""")
        self.ctl.chmod(0o755)
        subprocess.run([str(self.ctl), "start"], check=True)
        self.wait_answers(120)

    def client(self):
        return ["mariadb", "--no-defaults", "-uroot", f"--socket={self.socket}"]

    def sql(self, text, timeout=3600):
        out = subprocess.run(self.client() + ["--batch", "--skip-column-names"], input=text,
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise SystemExit(f"SQL failed: {out.stderr}\n{text[:500]}")
        return out.stdout

    def answers(self):
        return subprocess.run(self.client() + ["-e", "SELECT COUNT(*) FROM nova.instances"],
                              capture_output=True).returncode == 0

    def wait_answers(self, limit):
        deadline = time.monotonic() + limit
        while subprocess.run(self.client() + ["-e", "SELECT 1"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"the server does not answer: {(self.dir / 'error.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self):
        subprocess.run([str(self.ctl), "stop"], check=False)

    def checksums(self):
        tables = self.sql(
            "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables "
            f"WHERE table_schema IN ({', '.join(repr(d) for d in DATABASES)}) AND table_type = 'BASE TABLE' ORDER BY 1"
        ).split()
        rows = self.sql(f"CHECKSUM TABLE {', '.join(tables)}").splitlines()
        return dict(r.split("\t") for r in rows)


def generate(server, size_gib):
    """nova-like tables: instances with their metadata, actions and their events, block
    device mappings; rows added in batches until the datadir holds size_gib GiB."""
    server.sql("""
CREATE DATABASE nova; CREATE DATABASE nova_api; CREATE DATABASE nova_cell0;
USE nova;
CREATE TABLE instances (
  id INT AUTO_INCREMENT PRIMARY KEY, uuid CHAR(36) NOT NULL, hostname VARCHAR(255),
  display_name VARCHAR(255), vm_state VARCHAR(255), task_state VARCHAR(255), power_state INT,
  memory_mb INT, vcpus INT, root_gb INT, host VARCHAR(255), node VARCHAR(255),
  user_id VARCHAR(255), project_id VARCHAR(255), image_ref VARCHAR(255), key_data MEDIUMTEXT,
  user_data MEDIUMTEXT, system_metadata TEXT, created_at DATETIME, updated_at DATETIME,
  deleted INT NOT NULL DEFAULT 0, KEY (uuid), KEY (project_id, deleted)
) ENGINE=InnoDB;
CREATE TABLE instance_actions_events (
  id INT AUTO_INCREMENT PRIMARY KEY, action_id INT, event VARCHAR(255), result VARCHAR(255),
  traceback TEXT, start_time DATETIME, finish_time DATETIME, host VARCHAR(255), details TEXT,
  KEY (action_id)
) ENGINE=InnoDB;
CREATE TABLE block_device_mapping (
  id INT AUTO_INCREMENT PRIMARY KEY, instance_uuid CHAR(36), device_name VARCHAR(255),
  volume_id VARCHAR(36), connection_info MEDIUMTEXT, boot_index INT, deleted INT DEFAULT 0,
  KEY (instance_uuid)
) ENGINE=InnoDB;
USE nova_api;
CREATE TABLE request_specs (id INT AUTO_INCREMENT PRIMARY KEY, instance_uuid CHAR(36), spec MEDIUMTEXT) ENGINE=InnoDB;
USE nova_cell0;
CREATE TABLE instance_faults (id INT AUTO_INCREMENT PRIMARY KEY, instance_uuid CHAR(36), code INT, message VARCHAR(255), details MEDIUMTEXT) ENGINE=InnoDB;
""")
    batch = 20000
    target = size_gib * 1024 ** 3
    n = 0
    while du(server.data) < target:
        lo = n * batch
        server.sql(f"""
USE nova;
INSERT INTO instances (uuid, hostname, display_name, vm_state, task_state, power_state, memory_mb,
  vcpus, root_gb, host, node, user_id, project_id, image_ref, key_data, user_data, system_metadata,
  created_at, updated_at)
SELECT UUID(), CONCAT('vm-', {lo} + seq), CONCAT('server ', {lo} + seq), ELT(1 + seq % 3, 'active', 'stopped', 'error'),
  NULL, 1, 512 * (1 + seq % 16), 1 + seq % 8, 20 + seq % 80, CONCAT('compute', seq % 40), CONCAT('compute', seq % 40),
  MD5(CONCAT('u', seq % 500)), MD5(CONCAT('p', seq % 200)), UUID(),
  CONCAT('ssh-ed25519 ', TO_BASE64(RANDOM_BYTES(64)), ' user@host'),
  TO_BASE64(RANDOM_BYTES(600)),
  CONCAT('{{"image_min_disk": "', seq % 40, '", "image_hw_disk_bus": "virtio", "image_os_distro": "ubuntu", "flavor": "m1.', ELT(1 + seq % 4, 'small', 'medium', 'large', 'xlarge'), '", "notes": "', REPEAT('metadata ', 20), '"}}'),
  '2023-01-01' + INTERVAL ({lo} + seq) MINUTE, NOW()
FROM seq_1_to_{batch};
INSERT INTO instance_actions_events (action_id, event, result, traceback, start_time, finish_time, host, details)
SELECT {lo} + seq, ELT(1 + seq % 4, 'compute__do_build_and_run_instance', 'compute_stop_instance', 'compute_start_instance', 'compute_reboot_instance'),
  ELT(1 + seq % 10, 'Success', 'Success', 'Success', 'Success', 'Success', 'Success', 'Success', 'Success', 'Success', 'Error'),
  IF(seq % 10 = 9, CONCAT('Traceback (most recent call last):\\n', REPEAT('  File "/usr/lib/python3/dist-packages/nova/compute/manager.py", line 2437, in _build_and_run_instance\\n', 4), TO_BASE64(RANDOM_BYTES(120))), NULL),
  NOW(), NOW(), CONCAT('compute', seq % 40), TO_BASE64(RANDOM_BYTES(300))
FROM seq_1_to_{batch};
INSERT INTO block_device_mapping (instance_uuid, device_name, volume_id, connection_info, boot_index)
SELECT UUID(), '/dev/vda', UUID(), CONCAT('{{"driver_volume_type": "rbd", "data": {{"name": "volumes/volume-', UUID(), '", "secret": "', TO_BASE64(RANDOM_BYTES(90)), '"}}}}'), 0
FROM seq_1_to_{batch};
USE nova_api;
INSERT INTO request_specs (instance_uuid, spec) SELECT UUID(), CONCAT('{{"nova_object.name": "RequestSpec", "nova_object.data": {{"flavor": "', TO_BASE64(RANDOM_BYTES(200)), '"}}}}') FROM seq_1_to_{batch // 4};
""")
        n += 1
        if n % 10 == 0:
            log(f"generated {n * batch} instances, datadir {du(server.data) / 1024 ** 3:.2f} GiB")
    server.sql("USE nova_cell0; INSERT INTO instance_faults (instance_uuid, code, message, details) "
               "SELECT UUID(), 500, 'No valid host was found.', TO_BASE64(RANDOM_BYTES(500)) FROM seq_1_to_20000;")
    rows = int(server.sql("SELECT COUNT(*) FROM nova.instances").strip())
    return rows


def timed(cmd, **kw):
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"{cmd if isinstance(cmd, str) else ' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return wall, out


def lifeboat_step(args, work, server, name, module_args):
    """Runs one mariadb_backup step with lifeboat (the release build, its journal on)."""
    pb = work / f"{name}.yml"
    lines = [f"name: w5-{name}", "steps:", f"  - id: {name}", "    mariadb_backup:"]
    for k, v in module_args.items():
        lines.append(f"      {k}: {json.dumps(v)}")
    lines.append("    register: r")
    result = work / f"{name}.result.json"
    lines += ["  - id: keep-result", "    needs: [" + name + "]", "    copy:",
              f"      dest: {json.dumps(str(result))}", '      content: "{{ r.data | to_json }}"']
    pb.write_text("\n".join(lines) + "\n")
    wall, _ = timed([args.lifeboat, "run", str(pb), "--state-dir", str(work / "state"),
                     "--lock-dir", str(work / "locks")],
                    env={**os.environ, "NO_COLOR": "1"})
    data = json.loads(result.read_text())
    return wall, data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lifeboat", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--doc")
    p.add_argument("--size-gib", type=float, default=2.0)
    p.add_argument("--changed-percent", type=float, default=1.0)
    args = p.parse_args()
    work = Path(args.work) / "w5"
    work.mkdir(parents=True)
    server = Server(work)
    try:
        r = run(args, work, server)
    finally:
        server.stop()
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    table = render(r)
    print(table)
    if args.doc:
        doc = Path(args.doc)
        text = doc.read_text()
        if START not in text:
            text = text.rstrip("\n") + f"\n\n## W5: physical against logical database backups\n\n{START}\n{END}\n"
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        doc.write_text(f"{head}{START}\n{table}\n{END}{tail}")


def run(args, work, server):
    store = work / "chains"
    store.mkdir()
    login = {"login_socket": str(server.socket), "login_user": "root"}
    log(f"generating {args.size_gib} GiB of nova-like rows")
    t0 = time.monotonic()
    rows = generate(server, args.size_gib)
    gen_secs = time.monotonic() - t0
    datadir_bytes = du(server.data)
    log(f"{rows} instances, datadir {datadir_bytes / 1024 ** 3:.2f} GiB, in {gen_secs:.0f} s")
    # A server in its steady state: a clean restart writes a checkpoint, as hours of
    # running would (right after the load, the checkpoint lags the whole load behind, and
    # an incremental backup copies every page written since it).
    server.stop()
    subprocess.run([str(server.ctl), "start"], check=True)
    server.wait_answers(600)
    subprocess.run(["sync"], check=True)

    log("physical full backup (lifeboat)")
    full_wall, full = lifeboat_step(args, work, server, "full", {"action": "full", "dir": str(store), **login})

    every = round(100 / args.changed_percent)
    log(f"changing {args.changed_percent} % of the rows")
    server.sql(f"USE nova; UPDATE instances SET vm_state = 'migrating', task_state = 'resize_prep', updated_at = NOW() WHERE id % {every} = 0; "
               f"UPDATE instance_actions_events SET result = 'Error', details = TO_BASE64(RANDOM_BYTES(300)) WHERE id % {every} = 0; "
               f"UPDATE block_device_mapping SET boot_index = 1 WHERE id % {every} = 0; "
               f"USE nova_api; UPDATE request_specs SET spec = CONCAT(spec, ' ') WHERE id % {every} = 0;")
    changed = int(server.sql(f"SELECT COUNT(*) FROM nova.instances WHERE id % {every} = 0").strip())

    log("logical backup: mysqldump --opt --all-databases | gzip")
    dump = work / "all.sql.gz"
    dump_wall, _ = timed(["bash", "-c", f"set -o pipefail; mysqldump --no-defaults -uroot --socket={server.socket} --opt --all-databases | gzip > {dump}"])

    log("physical incremental backup (lifeboat)")
    inc_wall, inc = lifeboat_step(args, work, server, "incremental", {"action": "incremental", "dir": str(store), **login})
    at_backup = server.checksums()

    log("SQL restore: drop the nova databases, gunzip | mysql")
    server.sql("DROP DATABASE nova; DROP DATABASE nova_api; DROP DATABASE nova_cell0;")
    t0 = time.monotonic()
    timed(["bash", "-c", f"set -o pipefail; gunzip < {dump} | mariadb --no-defaults -uroot --socket={server.socket}"])
    while not server.answers():
        time.sleep(0.05)
    sql_rto = time.monotonic() - t0
    sql_ok = server.checksums() == at_backup
    log(f"SQL restore: {sql_rto:.1f} s, checksums {'identical' if sql_ok else 'DIFFERENT'}")

    log("physical restore of the chain (lifeboat)")
    server.sql("DROP DATABASE nova;")
    control = {"service": "w5-mariadb", "manager": "command",
               "commands": {"start": f"{server.ctl} start", "stop": f"{server.ctl} stop", "status": f"{server.ctl} status"},
               "wait": "10m"}
    phys_rto, restored = lifeboat_step(args, work, server, "restore",
                                       {"action": "restore", "dir": str(store), "datadir": str(server.data), **control, **login})
    phys_ok = server.checksums() == at_backup
    log(f"physical restore: {phys_rto:.1f} s, checksums {'identical' if phys_ok else 'DIFFERENT'}")
    old = restored.get("old_datadir")
    if old:
        shutil.rmtree(old, ignore_errors=True)

    chain = full.get("chain")
    return dict(
        size_gib=args.size_gib,
        rows_instances=rows,
        changed_rows_instances=changed,
        changed_percent=args.changed_percent,
        datadir_bytes=datadir_bytes,
        generate_seconds=gen_secs,
        dump=dict(wall=dump_wall, bytes=dump.stat().st_size),
        physical_full=dict(wall=full_wall, bytes=full.get("size") or du(store / chain / "000-full")),
        physical_incremental=dict(wall=inc_wall, bytes=inc.get("size") or du(store / chain / "001-incr")),
        sql_restore=dict(rto=sql_rto, checksums_identical=sql_ok),
        physical_restore=dict(rto=phys_rto, checksums_identical=phys_ok,
                              prepare_seconds=restored.get("prepare_seconds"),
                              downtime_seconds=restored.get("downtime_seconds")),
        restore_speedup=sql_rto / phys_rto,
        incremental_speedup=dump_wall / inc_wall,
        machine=dict(cores=os.cpu_count(), mariadb=server.sql("SELECT VERSION()").strip()),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )


def render(r):
    gib = lambda b: f"{b / 1024 ** 3:.2f} GiB"
    mib = lambda b: f"{b / 1024 ** 2:.0f} MiB"
    pr = r["physical_restore"]
    lines = [
        f"Run of {r['date']} on {r['machine']['cores']} cores, MariaDB {r['machine']['mariadb']}: "
        f"a datadir of {gib(r['datadir_bytes'])} ({r['rows_instances']} instances and their events, block "
        f"device mappings and request specs), {r['changed_percent']:g} % of the rows changed between the "
        "full and the incremental backup. One run (`bench/run --workloads W5`).",
        "",
        "| | wall | on disk |",
        "| --- | ---: | ---: |",
        f"| logical backup: `mysqldump --opt --all-databases \\| gzip` | {r['dump']['wall']:.1f} s | {mib(r['dump']['bytes'])} |",
        f"| physical full backup (`mariadb_backup` full) | {r['physical_full']['wall']:.1f} s | {mib(r['physical_full']['bytes'])} |",
        f"| physical incremental backup, {r['changed_percent']:g} % changed | {r['physical_incremental']['wall']:.1f} s | {mib(r['physical_incremental']['bytes'])} |",
        f"| SQL restore: `gunzip \\| mysql`, until the server answers with the data | {r['sql_restore']['rto']:.1f} s | |",
        f"| physical restore of full + incremental, until the server answers | {pr['rto']:.1f} s (prepare {pr['prepare_seconds'] or 0:.1f} s, server down {pr['downtime_seconds'] or 0:.1f} s) | |",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| physical restore ≥ 5× faster than the SQL import | {r['restore_speedup']:.1f}× | {'yes' if r['restore_speedup'] >= 5 else 'no'} |",
        f"| incremental backup ≥ 10× faster than a full dump ({r['changed_percent']:g} % changed) | {r['incremental_speedup']:.1f}× | {'yes' if r['incremental_speedup'] >= 10 else 'no'} |",
        f"| both restores give the tables' checksums of the backup | SQL: {'identical' if r['sql_restore']['checksums_identical'] else 'DIFFERENT'}, physical: {'identical' if pr['checksums_identical'] else 'DIFFERENT'} | {'yes' if r['sql_restore']['checksums_identical'] and pr['checksums_identical'] else 'no'} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
