//! Random words no one can guess or repeat: the suffix of run ids (two runs started in
//! the same second must differ) and the nonce of a kept shell's end tags (no command's
//! output can forge them). They come from the system's randomness; without it (never
//! seen in practice) the time, the pid and an address stand in, which still differ
//! between runs and shells.

/// `n` random bytes, as `2n` lowercase hex digits.
pub fn hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mut seed = nanos ^ (u64::from(std::process::id()) << 32) ^ (bytes.as_ptr() as u64);
        for b in &mut bytes {
            // splitmix64: every byte of the seed reaches every output byte.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *b = (z ^ (z >> 31)) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_have_their_length_and_differ() {
        let (a, b) = (hex(16), hex(16));
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
        assert_eq!(hex(3).len(), 6);
    }
}
