//! Validators for single input values. Each returns the reason a value is invalid, as a
//! sentence fragment the caller turns into "invalid value `x` for input `y`: reason".

/// ECR repository names: 2 to 256 characters, path components of lower-case letters and
/// digits separated by single `.`, `_` or `-`, components separated by `/`
/// (`(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`).
pub fn repository_name(name: &str) -> Result<(), String> {
    const MIN: usize = 2;
    const MAX: usize = 256;
    if name.len() < MIN || name.len() > MAX {
        return Err(format!(
            "ECR repository names are {MIN} to {MAX} characters long, this one has {}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(char::is_ascii_uppercase) {
        return Err(format!(
            "ECR repository names are lower case (found `{c}`); try `{}`",
            name.to_ascii_lowercase()
        ));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err("a repository name cannot start or end with `/`".into());
    }
    for component in name.split('/') {
        path_component(component).map_err(|reason| {
            if component.is_empty() {
                "a repository name cannot contain `//`".to_string()
            } else {
                format!("path component `{component}` {reason}")
            }
        })?;
    }
    Ok(())
}

fn path_component(component: &str) -> Result<(), &'static str> {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let is_sep = |c: char| matches!(c, '.' | '_' | '-');
    if component.is_empty() {
        return Err("is empty");
    }
    if let Some(bad) = component.chars().find(|&c| !is_alnum(c) && !is_sep(c)) {
        return Err(if bad.is_whitespace() {
            "contains white space"
        } else {
            "may contain only a-z, 0-9, `.`, `_` and `-`"
        });
    }
    let first = component.chars().next().unwrap_or('.');
    let last = component.chars().last().unwrap_or('.');
    if !is_alnum(first) || !is_alnum(last) {
        return Err("must start and end with a letter or digit");
    }
    let bytes = component.as_bytes();
    if bytes
        .windows(2)
        .any(|w| is_sep(w[0] as char) && is_sep(w[1] as char))
    {
        return Err("cannot have two separators (`.`, `_`, `-`) in a row");
    }
    Ok(())
}

/// Docker tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn tag(tag: &str) -> Result<(), String> {
    const MAX: usize = 128;
    if tag.len() > MAX {
        return Err(format!(
            "a tag is at most {MAX} characters, this one has {}",
            tag.len()
        ));
    }
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err("a tag cannot be empty".into()),
        Some(c) if !(c.is_ascii_alphanumeric() || c == '_') => {
            return Err(format!(
                "a tag must start with a letter, digit or `_`, not `{c}`"
            ))
        }
        Some(_) => {}
    }
    if let Some(c) = chars.find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!(
            "a tag may contain only letters, digits, `_`, `.` and `-`, not `{c}`"
        ));
    }
    Ok(())
}

/// A folder or file in the workspace, as `context` and `dockerfile` take: not a remote
/// context (a Git or HTTP URL, which `docker build` and build-push-action accept) nor
/// `-` for standard input, which would otherwise fail later as a missing path.
pub fn local_path(value: &str) -> Result<(), String> {
    let remote = value.contains("://") || value.starts_with("git@");
    if remote {
        Err(
            "remote contexts (Git or HTTP URLs) are not built: check the repository out \
             with actions/checkout first and give its folder, e.g. `.`"
                .into(),
        )
    } else if value == "-" {
        Err("`-` (standard input) is not read: give a path in the workspace".into())
    } else {
        Ok(())
    }
}

/// A host name or IPv4 address with an optional port, as `registry-endpoint` takes.
pub fn host_port(value: &str) -> Result<(), String> {
    let (host, port) = value.rsplit_once(':').unwrap_or((value, "443"));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if host_ok && port.parse::<u16>().is_ok_and(|p| p > 0) {
        Ok(())
    } else {
        Err(
            "expected the endpoint's host name, with an optional `:port` and no scheme or \
             path, e.g. `vpce-0abc-xyz.dkr.ecr.us-east-1.vpce.amazonaws.com`"
                .into(),
        )
    }
}

/// AWS region codes: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub fn region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let Some((number, words)) = parts.split_last() else {
        unreachable!("split always yields one part")
    };
    let ok = parts.len() >= 3
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
        && words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()));
    if ok {
        Ok(())
    } else {
        Err("expected an AWS region code such as `us-east-1`".into())
    }
}

/// AWS account IDs are twelve digits.
pub fn account_id(id: &str) -> Result<(), String> {
    if id.len() == 12 && id.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err("an AWS account ID is twelve digits".into())
    }
}

/// Booleans as the runner's toolkit accepts them (YAML 1.2 core schema).
pub fn boolean(value: &str) -> Result<bool, String> {
    match value {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        _ => Err("expected `true` or `false`".into()),
    }
}

/// A duration such as `90s`, `10m`, `1h` or `1m30s`: numbers with the units `s`, `m`,
/// `h`; more than zero, at most a day.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    const BAD: &str = "expected a duration such as `90s`, `10m` or `1h`";
    const DAY: u64 = 86_400;
    let mut seconds: u64 = 0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(BAD.into()),
        };
        let value: u64 = number.parse().map_err(|_| BAD.to_string())?;
        seconds = seconds.saturating_add(value.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("{BAD}: `{number}` has no unit"));
    }
    if seconds == 0 {
        return Err(format!("{BAD}, more than zero"));
    }
    if seconds > DAY {
        return Err("at most a day (`24h`)".into());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// `KEY=VALUE` lines; blank lines are skipped and the value may contain `=`.
pub fn key_value_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {} `{line}` is not KEY=VALUE", index + 1));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!(
                "line {} has an empty key or a key with white space",
                index + 1
            ));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names ECR accepts pass; each kind of name ECR rejects fails with a reason.
    #[test]
    fn repository_names_follow_ecr_rules() {
        for ok in [
            "ab",
            "app",
            "team/app",
            "a.b_c-d/e1",
            "x/y/z",
            &"a".repeat(256),
        ] {
            assert!(repository_name(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "a",
            "App",
            "team/../app",
            "/app",
            "app/",
            "team//app",
            "-app",
            "app-",
            "a..b",
            "a b",
            "ap$p",
            &"a".repeat(300),
        ] {
            assert!(repository_name(bad).is_err(), "{bad} should be invalid");
        }
        assert!(repository_name("App").unwrap_err().contains("lower case"));
    }

    /// Docker's tag grammar: 128 characters, no leading `.` or `-`, no `:`.
    #[test]
    fn tags_follow_docker_rules() {
        for ok in ["latest", "v1.2.3", "_x", "sha-abc123", &"a".repeat(128)] {
            assert!(tag(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", "a b", &"a".repeat(129)] {
            assert!(tag(bad).is_err(), "{bad} should be invalid");
        }
    }

    /// Regions and account IDs accept the usual forms only (platforms: see
    /// `inputs::platforms`).
    #[test]
    fn region_and_account_forms() {
        for ok in ["us-east-1", "us-gov-west-1", "cn-north-1", "eu-central-2"] {
            assert!(region(ok).is_ok(), "{ok}");
        }
        for bad in ["moon", "us-east", "US-EAST-1", "us-east-1a", ""] {
            assert!(region(bad).is_err(), "{bad}");
        }
        assert!(account_id("123456789012").is_ok());
        assert!(account_id("12345678901").is_err());
        assert!(account_id("12345678901a").is_err());
    }

    /// Durations take s, m and h, alone or combined; no unit, zero or junk is an error.
    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        let secs = |t: &str| duration(t).unwrap().as_secs();
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("10m"), 600);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("1m30s"), 90);
        for bad in ["", "10", "0s", "10 m", "5d", "m", "-1s", "25h"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    /// KEY=VALUE parsing keeps `=` in values and names the bad line.
    #[test]
    fn key_value_lines_keep_equals_in_values_and_name_bad_lines() {
        assert_eq!(
            key_value_lines("A=1\n\n B = x=y \n").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
        assert!(key_value_lines("A=1\nNOVALUE")
            .unwrap_err()
            .contains("line 2"));
        assert!(key_value_lines("=1").is_err());
        assert_eq!(boolean("True"), Ok(true));
        assert!(boolean("yes").is_err());
    }
}
