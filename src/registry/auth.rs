//! The registry's credentials, sent pre-emptively as HTTP Basic (ECR has no token
//! service: ECR User Guide, registry authentication), and their renewal when ECR says the
//! token expired (a 403 `DENIED`: [`super::rules::token_expired`]). A token lasts 12 hours,
//! so a long build or a slow upload can outlive it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use hyper::header::HeaderValue;

use crate::credentials::Secret;

/// A user name and password for one registry host.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// When the registry stops taking them, as the issuer said (informational: ECR is the
    /// judge, and clocks differ).
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Gets new credentials for the same registry (for ECR: `GetAuthorizationToken` again).
pub trait Renew: Send + Sync + fmt::Debug {
    fn renew(&self) -> BoxFuture<'_, Result<Credentials, String>>;
}

/// What the client needs to log in to one registry: its host, the credentials, and how
/// to get new ones.
#[derive(Debug, Clone)]
pub struct Login {
    /// `<account>.dkr.ecr.<region>.amazonaws.com`, without a scheme.
    pub host: String,
    pub credentials: Credentials,
    pub renew: Option<Arc<dyn Renew>>,
}

/// The `Authorization` header in use, when it expires, and a generation counter so that
/// many requests that met the same expired token renew it once.
#[derive(Debug)]
pub(super) struct Authorizer {
    current: std::sync::RwLock<Current>,
    renewing: tokio::sync::Mutex<()>,
    renew: Option<Arc<dyn Renew>>,
}

impl Authorizer {
    pub fn new(login: &Login) -> Result<Self, String> {
        Ok(Self {
            current: std::sync::RwLock::new(Current::of(0, &login.credentials)?),
            renewing: tokio::sync::Mutex::new(()),
            renew: login.renew.clone(),
        })
    }

    /// The credentials to send now.
    pub fn current(&self) -> Current {
        self.current
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |c| c.clone())
    }

    /// Replaces the credentials of generation `seen` (which the registry called expired)
    /// with new ones, unless another request did already.
    pub async fn renew_after(&self, seen: u64) -> Result<(), String> {
        let _one_at_a_time = self.renewing.lock().await;
        if self.current().generation != seen {
            return Ok(());
        }
        let renew = self
            .renew
            .as_ref()
            .ok_or("the credentials cannot be renewed")?;
        let credentials = renew.renew().await?;
        let renewed = Current::of(seen + 1, &credentials)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = renewed;
        Ok(())
    }
}

/// The credentials in use: their generation, header and expiry.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub generation: u64,
    pub header: HeaderValue,
    pub expires_at: Option<SystemTime>,
}

impl Current {
    fn of(generation: u64, credentials: &Credentials) -> Result<Self, String> {
        Ok(Self {
            generation,
            header: basic(credentials)?,
            expires_at: credentials.expires_at,
        })
    }

    /// Whether the issuer's expiry has passed (a `HEAD` answer has no body to say so).
    pub fn past_expiry(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
    }
}

/// `Basic base64(user:password)`, marked sensitive so no `Debug` shows it.
fn basic(credentials: &Credentials) -> Result<HeaderValue, String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        credentials.username,
        credentials.password.expose()
    ));
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "the registry credentials are not a valid header".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Counting(std::sync::atomic::AtomicU32);

    impl Renew for Counting {
        fn renew(&self) -> BoxFuture<'_, Result<Credentials, String>> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                Ok(Credentials {
                    username: "AWS".into(),
                    password: Secret::new(format!("renewed-{n}")),
                    expires_at: None,
                })
            })
        }
    }

    fn login(renew: Option<Arc<dyn Renew>>) -> Login {
        Login {
            host: "r".into(),
            credentials: Credentials {
                username: "AWS".into(),
                password: Secret::new("hunter2".into()),
                expires_at: None,
            },
            renew,
        }
    }

    /// Requests that met the same expired token renew it once between them.
    #[tokio::test]
    async fn one_expired_token_is_renewed_once() {
        let counting = Arc::new(Counting(0.into()));
        let auth = Authorizer::new(&login(Some(counting.clone()))).unwrap();
        let first = auth.current();
        auth.renew_after(first.generation).await.unwrap();
        auth.renew_after(first.generation).await.unwrap();
        let now = auth.current();
        assert_eq!(now.generation, first.generation + 1);
        assert_ne!(now.header, first.header);
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// Without a way to renew, renewing fails and says so; the password never shows.
    #[tokio::test]
    async fn credentials_without_a_renewer_say_so() {
        let auth = Authorizer::new(&login(None)).unwrap();
        let err = auth.renew_after(0).await.unwrap_err();
        assert!(err.contains("cannot be renewed"), "{err}");
        assert!(!format!("{auth:?} {:?}", login(None)).contains("hunter2"));
    }
}
