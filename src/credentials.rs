//! Values that must never reach a log: the registry password, proxy passwords. Here, not
//! in [`crate::ecr`] or [`crate::network`], so both (and [`crate::registry`]) use it
//! without importing each other.

use std::fmt;

/// A secret held in memory only. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
