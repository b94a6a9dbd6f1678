//! Host ranges and `host:port` in inventory host names, as Ansible expands them:
//! `node[01:03]` gives `node01 node02 node03` (leading zeros keep the width),
//! `node[a:c]` gives `nodea nodeb nodec`, `node[1:9:4]` steps by 4, and several ranges
//! in one name multiply out. `web1:2222` names host `web1` on port 2222.

/// At most this many hosts from one name, so a typo cannot eat the memory.
const MAX_EXPANSION: usize = 100_000;

/// Expands every `[begin:end]` / `[begin:end:step]` range in a host name. A name
/// without a range gives itself. `Err` says what is wrong with the range.
pub fn expand(name: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    expand_into(name, &mut out)?;
    Ok(out)
}

fn expand_into(name: &str, out: &mut Vec<String>) -> Result<(), String> {
    let Some(open) = name.find('[') else {
        out.push(name.to_string());
        return Ok(());
    };
    let Some(close_rel) = name[open..].find(']') else {
        return Err(format!("host range in `{name}` has no closing `]`"));
    };
    let close = open + close_rel;
    let head = &name[..open];
    let range = &name[open + 1..close];
    let tail = &name[close + 1..];
    let bounds: Vec<&str> = range.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host range `[{range}]` must be [begin:end] or [begin:end:step]"
        ));
    }
    let (beg, end) = (bounds[0].trim(), bounds[1].trim());
    let step: usize = match bounds.get(2).map(|s| s.trim()) {
        None | Some("") => 1,
        Some(s) => match s.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "host range step `{s}` must be a positive whole number"
                ));
            }
            Ok(n) => n,
        },
    };
    if end.is_empty() {
        return Err(format!("host range `[{range}]` must give an end value"));
    }
    let beg = if beg.is_empty() { "0" } else { beg };
    let items: Vec<String> = if beg.chars().all(|c| c.is_ascii_digit())
        && end.chars().all(|c| c.is_ascii_digit())
    {
        let (b, e): (u64, u64) = match (beg.parse(), end.parse()) {
            (Ok(b), Ok(e)) => (b, e),
            _ => return Err(format!("host range `[{range}]` has numbers too large")),
        };
        if b > e {
            return Err(format!("host range `[{range}]` must have begin <= end"));
        }
        let width = if beg.len() > 1 && beg.starts_with('0') {
            if beg.len() != end.len() {
                return Err(format!(
                    "host range `[{range}]` must give begin and end with the same number of digits"
                ));
            }
            beg.len()
        } else {
            0
        };
        let count = (e - b) / step as u64 + 1;
        if count as usize > MAX_EXPANSION || count > MAX_EXPANSION as u64 {
            return Err(format!(
                "host range `[{range}]` gives more than {MAX_EXPANSION} hosts"
            ));
        }
        (b..=e)
            .step_by(step)
            .map(|i| format!("{i:0width$}"))
            .collect()
    } else {
        const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let (Some(b), Some(e)) = (
            single_letter(beg).and_then(|c| LETTERS.find(c)),
            single_letter(end).and_then(|c| LETTERS.find(c)),
        ) else {
            return Err(format!(
                "host range `[{range}]` must be numbers (`[01:10]`) or single letters (`[a:f]`)"
            ));
        };
        if b > e {
            return Err(format!("host range `[{range}]` must have begin <= end"));
        }
        LETTERS[b..=e]
            .chars()
            .step_by(step)
            .map(String::from)
            .collect()
    };
    for item in items {
        if out.len() >= MAX_EXPANSION {
            return Err(format!(
                "host range in `{name}` gives more than {MAX_EXPANSION} hosts"
            ));
        }
        expand_into(&format!("{head}{item}{tail}"), out)?;
    }
    Ok(())
}

fn single_letter(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}

/// Splits `name:port` (one colon outside brackets, digits after it) into the name and
/// the port. IPv6 addresses (several colons) and `[v6]:port` are understood.
pub fn split_port(name: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = name.strip_prefix('[')
        && let Some(close) = rest.find(']')
        && rest[..close].contains(':')
    {
        // [v6addr] or [v6addr]:port
        let addr = &rest[..close];
        let after = &rest[close + 1..];
        return match after.strip_prefix(':') {
            Some(port) => parse_port(port).map(|p| (addr, Some(p))),
            None if after.is_empty() => Ok((addr, None)),
            None => Err(format!("cannot read the address `{name}`")),
        };
    }
    let mut depth = 0i32;
    let mut colons = Vec::new();
    for (i, c) in name.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => colons.push(i),
            _ => {}
        }
    }
    match colons.as_slice() {
        [i] => {
            let (host, port) = (&name[..*i], &name[*i + 1..]);
            if host.is_empty() {
                return Err(format!("host `{name}` has no name before the port"));
            }
            parse_port(port).map(|p| (host, Some(p)))
        }
        _ => Ok((name, None)),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .map_err(|_| format!("port `{port}` is not a number from 0 to 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ranges_keep_leading_zeros() {
        assert_eq!(
            expand("node[01:03]"),
            Ok(vec!["node01".into(), "node02".into(), "node03".into()])
        );
        assert_eq!(
            expand("n[8:10]"),
            Ok(vec!["n8".into(), "n9".into(), "n10".into()])
        );
        assert_eq!(expand("n[:2]").map(|v| v.len()), Ok(3));
        assert_eq!(
            expand("n[1:9:4].x"),
            Ok(vec!["n1.x".into(), "n5.x".into(), "n9.x".into()])
        );
    }

    #[test]
    fn letter_ranges_and_products() {
        assert_eq!(
            expand("node[a:c]"),
            Ok(vec!["nodea".into(), "nodeb".into(), "nodec".into()])
        );
        let all = expand("r[1:2]n[a:b]").unwrap_or_default();
        assert_eq!(all, vec!["r1na", "r1nb", "r2na", "r2nb"]);
    }

    #[test]
    fn bad_ranges_are_errors_not_panics() {
        for bad in [
            "n[3:1]",
            "n[1:]",
            "n[1]",
            "n[a:1]",
            "n[01:100]",
            "n[1:2:0]",
            "n[1:2",
            "n[aa:b]",
            "n[0:99999999999999999999]",
            "n[0:1000000]",
            "n[1:2:3:4]",
            "n[é:z]",
        ] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(split_port("web1:2222"), Ok(("web1", Some(2222))));
        assert_eq!(split_port("web1"), Ok(("web1", None)));
        assert_eq!(split_port("n[1:3]"), Ok(("n[1:3]", None)));
        assert_eq!(split_port("fe80::1"), Ok(("fe80::1", None)));
        assert_eq!(split_port("[fe80::1]:22"), Ok(("fe80::1", Some(22))));
        assert!(split_port("web:x").is_err());
        assert!(split_port(":22").is_err());
    }
}
