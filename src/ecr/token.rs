//! The registry's side of the AWS API: the registry token (`GetAuthorizationToken`), its
//! renewal for the registry client when ECR says it expired, and the `BLOB_MOUNTING`
//! account setting the client's mounts depend on.

use std::fmt;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;

use super::{describe, Ecr};
use crate::credentials::Secret;
use crate::registry;

/// Credentials for the registry, from `GetAuthorizationToken`: private ECR's (sent as
/// Basic) or ECR Public's ([`super::public`], sent as `Bearer <token>` by the registry
/// client; the Docker daemon still logs in with the decoded user and password).
#[derive(Debug, Clone)]
pub struct RegistryAuth {
    /// `<account>.dkr.ecr.<region>.amazonaws.com` (or `public.ecr.aws`), without a scheme.
    pub registry: String,
    pub username: String,
    pub password: Secret,
    /// The token as ECR sends it (base64 of `user:password`), kept only to be masked.
    pub token: Secret,
    /// When ECR stops taking the token (12 hours after it was issued).
    pub expires_at: Option<std::time::SystemTime>,
    /// How the registry client gets a new token when ECR says this one expired.
    pub renew: Option<Arc<dyn registry::Renew>>,
    /// How the registry client sends them: Basic for private ECR, Bearer for ECR Public.
    pub scheme: registry::Scheme,
}

impl RegistryAuth {
    /// These credentials, or new ones when they expire within `margin` (and can be
    /// renewed): for a pusher that cannot renew them itself, the daemon's.
    pub async fn fresh_for(&self, margin: std::time::Duration) -> anyhow::Result<Self> {
        let expiring = self
            .expires_at
            .is_some_and(|at| at <= std::time::SystemTime::now() + margin);
        let Some(renew) = self.renew.as_ref().filter(|_| expiring) else {
            return Ok(self.clone());
        };
        let credentials = renew
            .renew()
            .await
            .map_err(|why| anyhow::anyhow!("cannot renew the registry token: {why}"))?;
        tracing::info!(
            "renewed the registry token for {}: it expired soon",
            self.registry
        );
        Ok(self.renewed(credentials))
    }

    /// These credentials with `credentials` (a renewal's) in place of the old ones.
    fn renewed(&self, credentials: registry::Credentials) -> Self {
        match credentials.scheme {
            registry::Scheme::Basic => Self {
                token: Secret::new(base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    credentials.username,
                    credentials.password.expose()
                ))),
                username: credentials.username,
                password: credentials.password,
                expires_at: credentials.expires_at,
                scheme: credentials.scheme,
                ..self.clone()
            },
            // A Bearer credential's password is the token as issued.
            registry::Scheme::Bearer => {
                let (username, password) = decode_token(credentials.password.expose())
                    .unwrap_or_else(|| {
                        (
                            credentials.username.clone(),
                            credentials.password.expose().to_string(),
                        )
                    });
                Self {
                    username,
                    password: Secret::new(password),
                    token: credentials.password,
                    expires_at: credentials.expires_at,
                    scheme: credentials.scheme,
                    ..self.clone()
                }
            }
        }
    }

    /// What the registry client logs in with: the user and password as Basic, or the
    /// token as issued as Bearer.
    pub fn login(&self) -> registry::Login {
        let password = match self.scheme {
            registry::Scheme::Basic => self.password.clone(),
            registry::Scheme::Bearer => self.token.clone(),
        };
        registry::Login {
            host: self.registry.clone(),
            credentials: registry::Credentials {
                username: self.username.clone(),
                password,
                expires_at: self.expires_at,
                scheme: self.scheme,
            },
            renew: self.renew.clone(),
        }
    }
}

/// `user:password` from a token that is base64 of them (both ECRs' tokens are).
pub(super) fn decode_token(token: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())?;
    let (username, password) = decoded.split_once(':')?;
    Some((username.to_string(), password.to_string()))
}

/// Gets a new registry token from ECR for the registry client, masking every new secret
/// (through `mask`) before it is used.
pub struct TokenRenewal {
    ecr: Ecr,
    registry_id: Option<String>,
    mask: Box<dyn Fn(&str) + Send + Sync>,
}

impl fmt::Debug for TokenRenewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRenewal")
            .field("region", &self.ecr.region)
            .field("registry_id", &self.registry_id)
            .finish_non_exhaustive()
    }
}

impl registry::Renew for TokenRenewal {
    fn renew(&self) -> futures_util::future::BoxFuture<'_, Result<registry::Credentials, String>> {
        Box::pin(async move {
            let auth = self
                .ecr
                .authorization(self.registry_id.as_deref())
                .await
                .map_err(|e| format!("{e:#}"))?;
            (self.mask)(auth.password.expose());
            (self.mask)(auth.token.expose());
            Ok(auth.login().credentials)
        })
    }
}

impl Ecr {
    /// Gets a registry token. The password is masked by the caller before anything else
    /// happens; it is never written to disk. The token opens every registry the caller
    /// may use, so for a cross-account `registry_id` only the host name changes.
    pub async fn authorization(&self, registry_id: Option<&str>) -> anyhow::Result<RegistryAuth> {
        let response = self
            .client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| self.reach_error(e))
            .with_context(|| format!("GetAuthorizationToken failed at {}", self.endpoint))?;
        let data = response
            .authorization_data()
            .first()
            .context("GetAuthorizationToken returned no authorization data")?;
        // An expiry in the past is not refused: clocks differ, and ECR is the judge.
        let token = data
            .authorization_token()
            .context("GetAuthorizationToken returned no token")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .context("the registry token is not base64 `user:password`")?;
        let (username, password) = decoded
            .split_once(':')
            .context("the registry token is not `user:password`")?;
        let endpoint = data
            .proxy_endpoint()
            .context("GetAuthorizationToken returned no proxy endpoint")?;
        let registry = registry_host(endpoint, registry_id);
        let expires_at = data.expires_at().and_then(|t| {
            std::time::SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(
                u64::try_from(t.secs()).ok()?,
            ))
        });
        Ok(RegistryAuth {
            registry,
            username: username.to_string(),
            password: Secret::new(password.to_string()),
            token: Secret::new(token.to_string()),
            expires_at,
            renew: None,
            scheme: registry::Scheme::Basic,
        })
    }

    /// How the registry client renews `registry_id`'s token: `GetAuthorizationToken`
    /// again, each new secret given to `mask` first.
    pub fn token_renewal(
        &self,
        registry_id: Option<&str>,
        mask: impl Fn(&str) + Send + Sync + 'static,
    ) -> Arc<dyn registry::Renew> {
        Arc::new(TokenRenewal {
            ecr: self.clone(),
            registry_id: registry_id.map(ToString::to_string),
            mask: Box::new(mask),
        })
    }

    /// ECR's `BLOB_MOUNTING` account setting, read once per run. A role that may not
    /// read it (`ecr:GetAccountSetting`), or a partition without it, leaves it unknown:
    /// mounts are then tried, which costs a request per layer at most. So does a push to
    /// another account's registry (`registry_id`), whose setting the caller cannot read.
    pub async fn blob_mounting(&self, registry_id: Option<&str>) -> registry::Mounting {
        if registry_id.is_some() {
            return registry::Mounting::Unknown;
        }
        match self
            .client
            .get_account_setting()
            .name("BLOB_MOUNTING")
            .send()
            .await
        {
            Ok(answer) => {
                let value = answer.value().unwrap_or_default();
                tracing::debug!("ECR account setting BLOB_MOUNTING: {value}");
                registry::Mounting::from_setting(value)
            }
            Err(err) => {
                tracing::debug!(
                    "cannot read ECR's BLOB_MOUNTING setting ({}): mounts will be tried",
                    describe(&err)
                );
                registry::Mounting::Unknown
            }
        }
    }
}

/// `https://<caller>.dkr.ecr.<region>.amazonaws.com` to the host of the registry owned
/// by `registry_id` (the first label is the account).
fn registry_host(proxy_endpoint: &str, registry_id: Option<&str>) -> String {
    let host = proxy_endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match (registry_id, host.split_once('.')) {
        (Some(id), Some((_, rest))) => format!("{id}.{rest}"),
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output of credentials never contains the password.
    #[test]
    fn registry_auth_debug_redacts_the_password() {
        let auth = RegistryAuth {
            registry: "r".into(),
            username: "AWS".into(),
            password: Secret::new("hunter2".into()),
            token: Secret::new("aHVudGVyMg==".into()),
            expires_at: None,
            renew: None,
            scheme: registry::Scheme::Basic,
        };
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("aHVudGVyMg"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    /// A renewed ECR Public token replaces the token as issued (what the registry client
    /// sends as Bearer) and the user and password it decodes to (the daemon's login).
    #[test]
    fn a_renewed_bearer_token_keeps_both_forms() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let auth = RegistryAuth {
            registry: "public.ecr.aws".into(),
            username: "AWS".into(),
            password: Secret::new("old".into()),
            token: Secret::new(b64.encode("AWS:old")),
            expires_at: None,
            renew: None,
            scheme: registry::Scheme::Bearer,
        };
        let renewed = auth.renewed(registry::Credentials {
            username: "AWS".into(),
            password: Secret::new(b64.encode("AWS:new")),
            expires_at: None,
            scheme: registry::Scheme::Bearer,
        });
        assert_eq!(renewed.token.expose(), b64.encode("AWS:new"));
        assert_eq!(renewed.password.expose(), "new");
        assert_eq!(renewed.username, "AWS");
        assert_eq!(renewed.scheme, registry::Scheme::Bearer);
        assert_eq!(
            renewed.login().credentials.password.expose(),
            b64.encode("AWS:new")
        );
    }

    /// The registry host comes from the proxy endpoint, with the owner's account swapped in
    /// for cross-account pushes.
    #[test]
    fn registry_host_follows_registry_id() {
        let endpoint = "https://111111111111.dkr.ecr.eu-west-1.amazonaws.com";
        assert_eq!(
            registry_host(endpoint, None),
            "111111111111.dkr.ecr.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            registry_host(endpoint, Some("222222222222")),
            "222222222222.dkr.ecr.eu-west-1.amazonaws.com"
        );
    }
}
