//! Hostile input: thousands of mutations of real playbooks and inventories (bytes
//! cut, duplicated, swapped, replaced by YAML punctuation) go through the loaders
//! and the graph builder. Each must end in Ok or in a located error, never a panic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use lifeboat::graph::{Graph, Selection};
use lifeboat::inventory::Inventory;
use lifeboat::playbook::Playbook;

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NOISE: &[&str] = &[
    ":", "- ", "{", "}", "[", "]", "{{", "}}", "{%", "\n", "  ", "\t", "'", "\"", "&a", "*a",
    "!!str", "~", "|", ">", "#", "needs: [", "0755", "yes", "\u{fffd}", "\\", "%", "@", "!", "?",
    ",",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => {
                let len = rng.below(12).min(bytes.len() - at);
                bytes.drain(at..at + len);
            }
            1 => {
                let noise: Vec<char> = NOISE[rng.below(NOISE.len())].chars().collect();
                bytes.splice(at..at, noise);
            }
            2 => {
                let len = rng.below(20).min(bytes.len() - at);
                let copy: Vec<char> = bytes[at..at + len].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, copy);
            }
            _ => {
                let other = rng.below(bytes.len());
                bytes.swap(at, other);
            }
        }
    }
    bytes.into_iter().collect()
}

fn seeds(dir: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.push(text);
            }
        }
    }
    out
}

#[test]
fn mutated_playbooks_never_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("p.yml");
    let inv = Inventory::implicit_localhost();
    let playbooks = seeds("playbooks");
    assert!(!playbooks.is_empty(), "no seed playbooks found");
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut errors = 0;
    for round in 0..1500 {
        let seed = &playbooks[round % playbooks.len()];
        let text = mutate(&mut rng, seed);
        std::fs::write(&path, &text).expect("write");
        let result = catch_unwind(AssertUnwindSafe(|| match Playbook::load(&path) {
            Ok(pb) => Graph::build(&pb, &inv, &Selection::default()).map(|_| ()),
            Err(e) => Err(e),
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errors += 1;
                for err in &e.0 {
                    assert!(
                        !err.message.is_empty(),
                        "an empty error message for:\n{text}"
                    );
                }
            }
            Err(_) => panic!("the loader panicked on this playbook (round {round}):\n{text}"),
        }
    }
    assert!(
        errors > 100,
        "mutations should mostly be rejected, only {errors} were"
    );
}

#[test]
fn mutated_inventories_never_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let inventories = seeds("tests/fixtures/inventory");
    assert!(!inventories.is_empty(), "no seed inventories found");
    let mut rng = Rng(0xfeed_beef_0042_0001);
    for round in 0..1500 {
        let seed = &inventories[round % inventories.len()];
        let text = mutate(&mut rng, seed);
        let ext = if round % 2 == 0 { "yml" } else { "ini" };
        let path = tmp.path().join(format!("inv.{ext}"));
        std::fs::write(&path, &text).expect("write");
        let result = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(inv) = Inventory::load(Some(&path)) {
                for p in ["all", "control", "a:b", "x[0]", "*", "c:&d:!e"] {
                    let _ = inv.select(p);
                }
            }
        }));
        assert!(
            result.is_ok(),
            "the inventory loader panicked on this {ext} inventory (round {round}):\n{text}"
        );
    }
}
