//! `lifeboat-floor`: what a run costs with no engine. For every host at once it opens one
//! connection with lifeboat's SSH transport (`lifeboat::connection::ssh`, strict host key
//! checking against the given known_hosts, key authentication) and then either runs the
//! same command back to back (`cmd`), in `--branches` concurrent chains on the
//! connection, or copies files (`put`) one after the other. No inventory, no graph, no
//! templates, no journal: the difference between lifeboat and this is the engine.
//!
//! ```text
//! lifeboat-floor cmd --hosts HOSTS.tsv --key KEY --known-hosts KH --user U \
//!     --steps 20 [--branches 3] -- /bin/true
//! lifeboat-floor put --hosts HOSTS.tsv --key KEY --known-hosts KH --user U \
//!     --dest DIR_WITH_{host} FILE...
//! ```
//!
//! HOSTS.tsv: one host a line, `name address port`. Exit 0 when every command returned
//! 0 and every copy succeeded; otherwise the failures are printed and the exit is 1.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use lifeboat::connection::ssh::{HostKeyPolicy, SshConnection, SshOptions, SshTarget};
use lifeboat::connection::{CommandSpec, Connection};

struct Args {
    mode: String,
    hosts: PathBuf,
    key: String,
    known_hosts: PathBuf,
    user: String,
    steps: usize,
    branches: usize,
    max_channels: usize,
    dest: String,
    rest: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: lifeboat-floor cmd|put --hosts F --key K --known-hosts F --user U \
         [--steps N] [--branches B] [--max-channels C] [--dest DIR] -- ARGS..."
    );
    std::process::exit(64)
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    if mode != "cmd" && mode != "put" {
        usage();
    }
    let mut a = Args {
        mode,
        hosts: PathBuf::new(),
        key: String::new(),
        known_hosts: PathBuf::new(),
        user: String::new(),
        steps: 1,
        branches: 1,
        max_channels: 8,
        dest: String::new(),
        rest: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--hosts" => a.hosts = PathBuf::from(val()),
            "--key" => a.key = val(),
            "--known-hosts" => a.known_hosts = PathBuf::from(val()),
            "--user" => a.user = val(),
            "--steps" => a.steps = val().parse().unwrap_or_else(|_| usage()),
            "--branches" => a.branches = val().parse().unwrap_or_else(|_| usage()),
            "--max-channels" => a.max_channels = val().parse().unwrap_or_else(|_| usage()),
            "--dest" => a.dest = val(),
            "--" => {
                a.rest = it.by_ref().collect();
                break;
            }
            _ => a.rest.push(arg),
        }
    }
    if a.rest.is_empty() || a.key.is_empty() || a.user.is_empty() {
        usage();
    }
    a
}

fn read_hosts(path: &PathBuf) -> Vec<(String, String, u16)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{}: {e}", path.display());
        std::process::exit(64)
    });
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                eprintln!("{}: bad line `{l}`", path.display());
                std::process::exit(64)
            }
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap_or_else(|_| usage()),
            )
        })
        .collect()
}

async fn one_host(a: Arc<Args>, name: String, addr: String, port: u16) -> Result<usize, String> {
    let options = SshOptions {
        host_key_policy: Some(HostKeyPolicy::Strict),
        known_hosts_file: Some(a.known_hosts.clone()),
        read_config: false,
        use_agent: false,
        max_channels: a.max_channels,
        ..SshOptions::default()
    };
    let target = SshTarget {
        address: addr,
        port: Some(port),
        user: Some(a.user.clone()),
        key_file: Some(a.key.clone()),
        known_hosts_file: Some(a.known_hosts.clone()),
        host_key_policy: Some(HostKeyPolicy::Strict),
        ..SshTarget::default()
    };
    let conn = Arc::new(SshConnection::new(&name, &target, &options).map_err(|e| e.to_string())?);
    conn.connect().await.map_err(|e| e.to_string())?;
    let mut done = 0;
    if a.mode == "cmd" {
        let spec = CommandSpec::argv(a.rest.clone());
        let mut chains = Vec::new();
        for _ in 0..a.branches {
            let (conn, spec, steps) = (conn.clone(), spec.clone(), a.steps);
            chains.push(tokio::spawn(async move {
                for _ in 0..steps {
                    let out = conn.run(&spec, None).await.map_err(|e| e.to_string())?;
                    if !out.success() {
                        return Err(format!("rc {:?}: {}", out.rc, out.stderr_text()));
                    }
                }
                Ok::<usize, String>(steps)
            }));
        }
        for c in chains {
            done += c.await.map_err(|e| e.to_string())??;
        }
    } else {
        let dest = a.dest.replace("{host}", &name);
        let mkdir = CommandSpec::argv(["mkdir", "-p", dest.as_str()]);
        let out = conn.run(&mkdir, None).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(format!("mkdir {dest}: {}", out.stderr_text()));
        }
        for f in &a.rest {
            let local = PathBuf::from(f);
            let base = local.file_name().and_then(|n| n.to_str()).unwrap_or("file");
            conn.put_file(&local, &format!("{dest}/{base}"))
                .await
                .map_err(|e| e.to_string())?;
            done += 1;
        }
    }
    Ok(done)
}

#[tokio::main]
async fn main() {
    let a = Arc::new(parse());
    let start = Instant::now();
    let hosts = read_hosts(&a.hosts);
    let mut tasks = Vec::new();
    for (name, addr, port) in hosts {
        let a = a.clone();
        tasks.push((
            name.clone(),
            tokio::spawn(async move { one_host(a, name, addr, port).await }),
        ));
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    for (name, t) in tasks {
        match t.await {
            Ok(Ok(n)) => ok += n,
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("{name}: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {e}");
            }
        }
    }
    eprintln!(
        "floor: {ok} operations, {failed} hosts failed, {:.3} s",
        start.elapsed().as_secs_f64()
    );
    std::process::exit(if failed == 0 { 0 } else { 1 })
}
