//! Random values, from the operating system's generator (`getrandom(2)` on Linux): the
//! BuildKit session's ids, the runner's stop-commands tokens and output delimiters, spool
//! file names, and the jitter of retries. None of them is a key; they need to be
//! unpredictable to whoever else writes to the log, the outputs file or the spool
//! folder, and unique.

use std::fmt::Write as _;

/// 64 random bits.
///
/// # Panics
/// When the OS has no random source to give: std's `HashMap` draws its keys from the same
/// source and panics then too, so the process could not have come this far without it.
pub fn u64() -> u64 {
    getrandom::u64().expect("the operating system's random number generator failed")
}

/// 128 random bits as 32 lowercase hex digits.
pub fn token() -> String {
    let mut token = String::with_capacity(32);
    for _ in 0..2 {
        let _ = write!(token, "{:016x}", u64());
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token is 32 hex digits, and two tokens differ (128 bits: a repeat is not chance).
    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{a}");
        assert_ne!(a, b);
    }

    /// Numbers use all 64 bits: among 64 draws, each bit is set in some and clear in
    /// some (that some fair bit is the same 64 times has a chance under 2^-57).
    #[test]
    fn numbers_use_every_bit() {
        let draws: Vec<u64> = (0..64).map(|_| u64()).collect();
        let (any, all) = draws
            .iter()
            .fold((0u64, u64::MAX), |(any, all), d| (any | d, all & d));
        assert_eq!((any, all), (u64::MAX, 0));
    }
}
