//! The registry's credentials, sent pre-emptively (ECR has no token service: ECR User
//! Guide, registry authentication): as HTTP Basic for a private registry, as `Bearer
//! <token>` for ECR Public ([`Scheme`]), and their renewal when ECR says the token
//! expired (private: a 403 `DENIED`, [`super::rules::token_expired`]; Public: a 400
//! `DENIED`, [`super::rules::public_token_refused`]). A token lasts 12 hours, so a long
//! build or a slow upload can outlive it.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use hyper::header::HeaderValue;

use crate::credentials::Secret;

/// How the credentials go in the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// `Basic base64(user:password)`: private ECR.
    #[default]
    Basic,
    /// `Bearer <password>`, the password being the token exactly as issued: ECR Public
    /// (`public.ecr.aws`) takes its `GetAuthorizationToken` token this way and answers
    /// Basic with 400 `DENIED` (kreuzwerker/terraform-provider-docker#666).
    Bearer,
}

/// A user name and password for one registry host (for [`Scheme::Bearer`], the
/// password is the token and the user name is not sent).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    /// When the registry stops taking them, as the issuer said (informational: ECR is the
    /// judge, and clocks differ).
    pub expires_at: Option<SystemTime>,
    pub scheme: Scheme,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("expires_at", &self.expires_at)
            .field("scheme", &self.scheme)
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

/// The credentials in use: their generation, header, expiry and scheme.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub generation: u64,
    pub header: HeaderValue,
    pub expires_at: Option<SystemTime>,
    pub scheme: Scheme,
}

impl Current {
    fn of(generation: u64, credentials: &Credentials) -> Result<Self, String> {
        Ok(Self {
            generation,
            header: header(credentials)?,
            expires_at: credentials.expires_at,
            scheme: credentials.scheme,
        })
    }

    /// Whether the issuer's expiry has passed (a `HEAD` answer has no body to say so).
    pub fn past_expiry(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
    }

    /// What an answer needs to know of the credentials its request carried.
    pub fn sent(&self) -> Sent {
        Sent {
            generation: self.generation,
            past_expiry: self.past_expiry(),
            scheme: self.scheme,
        }
    }
}

/// The credentials a request carried, as its answer is judged: their generation (to
/// renew them once), whether their expiry had passed, and their scheme (ECR Public says
/// "expired" differently from private ECR: [`super::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub generation: u64,
    pub past_expiry: bool,
    pub scheme: Scheme,
}

/// `Basic base64(user:password)` or `Bearer <token>`, marked sensitive so no `Debug`
/// shows it.
fn header(credentials: &Credentials) -> Result<HeaderValue, String> {
    let text = match credentials.scheme {
        Scheme::Basic => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                credentials.username,
                credentials.password.expose()
            ));
            format!("Basic {encoded}")
        }
        Scheme::Bearer => format!("Bearer {}", credentials.password.expose()),
    };
    let mut value = HeaderValue::from_str(&text)
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
                    scheme: Scheme::Basic,
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
                scheme: Scheme::Basic,
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

    /// Private ECR gets `Basic base64(user:password)`; ECR Public gets `Bearer` and the
    /// token exactly as issued (not decoded, not re-encoded).
    #[test]
    fn the_scheme_decides_the_authorization_header() {
        let token = "QVdTOmV5SnBkQ0k2ZmVlZA==";
        let mut credentials = Credentials {
            username: "AWS".into(),
            password: Secret::new(token.into()),
            expires_at: None,
            scheme: Scheme::Bearer,
        };
        let bearer = header(&credentials).unwrap();
        assert_eq!(bearer.to_str().unwrap(), format!("Bearer {token}"));
        assert!(bearer.is_sensitive());
        credentials.scheme = Scheme::Basic;
        credentials.password = Secret::new("hunter2".into());
        let basic = header(&credentials).unwrap();
        assert_eq!(basic.to_str().unwrap(), "Basic QVdTOmh1bnRlcjI=");
        assert!(basic.is_sensitive());
        assert_eq!(Scheme::default(), Scheme::Basic);
    }

    /// Bearer credentials keep the token out of `Debug`, theirs and the authorizer's.
    #[test]
    fn bearer_credentials_debug_redacts_the_token() {
        let login = Login {
            host: "public.ecr.aws".into(),
            credentials: Credentials {
                username: "AWS".into(),
                password: Secret::new("s3cr3t-bearer-token".into()),
                expires_at: None,
                scheme: Scheme::Bearer,
            },
            renew: None,
        };
        let auth = Authorizer::new(&login).unwrap();
        let shown = format!("{login:?} {auth:?} {:?}", auth.current());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("Bearer"), "{shown}");
    }
}
