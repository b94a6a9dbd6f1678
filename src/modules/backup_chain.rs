//! Physical backup chains as `mariadb_backup` keeps them on a host: what a chain is
//! (a full backup and the incrementals on top of it, each in a numbered directory with
//! a `manifest.json` written last), how a listing of the chain store is read, and the
//! checks that a chain is whole (contiguous numbers, each piece starting at the LSN
//! where the one before it ended) before anything is prepared or stopped.
//!
//! ```text
//! <dir>/<chain>/000-full/{backup.xb.zst, xtrabackup_checkpoints, xtrabackup_info, manifest.json}
//! <dir>/<chain>/001-incr/...
//! ```
//!
//! Pure logic: the listing is produced on the host by [`LIST_SCRIPT`] and parsed here.

use serde_json::Value as Json;

/// The manifest format written by `mariadb_backup`.
pub(crate) const FORMAT: &str = "lifeboat-mariadb-backup/1";

/// Shell lines printing every chain of `$dir` and, for each numbered backup in it, its
/// name and its manifest (absent while incomplete). Records start with the byte 0x1e.
pub(crate) const LIST_SCRIPT: &str = "[ -d \"$dir\" ] || { echo \"no such directory: $dir\" >&2; exit 3; }\n\
for c in \"$dir\"/*/; do\n\
  [ -d \"$c\" ] || continue; c=${c%/}\n\
  printf '\\036chain %s\\n' \"${c##*/}\"\n\
  for b in \"$c\"/[0-9][0-9][0-9]-*/; do\n\
    [ -d \"$b\" ] || continue; b=${b%/}\n\
    printf '\\036backup %s\\n' \"${b##*/}\"\n\
    if [ -f \"$b/manifest.json\" ]; then cat -- \"$b/manifest.json\"; fi\n\
  done\n\
done\n";

/// Whether a backup is the chain's base or builds on the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A full backup: the first of its chain.
    Full,
    /// An incremental backup on top of the previous one.
    Incremental,
}

impl Kind {
    /// Its suffix in directory names.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incr",
        }
    }

    /// Its word in manifests and messages.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
        }
    }
}

/// One numbered backup directory of a chain.
#[derive(Debug, Clone)]
pub(crate) struct Backup {
    /// Its directory name, e.g. `001-incr`.
    pub name: String,
    /// Its number in the chain.
    pub index: u32,
    /// Its kind, from the name.
    pub kind: Kind,
    /// Its manifest; `None`: no manifest (never finished).
    pub manifest: Option<Json>,
}

impl Backup {
    /// The directory name of backup `index` of `kind`.
    pub(crate) fn dir_name(index: u32, kind: Kind) -> String {
        format!("{index:03}-{}", kind.suffix())
    }

    fn field_u64(&self, key: &str) -> Option<u64> {
        self.manifest.as_ref()?.get(key)?.as_u64()
    }

    /// The LSN it starts from (0 for a full backup).
    pub(crate) fn start_lsn(&self) -> Option<u64> {
        self.field_u64("from_lsn")
    }

    /// The LSN it ends at (its checkpoint).
    pub(crate) fn end_lsn(&self) -> Option<u64> {
        self.field_u64("to_lsn")
    }

    /// A manifest string field.
    pub(crate) fn text(&self, key: &str) -> Option<&str> {
        self.manifest.as_ref()?.get(key)?.as_str()
    }
}

/// A chain: its name and its numbered backups, in order of their numbers.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// The directory name under the chain store.
    pub name: String,
    /// The backups, sorted by number.
    pub backups: Vec<Backup>,
}

impl Chain {
    /// The complete backups, in order.
    pub(crate) fn complete(&self) -> impl Iterator<Item = &Backup> {
        self.backups.iter().filter(|b| b.manifest.is_some())
    }

    /// Whether it has a complete full backup as number 0.
    pub(crate) fn has_full(&self) -> bool {
        self.backups
            .first()
            .is_some_and(|b| b.index == 0 && b.kind == Kind::Full && b.manifest.is_some())
    }

    /// The number of complete incrementals.
    pub(crate) fn incrementals(&self) -> usize {
        self.complete()
            .filter(|b| b.kind == Kind::Incremental)
            .count()
    }
}

/// Reads the output of [`LIST_SCRIPT`]. A manifest that is not JSON counts as missing.
pub(crate) fn parse_listing(text: &str) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::new();
    for record in text.split('\u{1e}') {
        let (head, body) = record.split_once('\n').unwrap_or((record, ""));
        if let Some(name) = head.strip_prefix("chain ") {
            chains.push(Chain {
                name: name.to_string(),
                backups: Vec::new(),
            });
        } else if let Some(name) = head.strip_prefix("backup ")
            && let Some(chain) = chains.last_mut()
            && let Some((index, kind)) = parse_name(name)
        {
            chain.backups.push(Backup {
                name: name.to_string(),
                index,
                kind,
                manifest: serde_json::from_str::<Json>(body.trim())
                    .ok()
                    .filter(|m| m.get("format").and_then(Json::as_str) == Some(FORMAT)),
            });
        }
    }
    for c in &mut chains {
        c.backups.sort_by_key(|b| b.index);
    }
    chains.sort_by(|a, b| a.name.cmp(&b.name));
    chains
}

/// `001-incr` → (1, Incremental).
fn parse_name(name: &str) -> Option<(u32, Kind)> {
    let (n, k) = name.split_once('-')?;
    if n.len() != 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kind = match k {
        "full" => Kind::Full,
        "incr" => Kind::Incremental,
        _ => return None,
    };
    Some((n.parse().ok()?, kind))
}

/// Where to stop in a chain: a backup's name or number; `None`: its last backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upto {
    /// A number.
    Index(u32),
    /// A directory name such as `002-incr`.
    Name(String),
}

impl Upto {
    /// Reads the `upto` argument: a number, or a name.
    pub(crate) fn from_json(v: &Json) -> Result<Option<Upto>, String> {
        match v {
            Json::Null => Ok(None),
            Json::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| Some(Upto::Index(n)))
                .ok_or_else(|| format!("upto `{n}` is not a backup number")),
            Json::String(s) if s.trim().is_empty() || s == "last" => Ok(None),
            Json::String(s) => match s.trim().parse::<u32>() {
                Ok(n) => Ok(Some(Upto::Index(n))),
                Err(_) if parse_name(s).is_some() => Ok(Some(Upto::Name(s.clone()))),
                Err(_) => Err(format!(
                    "upto `{s}` is neither a backup number nor a name such as 002-incr"
                )),
            },
            other => Err(format!("upto `{other}` is not a backup number or name")),
        }
    }
}

/// The newest chain (by name: chains are named by the run that made their full
/// backup, which starts with its UTC time) that has a complete full backup; with
/// `name`, that chain.
pub(crate) fn pick<'a>(
    chains: &'a [Chain],
    name: Option<&str>,
    dir: &str,
) -> Result<&'a Chain, String> {
    match name {
        Some(n) => chains.iter().find(|c| c.name == n).ok_or_else(|| {
            format!(
                "there is no chain `{n}` in {dir} (chains there: {})",
                names(chains)
            )
        }),
        None => chains.iter().rev().find(|c| c.has_full()).ok_or_else(|| {
            format!(
                "there is no complete full backup in {dir}{}: make one with action: full",
                if chains.is_empty() {
                    String::new()
                } else {
                    format!(" (chains there: {})", names(chains))
                }
            )
        }),
    }
}

fn names(chains: &[Chain]) -> String {
    if chains.is_empty() {
        "none".to_string()
    } else {
        chains
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The backups to apply, in order, from the full backup to `upto` (or the last): every
/// number present, every one complete, each incremental starting at the LSN the one
/// before it ended at. The message of a refusal names the chain, the piece and what to do.
pub(crate) fn verify<'a>(chain: &'a Chain, upto: Option<&Upto>) -> Result<Vec<&'a Backup>, String> {
    let c = &chain.name;
    let Some(first) = chain.backups.first() else {
        return Err(format!("chain {c} has no backups"));
    };
    if first.index != 0 || first.kind != Kind::Full {
        return Err(format!(
            "chain {c} is broken: its full backup 000-full is missing (the first backup there is {})",
            first.name
        ));
    }
    let last = match upto {
        None => chain.backups.last().map_or(0, |b| b.index),
        Some(Upto::Index(i)) => *i,
        Some(Upto::Name(n)) => chain
            .backups
            .iter()
            .find(|b| &b.name == n)
            .map(|b| b.index)
            .ok_or_else(|| format!("chain {c} has no backup {n}"))?,
    };
    if !chain.backups.iter().any(|b| b.index == last) {
        return Err(format!(
            "chain {c} has no backup number {last} (its last is {})",
            chain.backups.last().map_or("none", |b| b.name.as_str())
        ));
    }
    let mut out: Vec<&Backup> = Vec::new();
    for b in chain.backups.iter().take_while(|b| b.index <= last) {
        let Some(m) = &b.manifest else {
            return Err(format!(
                "chain {c} is broken: {} has no readable manifest.json (it never finished, or it was damaged); \
restore up to an earlier backup with upto, or from another chain",
                b.name
            ));
        };
        if let Some(prev) = out.last() {
            if b.index != prev.index + 1 {
                return Err(format!(
                    "chain {c} is broken: backup {:03} is missing ({} builds on it, and the backup before is {}); \
restore up to {} with upto: {}, or from another chain",
                    prev.index + 1,
                    b.name,
                    prev.name,
                    prev.name,
                    prev.index
                ));
            }
            if b.kind != Kind::Incremental {
                return Err(format!(
                    "chain {c} is broken: {} follows {} but is not an incremental backup",
                    b.name, prev.name
                ));
            }
            if b.start_lsn() != prev.end_lsn() || b.start_lsn().is_none() {
                return Err(format!(
                    "chain {c} is out of order: {} starts at LSN {} but {} ends at LSN {}",
                    b.name,
                    lsn(b.start_lsn()),
                    prev.name,
                    lsn(prev.end_lsn())
                ));
            }
        }
        if m.get("chain").and_then(Json::as_str) != Some(c.as_str()) {
            return Err(format!(
                "chain {c} holds {} of another chain ({}): it was moved or copied there",
                b.name,
                m.get("chain").and_then(Json::as_str).unwrap_or("unnamed")
            ));
        }
        out.push(b);
    }
    Ok(out)
}

fn lsn(v: Option<u64>) -> String {
    v.map_or("unknown".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(chain: &str, from: u64, to: u64) -> String {
        format!(
            "{{\"format\":\"{FORMAT}\",\"chain\":\"{chain}\",\"from_lsn\":{from},\"to_lsn\":{to}}}"
        )
    }

    fn listing(entries: &[(&str, Option<(u64, u64)>)]) -> Vec<Chain> {
        let mut text = String::from("\u{1e}chain c1\n");
        for (name, m) in entries {
            text.push_str(&format!("\u{1e}backup {name}\n"));
            if let Some((f, t)) = m {
                text.push_str(&manifest("c1", *f, *t));
                text.push('\n');
            }
        }
        parse_listing(&text)
    }

    #[test]
    fn a_whole_chain_is_applied_in_order_up_to_the_last_or_upto() {
        let chains = listing(&[
            ("001-incr", Some((10, 20))),
            ("000-full", Some((0, 10))),
            ("002-incr", Some((20, 30))),
        ]);
        let names = |v: Vec<&Backup>| v.iter().map(|b| b.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(verify(&chains[0], None).unwrap()),
            ["000-full", "001-incr", "002-incr"]
        );
        assert_eq!(
            names(verify(&chains[0], Some(&Upto::Index(1))).unwrap()),
            ["000-full", "001-incr"]
        );
        assert_eq!(
            names(verify(&chains[0], Some(&Upto::Name("000-full".into()))).unwrap()),
            ["000-full"]
        );
        assert_eq!(chains[0].incrementals(), 2);
    }

    #[test]
    fn a_missing_incremental_is_named_with_what_to_do() {
        let chains = listing(&[("000-full", Some((0, 10))), ("002-incr", Some((20, 30)))]);
        let e = verify(&chains[0], None).unwrap_err();
        assert_eq!(
            e,
            "chain c1 is broken: backup 001 is missing (002-incr builds on it, and the backup before is 000-full); \
restore up to 000-full with upto: 0, or from another chain"
        );
        // Up to the full backup, the chain is whole.
        assert!(verify(&chains[0], Some(&Upto::Index(0))).is_ok());
    }

    #[test]
    fn lsn_gaps_incomplete_pieces_and_a_missing_full_are_refused() {
        let gap = listing(&[("000-full", Some((0, 10))), ("001-incr", Some((11, 30)))]);
        assert!(
            verify(&gap[0], None)
                .unwrap_err()
                .contains("001-incr starts at LSN 11 but 000-full ends at LSN 10")
        );
        let unfinished = listing(&[("000-full", Some((0, 10))), ("001-incr", None)]);
        assert!(
            verify(&unfinished[0], None)
                .unwrap_err()
                .contains("001-incr has no readable manifest.json")
        );
        let no_full = listing(&[("001-incr", Some((10, 20)))]);
        assert!(
            verify(&no_full[0], None)
                .unwrap_err()
                .contains("its full backup 000-full is missing")
        );
        assert!(
            verify(&gap[0], Some(&Upto::Index(7)))
                .unwrap_err()
                .contains("has no backup number 7")
        );
    }

    #[test]
    fn the_newest_chain_with_a_full_backup_is_picked() {
        let text = format!(
            "\u{1e}chain 2024a\n\u{1e}backup 000-full\n{}\n\u{1e}chain 2025b\n\u{1e}backup 000-full\n\u{1e}chain junk\n\u{1e}backup notes\n",
            manifest("2024a", 0, 5)
        );
        let chains = parse_listing(&text);
        assert_eq!(pick(&chains, None, "/b").unwrap().name, "2024a");
        assert!(
            pick(&chains, Some("nope"), "/b")
                .unwrap_err()
                .contains("there is no chain `nope` in /b (chains there: 2024a, 2025b, junk)")
        );
        assert!(
            pick(&[], None, "/b")
                .unwrap_err()
                .contains("no complete full backup in /b")
        );
        assert!(
            chains[2].backups.is_empty(),
            "names not NNN-kind are not backups"
        );
    }

    #[test]
    fn upto_reads_numbers_names_and_last() {
        assert_eq!(Upto::from_json(&Json::from(2)), Ok(Some(Upto::Index(2))));
        assert_eq!(Upto::from_json(&Json::from("2")), Ok(Some(Upto::Index(2))));
        assert_eq!(
            Upto::from_json(&Json::from("001-incr")),
            Ok(Some(Upto::Name("001-incr".into())))
        );
        assert_eq!(Upto::from_json(&Json::from("last")), Ok(None));
        assert!(Upto::from_json(&Json::from("yesterday")).is_err());
    }
}
