//! A private MariaDB server for a test binary: its own datadir, socket and loopback
//! port in a temporary directory, started once on first use and shared by the tests of
//! the binary (each test works on databases with its own name prefix). A watchdog shell
//! started with it stops the server and removes the directory when the test process
//! ends, so nothing outlives the run.
//!
//! Also: loading databases shaped like OpenStack's (nova, glance, keystone: a few
//! tables, thousands of rows, a trigger, a procedure and a function), running SQL as
//! root, and the login arguments the modules take.
//!
//! Besides the shared server, a binary may start private ones ([`start`]): a one-node
//! Galera cluster (Debian's `galera-4` provider, bootstrapped as a new cluster on
//! loopback ports of its own; [`galera`] is the binary's shared one), and a server that
//! logs every statement it receives (`general.log`), to prove what ran in which order.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

/// The password of the test user: quotes, a backslash, a `#` and spaces, to prove
/// the option file escapes it.
pub const PASSWORD: &str = "p4ss \"word\" #not-a-comment \\ 'q'";

/// The test user (all privileges), reachable over TCP on 127.0.0.1 and the socket.
pub const USER: &str = "lifeboat";

/// A running server.
pub struct MariaDb {
    /// Its temporary directory (datadir, socket, logs).
    pub dir: PathBuf,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

fn find(program: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
    ] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: apt-get install mariadb-server mariadb-client");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// How a server is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A one-node Galera cluster: `wsrep_on`, the galera-4 provider, ROW binlog format,
    /// bootstrapped with `--wsrep-new-cluster`, its group port on loopback.
    pub galera: bool,
    /// Log every statement received to `general.log` in the server's directory.
    pub general_log: bool,
    /// Its directory and files readable by every user (the server runs with
    /// `UMASK=0644`): for tests where a login user that is not root reads the datadir
    /// (`mariadb-backup` over ssh).
    pub readable: bool,
    /// The user the server runs as and whose its files are (default root): a login user
    /// that restores its datadir over ssh (`mariadb_backup` restore) must own them.
    pub owner: Option<&'static str>,
    /// With `galera`: join the cluster of the node whose group communication listens on
    /// this loopback port (its [`Controlled::gcomm_port`]), by a full state transfer
    /// (rsync SST), instead of bootstrapping a cluster of its own.
    pub galera_join: Option<u16>,
}

/// Where Debian's galera-4 package puts the provider.
pub const GALERA_PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// The shared server, started on first use.
pub fn server() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SERVER.get_or_init(|| start(Options::default()))
}

/// The binary's one-node Galera cluster (with a general log), started on first use.
pub fn galera() -> &'static MariaDb {
    static GALERA: OnceLock<MariaDb> = OnceLock::new();
    GALERA.get_or_init(|| {
        start(Options {
            galera: true,
            general_log: true,
            ..Options::default()
        })
    })
}

/// Makes a server's directory with a fresh datadir (`<dir>/data`).
fn install() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-mariadb-")
        .tempdir()
        .expect("temporary directory")
        .keep();
    let data = dir.join("data");
    // A temporary directory of its own: servers bootstrapping at the same time in one
    // /tmp collide on the names of their temporary tables (and crash).
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).expect("the server's temporary directory");
    let install = Command::new(find("mariadb-install-db"))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg("--user=root")
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .stdout(Stdio::null())
        .output()
        .expect("run mariadb-install-db");
    assert!(
        install.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    dir
}

/// The command line of a server in `dir` on `port`, set up by `opts`.
fn server_command(dir: &Path, port: u16, opts: Options) -> Vec<String> {
    let mut args: Vec<String> = vec![
        find("mariadbd").display().to_string(),
        "--no-defaults".into(),
        format!("--user={}", opts.owner.unwrap_or("root")),
        format!("--datadir={}", dir.join("data").display()),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--pid-file={}", dir.join("mysqld.pid").display()),
        format!("--tmpdir={}", dir.join("tmp").display()),
        format!("--log-error={}", dir.join("error.log").display()),
        "--skip-name-resolve".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-log-file-size=16M".into(),
        "--skip-log-bin".into(),
        "--max-connections=200".into(),
    ];
    if opts.galera {
        assert!(
            Path::new(GALERA_PROVIDER).exists(),
            "{GALERA_PROVIDER} is missing: apt-get install galera-4"
        );
        // Its own group communication, state transfer and IST ports, so parallel test
        // binaries never meet; the group port is kept in `gcomm.port` for joiners.
        let (gcomm, ist, sst) = (free_port(), free_port(), free_port());
        std::fs::write(dir.join("gcomm.port"), gcomm.to_string()).expect("write gcomm.port");
        let (address, bootstrap) = match opts.galera_join {
            Some(p) => (format!("gcomm://127.0.0.1:{p}"), None),
            None => (
                "gcomm://".to_string(),
                Some("--wsrep-new-cluster".to_string()),
            ),
        };
        args.extend([
            "--wsrep-on=ON".to_string(),
            format!("--wsrep-provider={GALERA_PROVIDER}"),
            format!("--wsrep-cluster-address={address}"),
        ]);
        args.extend(bootstrap);
        args.extend([
            "--wsrep-cluster-name=lifeboat-test".to_string(),
            "--wsrep-node-address=127.0.0.1".to_string(),
            "--wsrep-sst-method=rsync".to_string(),
            format!("--wsrep-sst-receive-address=127.0.0.1:{sst}"),
            format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{gcomm};ist.recv_addr=127.0.0.1:{ist}"
            ),
            "--binlog-format=ROW".to_string(),
            "--default-storage-engine=InnoDB".to_string(),
            "--innodb-autoinc-lock-mode=2".to_string(),
        ]);
    }
    if opts.general_log {
        args.extend([
            "--general-log=1".to_string(),
            format!("--general-log-file={}", dir.join("general.log").display()),
        ]);
    }
    args
}

/// Starts a private server. It is stopped and its directory removed when the test
/// process ends.
pub fn start(opts: Options) -> MariaDb {
    let dir = install();
    if opts.readable {
        let made = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .expect("run chmod");
        assert!(made.success(), "chmod -R a+rX {}", dir.display());
    }
    let port = free_port();
    // The watchdog: runs the server, and when the test process (or the server) ends,
    // stops the server and removes the directory.
    let script = r#"
test_pid=$1; dir=$2; shift 2
"$@" &
m=$!
trap 'kill "$m" 2>/dev/null; wait "$m" 2>/dev/null; rm -rf -- "$dir"' EXIT
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$m" 2>/dev/null; do sleep 0.2; done
"#;
    let mut watchdog = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .args(server_command(&dir, port, opts))
        .envs(if opts.readable {
            vec![("UMASK", "0644"), ("UMASK_DIR", "0755")]
        } else {
            Vec::new()
        })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the MariaDB watchdog");
    let socket = dir.join("mysqld.sock");
    let server = MariaDb { dir, socket, port };
    server.wait_ready(opts, || {
        if let Ok(Some(status)) = watchdog.try_wait() {
            panic!(
                "mariadbd ended ({status}): {}",
                std::fs::read_to_string(server_log(&server.dir)).unwrap_or_default()
            );
        }
    });
    // The watchdog keeps running after this handle is dropped.
    drop(watchdog);
    server.create_test_user();
    server
}

fn server_log(dir: &Path) -> PathBuf {
    dir.join("error.log")
}

/// A server started and stopped by a control script, `<dir>/ctl start|stop|status`, as
/// a service manager would (status exit 0: running): for the tests that stop it and
/// swap its datadir (`mariadb_backup`'s restore, with `manager: command`). A watchdog
/// stops it and removes the directory when the test process ends.
pub struct Controlled {
    /// The server (its datadir is `<dir>/data`).
    pub db: MariaDb,
    /// The control script.
    pub ctl: PathBuf,
    /// With `galera`: the node's group communication port (for [`Options::galera_join`]).
    pub gcomm_port: Option<u16>,
}

/// Starts a server under a control script.
pub fn start_controlled(opts: Options) -> Controlled {
    use std::os::unix::fs::PermissionsExt;
    let dir = install();
    if let Some(owner) = opts.owner {
        let made = Command::new("chown")
            .args(["-R", &format!("{owner}:")])
            .arg(&dir)
            .status()
            .expect("run chown");
        assert!(made.success(), "chown -R {owner} {}", dir.display());
    }
    let port = free_port();
    let command: Vec<String> = server_command(&dir, port, opts)
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let ctl = dir.join("ctl");
    std::fs::write(
        &ctl,
        format!(
            r#"#!/bin/sh
# Controls the test server in this directory: start | stop | status.
dir='{dir}'
alive() {{ pid=$(cat "$dir/mysqld.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" | cut -c1)" != Z ]; }}
case "$1" in
start) alive && exit 0
       setsid {command} < /dev/null >> "$dir/ctl.log" 2>&1 &
       ;;
stop)  alive || exit 0
       kill "$pid"
       i=0; while alive; do i=$((i + 1)); [ "$i" -lt 1200 ] || exit 1; sleep 0.05; done
       ;;
status) alive ;;
*) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
"#,
            dir = dir.display(),
            command = command.join(" "),
        ),
    )
    .expect("write the control script");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).expect("chmod ctl");
    // Started by its owner, as the owner will restart it (its logs are then the owner's).
    let started = match opts.owner {
        Some(owner) => Command::new("su")
            .args(["-s", "/bin/sh", owner, "-c"])
            .arg(format!("{} start", ctl.display()))
            .status(),
        None => Command::new(&ctl).arg("start").status(),
    }
    .expect("run ctl start");
    assert!(started.success(), "ctl start failed");
    // The watchdog keeps running after its handle is dropped.
    let watchdog = Command::new("bash")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 0.2; done; "$2/ctl" stop; rm -rf -- "$2""#)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the watchdog");
    drop(watchdog);
    let socket = dir.join("mysqld.sock");
    let db = MariaDb { dir, socket, port };
    db.wait_ready(opts, || {});
    db.create_test_user();
    let gcomm_port = std::fs::read_to_string(db.dir.join("gcomm.port"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    Controlled {
        db,
        ctl,
        gcomm_port,
    }
}

impl Controlled {
    /// `manager: command` arguments that control this server.
    pub fn service_args(&self) -> Json {
        let ctl = self.ctl.display().to_string();
        json!({
            "service": "mariadb-test",
            "manager": "command",
            "commands": {
                "start": format!("{ctl} start"),
                "stop": format!("{ctl} stop"),
                "status": format!("{ctl} status"),
            },
        })
    }

    /// The datadir.
    pub fn datadir(&self) -> PathBuf {
        self.db.dir.join("data")
    }

    /// Whether the server runs (its control script's status).
    pub fn running(&self) -> bool {
        Command::new(&self.ctl)
            .arg("status")
            .status()
            .expect("run ctl status")
            .success()
    }
}

/// Whether a general log line starts an entry: `[YYMMDD HH:MM:SS]<TAB>...<id> <Command><TAB>`
/// (the command being `Query`, `Connect`, `Init DB`, ...); other lines continue one.
fn log_entry_start(line: &str) -> bool {
    let mut fields = line.split('\t');
    let time = fields.next().unwrap_or("");
    if !time
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == ':')
    {
        return false;
    }
    let Some(head) = fields.find(|f| !f.trim().is_empty()) else {
        return false;
    };
    let Some((id, command)) = head.trim_start().split_once(' ') else {
        return false;
    };
    !id.is_empty()
        && id.chars().all(|c| c.is_ascii_digit())
        && !command.is_empty()
        && command.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
        && fields.next().is_some()
}

/// A SQL string literal.
pub fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl MariaDb {
    /// Waits (60 s at most) until the server accepts connections and, for Galera,
    /// until the node is Synced; `check` runs between tries (to fail early).
    pub fn wait_ready(&self, opts: Options, mut check: impl FnMut()) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new(find("mariadb"))
                .args(["--no-defaults", "-uroot", "-e", "SELECT 1"])
                .arg(format!("--socket={}", self.socket.display()))
                .output()
                .expect("run mariadb");
            if ping.status.success() {
                break;
            }
            check();
            assert!(
                Instant::now() < deadline,
                "MariaDB did not accept connections within 60s: {}",
                std::fs::read_to_string(server_log(&self.dir)).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if opts.galera {
            // The node accepts connections before it has joined its (new) cluster.
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.status("wsrep_local_state_comment") != "Synced" {
                assert!(
                    Instant::now() < deadline,
                    "the Galera node did not reach Synced within 60s: {}",
                    std::fs::read_to_string(server_log(&self.dir)).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn create_test_user(&self) {
        let pw = sql_literal(PASSWORD);
        self.sql(&format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY {pw};
             CREATE USER IF NOT EXISTS '{USER}'@'localhost' IDENTIFIED BY {pw};
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1' WITH GRANT OPTION;
             GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'localhost' WITH GRANT OPTION;"
        ));
    }

    /// Runs SQL as root over the socket; panics when it fails. Returns the rows,
    /// tab-separated, without column names.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.sql_result(sql);
        match out {
            Ok(text) => text,
            Err(e) => panic!("SQL failed: {e}\n{sql}"),
        }
    }

    /// Runs SQL as root over the socket.
    pub fn sql_result(&self, sql: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new(find("mariadb"))
            .args(["--no-defaults", "-uroot", "--batch", "--skip-column-names"])
            .arg(format!("--socket={}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A global status value (`SHOW GLOBAL STATUS`), empty when there is none.
    pub fn status(&self, name: &str) -> String {
        self.sql(&format!("SHOW GLOBAL STATUS LIKE {}", sql_literal(name)))
            .split('\t')
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// A global variable's value (`SHOW GLOBAL VARIABLES`), empty when there is none.
    pub fn variable(&self, name: &str) -> String {
        self.sql(&format!("SHOW GLOBAL VARIABLES LIKE {}", sql_literal(name)))
            .split('\t')
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// The statements logged so far (with `general_log`): one entry per statement, in
    /// the order the server received them. Multi-line statements are one entry.
    pub fn general_log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("general.log")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for line in text.lines() {
            match out.last_mut() {
                Some(last) if !log_entry_start(line) => {
                    last.push('\n');
                    last.push_str(line);
                }
                _ => out.push(line.to_string()),
            }
        }
        out
    }

    /// Login arguments for the password user over TCP.
    pub fn login(&self) -> Json {
        json!({
            "login_host": "127.0.0.1",
            "login_port": self.port,
            "login_user": USER,
            "login_password": PASSWORD,
        })
    }

    /// Login arguments for root over the socket (no password).
    pub fn root_login(&self) -> Json {
        json!({
            "login_socket": self.socket.to_string_lossy(),
            "login_user": "root",
        })
    }

    /// Whether a database exists.
    pub fn has_database(&self, name: &str) -> bool {
        !self
            .sql(&format!(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                sql_literal(name)
            ))
            .trim()
            .is_empty()
    }

    /// Creates `<prefix>_nova`, `<prefix>_glance` and `<prefix>_keystone` with data
    /// shaped like OpenStack's, and returns their names.
    pub fn load_openstack(&self, prefix: &str) -> Vec<String> {
        let nova = format!("{prefix}_nova");
        let glance = format!("{prefix}_glance");
        let keystone = format!("{prefix}_keystone");
        self.sql(&format!(
            r#"
DROP DATABASE IF EXISTS `{nova}`; DROP DATABASE IF EXISTS `{glance}`; DROP DATABASE IF EXISTS `{keystone}`;
CREATE DATABASE `{nova}`; CREATE DATABASE `{glance}`; CREATE DATABASE `{keystone}`;

USE `{nova}`;
CREATE TABLE instances (
  id INT AUTO_INCREMENT PRIMARY KEY, uuid CHAR(36) NOT NULL UNIQUE,
  hostname VARCHAR(255), vm_state VARCHAR(32), memory_mb INT, vcpus INT,
  deleted INT NOT NULL DEFAULT 0, created_at DATETIME, notes TEXT
) ENGINE=InnoDB;
CREATE TABLE instance_actions (
  id INT AUTO_INCREMENT PRIMARY KEY, instance_uuid CHAR(36), action VARCHAR(64)
) ENGINE=InnoDB;
CREATE TABLE block_device_mapping (
  id INT AUTO_INCREMENT PRIMARY KEY, instance_uuid CHAR(36), device_name VARCHAR(32),
  volume_id CHAR(36), boot_index INT NULL
) ENGINE=InnoDB;
CREATE TRIGGER instances_created AFTER INSERT ON instances FOR EACH ROW
  INSERT INTO instance_actions (instance_uuid, action) VALUES (NEW.uuid, 'create');
CREATE PROCEDURE count_active(OUT n INT)
  SELECT COUNT(*) INTO n FROM instances WHERE deleted = 0;
INSERT INTO instances (uuid, hostname, vm_state, memory_mb, vcpus, deleted, created_at, notes)
  SELECT UUID(), CONCAT('vm-', seq), ELT(1 + seq % 3, 'active', 'stopped', 'error'),
         512 * (1 + seq % 8), 1 + seq % 4, IF(seq % 10 = 0, seq, 0),
         '2024-01-01' + INTERVAL seq MINUTE,
         IF(seq % 7 = 0, NULL, CONCAT('line one\nline\ttwo; ''quoted'' ', seq))
  FROM seq_1_to_2000;
INSERT INTO block_device_mapping (instance_uuid, device_name, volume_id, boot_index)
  SELECT uuid, '/dev/vda', UUID(), IF(id % 2 = 0, 0, NULL) FROM instances;

USE `{glance}`;
CREATE TABLE images (
  id CHAR(36) PRIMARY KEY, name VARCHAR(255), size BIGINT, status VARCHAR(30),
  checksum VARCHAR(32), visibility ENUM('public','private','shared','community')
) ENGINE=InnoDB;
CREATE TABLE image_properties (
  id INT AUTO_INCREMENT PRIMARY KEY, image_id CHAR(36), name VARCHAR(255), value TEXT
) ENGINE=InnoDB;
INSERT INTO images SELECT UUID(), CONCAT('image-', seq), seq * 1048576, 'active',
  MD5(seq), ELT(1 + seq % 4, 'public', 'private', 'shared', 'community') FROM seq_1_to_500;
INSERT INTO image_properties (image_id, name, value)
  SELECT id, 'hw_disk_bus', 'virtio' FROM images;

USE `{keystone}`;
CREATE TABLE project (
  id VARCHAR(64) PRIMARY KEY, name VARCHAR(64), domain_id VARCHAR(64), enabled TINYINT
) ENGINE=InnoDB;
CREATE TABLE user (
  id VARCHAR(64) PRIMARY KEY, enabled TINYINT, default_project_id VARCHAR(64),
  extra TEXT, created_at DATETIME
) ENGINE=InnoDB;
CREATE TABLE assignment (
  type VARCHAR(16), actor_id VARCHAR(64), target_id VARCHAR(64), role_id VARCHAR(64),
  PRIMARY KEY (type, actor_id, target_id, role_id)
) ENGINE=InnoDB;
CREATE FUNCTION user_count() RETURNS INT READS SQL DATA RETURN (SELECT COUNT(*) FROM user);
INSERT INTO project SELECT MD5(CONCAT('p', seq)), CONCAT('project-', seq), 'default', 1
  FROM seq_1_to_100;
INSERT INTO user SELECT MD5(CONCAT('u', seq)), seq % 5 <> 0, MD5(CONCAT('p', 1 + seq % 100)),
  '{{"email": "u@example.org"}}', '2023-06-01' + INTERVAL seq HOUR FROM seq_1_to_1000;
INSERT INTO assignment SELECT 'UserProject', id, default_project_id, 'member' FROM user;
"#
        ));
        vec![nova, glance, keystone]
    }
}
