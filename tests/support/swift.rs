//! A private OpenStack Swift for a test binary: Debian's swift-proxy, swift-account,
//! swift-container and swift-object servers with tempauth (memcached for its tokens)
//! and the s3api middleware, one device on a temporary directory owned by the `swift`
//! user the servers drop to, rings built with swift-ring-builder, every server on a
//! free loopback port. Started once per test binary on first use ([`server`]). A
//! watchdog shell started with it stops every server and removes the directory when
//! the test process ends, so nothing outlives the run.
//!
//! Readiness is a condition with a deadline: tempauth hands out a token, and then a
//! container can be created and listed (the proxy answers auth before the storage
//! servers listen; a proxy that saw them refuse connections marks them error-limited
//! for a while, so the fixture restarts it once the storage servers answer).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tempauth account and user (`ST_USER`).
pub const USER: &str = "test:tester";
/// Its key (`ST_KEY`): quotes and a `$`, to prove the env file quotes it (tempauth's
/// configuration splits on spaces, so none).
pub const KEY: &str = "sw1ft'k3y\"$HOME";

/// A running Swift.
pub struct Swift {
    /// Its temporary directory (configuration, rings, device, logs).
    pub dir: PathBuf,
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
}

impl Swift {
    /// The tempauth URL (`ST_AUTH`).
    pub fn auth_url(&self) -> String {
        format!("http://127.0.0.1:{}/auth/v1.0", self.port)
    }

    /// The proxy's base URL (the S3 endpoint of s3api too).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment restic's swift backend needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ST_AUTH".into(), self.auth_url()),
            ("ST_USER".into(), USER.into()),
            ("ST_KEY".into(), KEY.into()),
        ]
    }

    /// The environment of restic's `rclone:lbs3:` repositories: rclone's S3 backend
    /// against Swift's s3api (the access key is the tempauth user, the secret its key).
    pub fn s3_env(&self) -> Vec<(String, String)> {
        vec![
            ("RCLONE_CONFIG_LBS3_TYPE".into(), "s3".into()),
            ("RCLONE_CONFIG_LBS3_PROVIDER".into(), "Other".into()),
            ("RCLONE_CONFIG_LBS3_ENDPOINT".into(), self.endpoint()),
            ("RCLONE_CONFIG_LBS3_REGION".into(), "us-east-1".into()),
            ("RCLONE_CONFIG_LBS3_ACCESS_KEY_ID".into(), USER.into()),
            ("RCLONE_CONFIG_LBS3_SECRET_ACCESS_KEY".into(), KEY.into()),
        ]
    }

    /// The server logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in ["proxy", "account", "container", "object", "memcached"] {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
            s.push_str(&format!("--- {n}.log\n{text}"));
        }
        s
    }

    /// A tempauth token and storage URL, `None` while auth does not answer.
    pub fn token(&self) -> Option<(String, String)> {
        let out = curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            &format!("X-Auth-User: {USER}"),
            "-H",
            &format!("X-Auth-Key: {KEY}"),
            &self.auth_url(),
        ])?;
        let header = |name: &str| {
            out.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        Some((header("X-Auth-Token")?, header("X-Storage-Url")?))
    }

    /// The names of the objects of a container (empty when it does not exist).
    pub fn objects(&self, container: &str) -> Vec<String> {
        let Some((token, url)) = self.token() else {
            return Vec::new();
        };
        curl(&[
            "-sS",
            "-f",
            "-H",
            &format!("X-Auth-Token: {token}"),
            &format!("{url}/{container}"),
        ])
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["--max-time", "10"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

fn find(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: apt-get install swift-proxy swift-account swift-container swift-object memcached (scripts/test does)"
    );
}

/// The shared Swift, started on first use.
pub fn server() -> &'static Swift {
    static SERVER: OnceLock<Swift> = OnceLock::new();
    SERVER.get_or_init(start)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn storage_conf(dir: &Path, kind: &str, port: u16) -> String {
    format!(
        "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\ndevices = {d}/node\nmount_check = false\n\
swift_dir = {d}\nuser = swift\nworkers = 0\nlog_level = WARNING\nrecon_cache_path = {d}/cache\n\n\
[pipeline:main]\npipeline = {kind}-server\n\n[app:{kind}-server]\nuse = egg:swift#{kind}\n",
        d = dir.display()
    )
}

fn proxy_conf(dir: &Path, port: u16, memcached: u16) -> String {
    let key = KEY.replace('%', "%%");
    format!(
        "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nswift_dir = {d}\nuser = swift\nworkers = 0\n\
log_level = WARNING\n\n\
[pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth proxy-logging proxy-server\n\n\
[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n\
[filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = {key} .admin\n\n\
[filter:s3api]\nuse = egg:swift#s3api\n\n\
[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{memcached}\n\n\
[filter:catch_errors]\nuse = egg:swift#catch_errors\n\n\
[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n\n\
[filter:healthcheck]\nuse = egg:swift#healthcheck\n\n\
[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n\n\
[filter:listing_formats]\nuse = egg:swift#listing_formats\n",
        d = dir.display()
    )
}

/// Starts a private Swift, stopped and removed when the test process ends.
pub fn start() -> Swift {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-swift-")
        .tempdir()
        .expect("temporary directory")
        .keep();
    // The servers drop to `swift`: it must reach the configuration and own the device.
    std::fs::create_dir_all(dir.join("node/d1")).expect("device directory");
    std::fs::create_dir_all(dir.join("cache")).expect("recon cache directory");
    let chown = Command::new("chown")
        .args(["-R", "swift:swift"])
        .arg(dir.join("node"))
        .arg(dir.join("cache"))
        .output()
        .expect("run chown");
    assert!(
        chown.status.success(),
        "chown to swift failed (is the swift package installed?): {}",
        String::from_utf8_lossy(&chown.stderr)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the Swift directory");
    }
    write(
        &dir.join("swift.conf"),
        "[swift-hash]\nswift_hash_path_suffix = lifeboat-test\nswift_hash_path_prefix = lifeboat-test\n\n\
[storage-policy:0]\nname = Policy-0\ndefault = yes\n",
    );
    let ports = [
        ("account", free_port()),
        ("container", free_port()),
        ("object", free_port()),
    ];
    let builder = find("swift-ring-builder");
    for (kind, port) in ports {
        let ring = dir.join(format!("{kind}.builder"));
        for args in [
            vec!["create".to_string(), "6".into(), "1".into(), "1".into()],
            vec![
                "add".into(),
                format!("r1z1-127.0.0.1:{port}/d1"),
                "100".into(),
            ],
            vec!["rebalance".into()],
        ] {
            let out = Command::new(&builder)
                .arg(&ring)
                .args(&args)
                .output()
                .expect("run swift-ring-builder");
            // `rebalance` exits 1 with a warning it may print on a one-device ring.
            assert!(
                out.status.code().is_some_and(|c| c <= 1),
                "swift-ring-builder {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            dir.join(format!("{kind}.ring.gz")).exists(),
            "swift-ring-builder wrote no {kind} ring"
        );
        write(
            &dir.join(format!("{kind}-server.conf")),
            &storage_conf(&dir, kind, port),
        );
    }
    let port = free_port();
    let memcached = free_port();
    write(
        &dir.join("proxy-server.conf"),
        &proxy_conf(&dir, port, memcached),
    );
    // The watchdog: runs memcached and the servers, restarts the proxy when asked
    // (a `restart-proxy` file), and when the test process ends stops them all and
    // removes the directory.
    let script = r#"
test_pid=$1; dir=$2; memcached_port=$3
memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -u swift >"$dir/memcached.log" 2>&1 &
pids=$!
for k in account container object; do
  "swift-$k-server" "$dir/$k-server.conf" >"$dir/$k.log" 2>&1 &
  pids="$pids $!"
done
swift-proxy-server "$dir/proxy-server.conf" >"$dir/proxy.log" 2>&1 &
proxy=$!
trap 'kill $pids $proxy 2>/dev/null; wait 2>/dev/null; rm -rf -- "$dir"' EXIT
while kill -0 "$test_pid" 2>/dev/null; do
  if [ -e "$dir/restart-proxy" ]; then
    kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null
    swift-proxy-server "$dir/proxy-server.conf" >>"$dir/proxy.log" 2>&1 &
    proxy=$!
    rm -f "$dir/restart-proxy"
  fi
  sleep 0.2
done
"#;
    let watchdog = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("swift-watchdog")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .arg(memcached.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the Swift watchdog");
    drop(watchdog);
    let swift = Swift { dir, port };
    // The storage servers listen first; then the proxy can be trusted with them.
    let deadline = Instant::now() + Duration::from_secs(90);
    for (kind, p) in ports {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(
                Instant::now() < deadline,
                "swift-{kind}-server did not listen within 90s:\n{}",
                swift.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut restarted = false;
    loop {
        if swift.ready() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Swift did not store and list a container within 90s:\n{}",
            swift.logs()
        );
        // A proxy that answers auth but cannot create a container may have marked the
        // storage servers as failing while they started: restart it, once.
        if !restarted && swift.token().is_some() {
            write(&swift.dir.join("restart-proxy"), "");
            restarted = true;
            let until = Instant::now() + Duration::from_secs(30);
            while swift.dir.join("restart-proxy").exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    swift
}

impl Swift {
    /// Whether a container can be created and listed through the proxy.
    fn ready(&self) -> bool {
        let Some((token, url)) = self.token() else {
            return false;
        };
        let auth = format!("X-Auth-Token: {token}");
        curl(&[
            "-sS",
            "-f",
            "-X",
            "PUT",
            "-H",
            &auth,
            &format!("{url}/lifeboat-ready"),
        ])
        .is_some()
            && curl(&["-sS", "-f", "-H", &auth, &format!("{url}/lifeboat-ready")]).is_some()
    }
}
