//! `also-push-to`: the registries the same build goes to besides the primary one, one per
//! line, each optionally followed by the IAM role to assume for it:
//!
//! ```text
//! us-west-2                                          same account, another region
//! 210987654321:eu-west-1                             another account (registry policy)
//! 210987654321.dkr.ecr.eu-west-1.amazonaws.com/app   a full host, another repository
//! 210987654321:eu-west-1 arn:aws:iam::210987654321:role/ecr-push    through a role
//! public.ecr.aws/my-alias/app                        ECR Public
//! eu-central-1 replicated                            ECR's replication takes it there
//! ```
//!
//! Host forms are ECR's (ECR endpoints reference): `<account>.dkr.ecr.<region>.amazonaws.com`
//! (`.amazonaws.com.cn` in China), FIPS `<account>.dkr.ecr-fips.<region>.amazonaws.com`,
//! dual-stack `<account>.dkr-ecr.<region>.on.aws`, and `public.ecr.aws/<alias>/<repo>`.

use super::validate;
use super::{InputError, PushEngine};

const INPUT: &str = "also-push-to";

/// One extra target, as given (the account of a short form is the primary's, known only
/// once the primary's registry is: [`TargetSpec::account_or`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub registry: TargetRegistry,
    /// The repository there; `None`: the `repository` input.
    pub repository: Option<String>,
    /// `arn:aws:…:iam::<account>:role/<name>`, assumed for this target.
    pub role: Option<String>,
    /// `replicated`: not pushed to; the run waits for ECR's replication of the primary's
    /// image to get there.
    pub replicated: bool,
    /// The line as given, for messages.
    pub text: String,
}

/// Which registry a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRegistry {
    /// A private registry: `account` `None` means the primary's account.
    Private {
        account: Option<String>,
        region: String,
        endpoint: HostForm,
    },
    /// ECR Public under `alias` (`public.ecr.aws/<alias>/<repository>`).
    Public { alias: String },
}

/// How the registry host of a private target is spelled; the ECR API host follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostForm {
    Standard,
    /// `.amazonaws.com.cn`
    China,
    Fips,
    DualStack,
}

impl HostForm {
    /// The registry host of `account` in `region`.
    pub fn registry_host(self, account: &str, region: &str) -> String {
        match self {
            Self::Standard => format!("{account}.dkr.ecr.{region}.amazonaws.com"),
            Self::China => format!("{account}.dkr.ecr.{region}.amazonaws.com.cn"),
            Self::Fips => format!("{account}.dkr.ecr-fips.{region}.amazonaws.com"),
            Self::DualStack => format!("{account}.dkr-ecr.{region}.on.aws"),
        }
    }

    /// The ECR API endpoint that goes with the registry host.
    pub fn api_endpoint(self, region: &str) -> String {
        match self {
            Self::Standard => format!("https://api.ecr.{region}.amazonaws.com"),
            Self::China => format!("https://api.ecr.{region}.amazonaws.com.cn"),
            Self::Fips => format!("https://ecr-fips.{region}.amazonaws.com"),
            Self::DualStack => format!("https://ecr.{region}.api.aws"),
        }
    }
}

impl TargetSpec {
    /// The region and host form of a private target; `None` for ECR Public.
    pub fn private(&self) -> Option<(&str, HostForm)> {
        match &self.registry {
            TargetRegistry::Private {
                region, endpoint, ..
            } => Some((region, *endpoint)),
            TargetRegistry::Public { .. } => None,
        }
    }

    /// The account of a private target: its own, or `primary`'s for a short form.
    pub fn account_or<'a>(&'a self, primary: &'a str) -> Option<&'a str> {
        match &self.registry {
            TargetRegistry::Private { account, .. } => Some(account.as_deref().unwrap_or(primary)),
            TargetRegistry::Public { .. } => None,
        }
    }
}

/// `also-push-to`, and what it cannot go with: nothing to push, the daemon's pusher (it
/// compresses again for each registry), or a build shared by matrix legs (whose records
/// live in the primary repository only).
pub(super) fn parse_input(
    raw: &super::Raw<'_>,
    push: bool,
    push_engine: PushEngine,
    shared: bool,
) -> Result<Vec<TargetSpec>, InputError> {
    raw.read.borrow_mut().insert("also-push-to".into());
    let text = raw.values.get("also-push-to").cloned().unwrap_or_default();
    let targets = parse(&text)?;
    let pushed_to = targets.iter().any(|t| !t.replicated);
    let conflict = if targets.is_empty() {
        None
    } else if !push {
        Some("`push` is false, so there is nothing to push there")
    } else if push_engine == PushEngine::Daemon && pushed_to {
        Some(
            "`push-engine: daemon` pushes to one registry at a time and compresses every \
             layer again for each; use `push-engine: auto` (the default) or `direct`",
        )
    } else if shared {
        Some(
            "a build shared by matrix legs (`build-platforms`) records its platforms in the \
             primary repository only; a later step of this action with the same `tags`, \
             `on-tag-exists: skip` and `also-push-to` copies the assembled index there",
        )
    } else {
        None
    };
    match conflict {
        Some(why) => Err(InputError::invalid("also-push-to", text.trim(), why)),
        None => Ok(targets),
    }
}

/// Parses `also-push-to`: one target per line (blank lines and `#` comments skipped),
/// each validated; a target named twice is an error.
pub fn parse(text: &str) -> Result<Vec<TargetSpec>, InputError> {
    let mut targets: Vec<TargetSpec> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let target = parse_line(line).map_err(|reason| InputError::invalid(INPUT, line, reason))?;
        if let Some(twin) = targets.iter().find(|t| same(t, &target)) {
            return Err(InputError::invalid(
                INPUT,
                line,
                format!(
                    "it names the same registry and repository as `{}`",
                    twin.text
                ),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

fn same(a: &TargetSpec, b: &TargetSpec) -> bool {
    // Host forms of one registry (FIPS, dual-stack) reach the same repositories.
    let key = |t: &TargetSpec| match &t.registry {
        TargetRegistry::Private {
            account, region, ..
        } => (account.clone(), region.clone()),
        TargetRegistry::Public { alias } => (Some("public".into()), alias.clone()),
    };
    key(a) == key(b) && a.repository == b.repository
}

fn parse_line(line: &str) -> Result<TargetSpec, String> {
    let mut words = line.split_whitespace();
    let target = words.next().unwrap_or_default();
    let (mut role, mut replicated) = (None, false);
    for word in words {
        match word {
            "replicated" if !replicated => replicated = true,
            arn if arn.starts_with("arn:") && role.is_none() => {
                role_arn(arn)?;
                role = Some(arn.to_string());
            }
            extra => {
                return Err(format!(
                    "`{extra}` is not expected there: a line is a target, then optionally \
                     the IAM role to assume for it and `replicated`"
                ))
            }
        }
    }
    let (registry, repository) = parse_target(target)?;
    if replicated && matches!(registry, TargetRegistry::Public { .. }) {
        return Err("ECR's replication does not copy to ECR Public: push there".into());
    }
    if let Some(repository) = &repository {
        validate::repository_name(repository).map_err(|why| format!("repository: {why}"))?;
    }
    Ok(TargetSpec {
        registry,
        repository,
        role,
        replicated,
        text: line.to_string(),
    })
}

/// `region`, `account:region`, a registry host with an optional `/repository`, or
/// `public.ecr.aws/<alias>[/<repository>]`.
fn parse_target(target: &str) -> Result<(TargetRegistry, Option<String>), String> {
    let (host, path) = match target.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (target, None),
    };
    let host = host.to_ascii_lowercase();
    if host == "public.ecr.aws" {
        let path = path.unwrap_or_default();
        let (alias, repository) = match path.split_once('/') {
            Some((alias, repository)) => (alias, Some(repository.to_string())),
            None => (path, None),
        };
        public_alias(alias)?;
        return Ok((
            TargetRegistry::Public {
                alias: alias.to_string(),
            },
            repository.filter(|r| !r.is_empty()),
        ));
    }
    if host.contains('.') {
        let (account, region, endpoint) = private_host(&host)?;
        return Ok((
            TargetRegistry::Private {
                account: Some(account),
                region,
                endpoint,
            },
            path.map(ToString::to_string).filter(|r| !r.is_empty()),
        ));
    }
    if path.is_some() {
        return Err(
            "a repository goes after a registry host (`<account>.dkr.ecr.<region>.amazonaws.com/<repository>`), \
             not after a short form"
                .into(),
        );
    }
    let (account, region) = match host.split_once(':') {
        Some((account, region)) => {
            validate::account_id(account)?;
            (Some(account.to_string()), region.to_string())
        }
        None => (None, host.clone()),
    };
    validate::region(&region).map_err(|why| {
        format!(
            "{why}; a target is a region (`us-west-2`), `account:region`, a registry host \
             or `public.ecr.aws/<alias>/<repository>`"
        )
    })?;
    // The China regions' registries are under `amazonaws.com.cn`.
    let endpoint = if region.starts_with("cn-") {
        HostForm::China
    } else {
        HostForm::Standard
    };
    Ok((
        TargetRegistry::Private {
            account,
            region,
            endpoint,
        },
        None,
    ))
}

/// The account, region and form of an ECR registry host.
fn private_host(host: &str) -> Result<(String, String, HostForm), String> {
    let not_ecr = || {
        format!(
            "`{host}` is not an ECR registry host: expected \
             `<account>.dkr.ecr.<region>.amazonaws.com`, its FIPS (`dkr.ecr-fips`) or \
             dual-stack (`<account>.dkr-ecr.<region>.on.aws`) form, or `public.ecr.aws`"
        )
    };
    let (account, rest) = host.split_once('.').ok_or_else(not_ecr)?;
    let (form, region) = if let Some(rest) = rest.strip_prefix("dkr.ecr.") {
        if let Some(region) = rest.strip_suffix(".amazonaws.com") {
            (HostForm::Standard, region)
        } else if let Some(region) = rest.strip_suffix(".amazonaws.com.cn") {
            (HostForm::China, region)
        } else {
            return Err(not_ecr());
        }
    } else if let Some(rest) = rest.strip_prefix("dkr.ecr-fips.") {
        (
            HostForm::Fips,
            rest.strip_suffix(".amazonaws.com").ok_or_else(not_ecr)?,
        )
    } else if let Some(rest) = rest.strip_prefix("dkr-ecr.") {
        (
            HostForm::DualStack,
            rest.strip_suffix(".on.aws").ok_or_else(not_ecr)?,
        )
    } else {
        return Err(not_ecr());
    };
    validate::account_id(account).map_err(|why| format!("`{host}`: {why}"))?;
    validate::region(region).map_err(|why| format!("`{host}`: {why}"))?;
    Ok((account.to_string(), region.to_string(), form))
}

/// An ECR Public registry alias: 2 to 50 lowercase letters, digits, `-` and `_`,
/// starting with a letter or digit (ECR Public API reference, `RegistryAlias.name`).
fn public_alias(alias: &str) -> Result<(), String> {
    let ok = (2..=50).contains(&alias.len())
        && alias.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{alias}` is not an ECR Public registry alias: expected \
             `public.ecr.aws/<alias>/<repository>`, the alias 2 to 50 lowercase letters, \
             digits, `-` or `_`"
        ))
    }
}

/// `arn:<partition>:iam::<account>:role/<path/name>`.
fn role_arn(role: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`{role}` is not an IAM role ARN: expected `arn:aws:iam::<account>:role/<name>` \
             after the target"
        )
    };
    let rest = role.strip_prefix("arn:").ok_or_else(bad)?;
    let (partition, rest) = rest.split_once(':').ok_or_else(bad)?;
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
        return Err(bad());
    }
    let rest = rest.strip_prefix("iam::").ok_or_else(bad)?;
    let (account, name) = rest.split_once(":role/").ok_or_else(bad)?;
    validate::account_id(account).map_err(|_| bad())?;
    if name.is_empty() || name.len() > 512 || name.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> TargetSpec {
        let mut all = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn reason(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_region_alone_is_the_primary_account_there() {
        let t = one("us-west-2");
        assert_eq!(
            t.registry,
            TargetRegistry::Private {
                account: None,
                region: "us-west-2".into(),
                endpoint: HostForm::Standard
            }
        );
        assert_eq!(t.account_or("123456789012"), Some("123456789012"));
        assert_eq!(t.repository, None);
    }

    /// Regression: a China region's short form got the registry and API of
    /// `amazonaws.com`, which do not exist there.
    #[test]
    fn a_china_region_alone_is_under_amazonaws_com_cn() {
        let t = one("210987654321:cn-northwest-1");
        let TargetRegistry::Private { endpoint, .. } = t.registry else {
            panic!("private");
        };
        assert_eq!(endpoint, HostForm::China);
        assert_eq!(
            endpoint.api_endpoint("cn-northwest-1"),
            "https://api.ecr.cn-northwest-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn account_and_region_with_a_role() {
        let t = one("210987654321:eu-west-1   arn:aws:iam::210987654321:role/ci/ecr-push");
        assert_eq!(t.account_or("123456789012"), Some("210987654321"));
        assert_eq!(
            t.role.as_deref(),
            Some("arn:aws:iam::210987654321:role/ci/ecr-push")
        );
    }

    #[test]
    fn every_host_form_of_ecr() {
        for (host, form, region) in [
            (
                "210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/app",
                HostForm::Standard,
                "eu-west-1",
            ),
            (
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/team/app",
                HostForm::China,
                "cn-north-1",
            ),
            (
                "210987654321.dkr.ecr-fips.us-gov-west-1.amazonaws.com/team/app",
                HostForm::Fips,
                "us-gov-west-1",
            ),
            (
                "210987654321.dkr-ecr.us-west-2.on.aws/team/app",
                HostForm::DualStack,
                "us-west-2",
            ),
        ] {
            let t = one(host);
            assert_eq!(
                t.registry,
                TargetRegistry::Private {
                    account: Some("210987654321".into()),
                    region: region.into(),
                    endpoint: form
                },
                "{host}"
            );
            assert_eq!(t.repository.as_deref(), Some("team/app"));
            assert_eq!(
                host.split_once('/').unwrap().0,
                form.registry_host("210987654321", region)
            );
        }
    }

    #[test]
    fn ecr_public_with_and_without_a_repository() {
        let t = one("public.ecr.aws/my-alias/team/app");
        assert_eq!(
            t.registry,
            TargetRegistry::Public {
                alias: "my-alias".into()
            }
        );
        assert_eq!(t.repository.as_deref(), Some("team/app"));
        assert_eq!(one("public.ecr.aws/my-alias").repository, None);
        assert!(reason("public.ecr.aws").contains("registry alias"));
        assert!(reason("public.ecr.aws/Upper/app").contains("registry alias"));
    }

    #[test]
    fn replicated_goes_with_a_role_in_either_order() {
        for line in [
            "210987654321:eu-west-1 replicated arn:aws:iam::210987654321:role/read",
            "210987654321:eu-west-1 arn:aws:iam::210987654321:role/read replicated",
        ] {
            let t = one(line);
            assert!(t.replicated, "{line}");
            assert_eq!(
                t.role.as_deref(),
                Some("arn:aws:iam::210987654321:role/read")
            );
        }
        assert!(!one("us-west-2").replicated);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let all = parse("\n# prod\nus-west-2\n\n  eu-west-1  \n").unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_target_named_twice_is_refused_whatever_its_spelling() {
        let err = reason("123456789012:us-west-2\n123456789012.dkr-ecr.us-west-2.on.aws");
        assert!(err.contains("same registry and repository"), "{err}");
        assert!(err.contains("also-push-to"), "{err}");
        // Another repository in the same registry is another target.
        assert_eq!(
            parse(
                "123456789012.dkr.ecr.us-west-2.amazonaws.com/aa\n\
                 123456789012.dkr.ecr.us-west-2.amazonaws.com/bb"
            )
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn wrong_values_say_what_was_expected() {
        for (text, expected) in [
            ("us-west", "region"),
            ("12345:us-west-2", "account"),
            ("us-west-2/app", "after a registry host"),
            ("registry.example.com/app", "not an ECR registry host"),
            (
                "123456789012.dkr.ecr.us-west-2.example.com",
                "not an ECR registry host",
            ),
            ("us-west-2 arn:aws:iam::1234:role/x", "IAM role ARN"),
            ("us-west-2 arn:aws:iam::123456789012:user/x", "IAM role ARN"),
            (
                "us-west-2 arn:aws:iam::123456789012:role/x extra",
                "not expected",
            ),
            ("us-west-2 replicated replicated", "not expected"),
            (
                "public.ecr.aws/alias replicated",
                "does not copy to ECR Public",
            ),
            (
                "123456789012.dkr.ecr.us-west-2.amazonaws.com/UPPER",
                "repository",
            ),
        ] {
            let err = reason(text);
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("also-push-to"), "{text}: {err}");
        }
    }
}
