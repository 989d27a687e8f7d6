//! Build secrets (`secrets`): their values read from files and step variables just
//! before the build, masked at once, and wiped from memory when dropped.

use crate::env::Environment;
use crate::inputs::{InputError, SecretSource, SecretSpec};
use crate::runner::Runner;

/// Build secrets by id. Their bytes are wiped when dropped; `Debug` shows ids only.
pub struct SecretValues(pub Vec<(String, Vec<u8>)>);

impl Drop for SecretValues {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for (_, value) in &mut self.0 {
            value.zeroize();
        }
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(id, _)| id))
            .finish()
    }
}

/// Reads the build secrets' values (files, step environment variables) and masks them
/// before anything could print them.
pub fn read(
    specs: &[SecretSpec],
    env: &Environment,
    runner: &Runner,
) -> Result<SecretValues, InputError> {
    // Wrapped from the start, so values read before a failing one are wiped too.
    let mut values = SecretValues(Vec::with_capacity(specs.len()));
    for spec in specs {
        let value = match &spec.source {
            SecretSource::File(path) => std::fs::read(path).map_err(|e| {
                InputError::invalid(
                    "secrets",
                    &spec.id,
                    format!("cannot read the secret file {}: {e}", path.display()),
                )
            })?,
            SecretSource::Env(name) => env
                .secret_vars
                .get(name)
                .ok_or_else(|| {
                    InputError::invalid(
                        "secrets",
                        &spec.id,
                        format!("the environment variable `{name}` is not set for this step"),
                    )
                })?
                .as_bytes()
                .to_vec(),
        };
        // The runner masks line by line; a multi-line value gets a mask per line.
        for line in String::from_utf8_lossy(&value).lines() {
            if line.trim().len() >= 4 {
                runner.add_mask(line.trim());
            }
        }
        values.0.push((spec.id.clone(), value));
    }
    Ok(values)
}
