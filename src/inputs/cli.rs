//! The command line: `--<input> <value>` or `--<input>=<value>` for every input in
//! `action.yml`, so the binary runs outside a runner with the same names. Repeating a flag
//! adds a line (`--tags a --tags b` is `a\nb`); a boolean flag alone means `true`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{ActionSpec, InputError};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(BTreeMap<String, String>),
    Help,
    Version,
}

/// Parses arguments (without the program name) into raw input values.
pub fn parse_args(spec: &ActionSpec, args: &[String]) -> Result<Command, InputError> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut args = args.iter().peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(InputError::Unknown(arg.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        let input = spec
            .input(name)
            .ok_or_else(|| InputError::Unknown(name.to_string()))?;
        let value = match inline {
            Some(value) => value,
            None if input.is_boolean() && args.peek().is_none_or(|next| next.starts_with("--")) => {
                "true".to_string()
            }
            None => args.next().cloned().ok_or_else(|| InputError::Missing {
                input: name.to_string(),
                hint: format!("`--{name}` needs a value"),
            })?,
        };
        values
            .entry(name.to_string())
            .and_modify(|v| {
                v.push('\n');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    Ok(Command::Run(values))
}

/// `--help`, generated from `action.yml`.
pub fn help(spec: &ActionSpec) -> String {
    let mut out = String::from(
        "ecr-build-push: build a Docker image and push it to Amazon ECR.\n\n\
         Usage: ecr-build-push --repository <name> [--<input> <value>]...\n\n\
         In a GitHub workflow the same inputs arrive as INPUT_* variables. Outside a runner\n\
         the outputs are printed to stdout as name=value lines.\n\nInputs:\n",
    );
    for input in &spec.inputs {
        let default = if input.required {
            " (required)".to_string()
        } else if input.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", input.default)
        };
        let _ = writeln!(
            out,
            "  --{}{default}\n      {}",
            input.name, input.description
        );
    }
    out.push_str("\nOutputs:\n");
    for output in &spec.outputs {
        let _ = writeln!(out, "  {:<20} {}", output.name, output.description);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    fn run(list: &[&str]) -> BTreeMap<String, String> {
        match parse_args(&ActionSpec::embedded(), &args(list)).unwrap() {
            Command::Run(values) => values,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    /// Both flag forms work, repeated flags add lines, bare booleans mean true.
    #[test]
    fn flags_map_to_input_names() {
        let values = run(&[
            "--repository",
            "team/app",
            "--tags=a",
            "--tags",
            "b",
            "--no-cache",
            "--push",
            "false",
            "--pull",
        ]);
        assert_eq!(values["repository"], "team/app");
        assert_eq!(values["tags"], "a\nb");
        assert_eq!(values["no-cache"], "true");
        assert_eq!(values["push"], "false");
        assert_eq!(values["pull"], "true");
    }

    /// Unknown flags, stray words and a missing value are errors that name the flag.
    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        let spec = ActionSpec::embedded();
        let err = parse_args(&spec, &args(&["--repo", "x"])).unwrap_err();
        assert_eq!(err, InputError::Unknown("repo".into()));
        assert!(parse_args(&spec, &args(&["app"])).is_err());
        let err = parse_args(&spec, &args(&["--repository"])).unwrap_err();
        assert_eq!(err.input(), "repository");
    }

    /// `--help` lists every input of action.yml with its default.
    #[test]
    fn help_lists_every_input() {
        let spec = ActionSpec::embedded();
        let text = help(&spec);
        for input in &spec.inputs {
            assert!(
                text.contains(&format!("--{}", input.name)),
                "{}",
                input.name
            );
        }
        assert!(text.contains("[default: latest]"));
        assert_eq!(
            parse_args(&spec, &args(&["--help"])).unwrap(),
            Command::Help
        );
    }
}
