//! `action.yml`, compiled into the binary: the single source of input names, descriptions
//! and defaults. The parser, `--help` and the tests all read it from here.

use serde::Deserialize;

/// The action's metadata file, embedded at compile time.
pub const ACTION_YML: &str = include_str!("../../action.yml");

/// One input as declared in `action.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: String,
}

impl InputSpec {
    /// Inputs whose default is `true` or `false` are booleans; on the command line they
    /// may be given without a value (`--no-cache`).
    pub fn is_boolean(&self) -> bool {
        matches!(self.default.as_str(), "true" | "false")
    }
}

/// One output as declared in `action.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Deserialize)]
struct RawAction {
    inputs: serde_norway::Mapping,
    outputs: serde_norway::Mapping,
}

#[derive(Debug, Deserialize)]
struct RawInput {
    #[serde(default)]
    description: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
struct RawOutput {
    #[serde(default)]
    description: String,
}

/// Inputs and outputs in the order `action.yml` declares them.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
}

impl ActionSpec {
    /// The embedded `action.yml`. It is checked by the tests, so a parse failure here is a
    /// build defect, not a user error.
    pub fn embedded() -> Self {
        Self::parse(ACTION_YML).expect("the embedded action.yml is valid")
    }

    pub fn parse(yaml: &str) -> Result<Self, serde_norway::Error> {
        let raw: RawAction = serde_norway::from_str(yaml)?;
        let mut inputs = Vec::new();
        for (name, value) in raw.inputs {
            let input: RawInput = serde_norway::from_value(value)?;
            inputs.push(InputSpec {
                name: scalar_to_string(&name),
                description: input.description,
                required: input.required,
                default: input
                    .default
                    .as_ref()
                    .map(scalar_to_string)
                    .unwrap_or_default(),
            });
        }
        let mut outputs = Vec::new();
        for (name, value) in raw.outputs {
            let output: RawOutput = serde_norway::from_value(value)?;
            outputs.push(OutputSpec {
                name: scalar_to_string(&name),
                description: output.description,
            });
        }
        Ok(Self { inputs, outputs })
    }

    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }
}

/// The runner passes every default as a string, whatever its YAML type (`default: true`
/// arrives as `true`).
fn scalar_to_string(value: &serde_norway::Value) -> String {
    match value {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Bool(b) => b.to_string(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Null => String::new(),
        other => serde_norway::to_string(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded action.yml parses and declares the inputs and outputs the issue names.
    #[test]
    fn embedded_action_yml_declares_the_documented_inputs_and_outputs() {
        let spec = ActionSpec::embedded();
        let inputs: Vec<_> = spec.inputs.iter().map(|i| i.name.as_str()).collect();
        for name in [
            "repository",
            "tags",
            "context",
            "dockerfile",
            "build-args",
            "labels",
            "target",
            "platforms",
            "platform",
            "platform-hosts",
            "pull",
            "no-cache",
            "push",
            "create-repository",
            "image-tag-mutability",
            "image-tag-mutability-exclusions",
            "scan-on-push",
            "encryption-type",
            "kms-key",
            "repository-tags",
            "lifecycle-policy",
            "repository-policy",
            "registry-id",
            "aws-region",
            "on-tag-exists",
            "builder",
            "push-engine",
            "compression",
            "compression-level",
            "secrets",
            "cache-from",
            "build-platforms",
            "provenance",
            "sign",
            "signing-key",
            "signing-timeout",
            "also-push-to",
            "replication-timeout",
        ] {
            assert!(inputs.contains(&name), "action.yml lacks input {name}");
        }
        let outputs: Vec<_> = spec.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            outputs,
            [
                "registry",
                "repository-uri",
                "image-uri",
                "image-digest",
                "image-uri-by-digest",
                "image-uris",
                "image-id",
                "platform-digests",
                "scan-findings",
                "index-assembled",
                "provenance-digest",
                "signature-digest",
                "targets"
            ]
        );
        assert!(spec.input("repository").unwrap().required);
        assert_eq!(spec.input("tags").unwrap().default, "latest");
        assert!(spec.input("push").unwrap().is_boolean());
    }
}
