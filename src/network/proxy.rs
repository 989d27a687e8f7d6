//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (lower case wins, read in `env`), parsed
//! once and handed to both clients as hyper-util's [`Matcher`], which implements the
//! `NO_PROXY` rules (names, `.suffix`, IPs, CIDRs, `*`) as curl does.
//!
//! Only `http://` proxies (plain HTTP, `CONNECT` for TLS) are accepted: that is what
//! corporate proxies serve and what both clients can tunnel through. Credentials in the
//! URL become a `Proxy-Authorization: Basic` header on `CONNECT`; everywhere the proxy is
//! named (logs, errors, `Debug`) the password is `***`.

use std::fmt;

use base64::Engine as _;
use hyper::Uri;
use hyper_util::client::proxy::matcher::Matcher;
use percent_encoding::percent_decode_str;

use crate::credentials::Secret;
use crate::env::{NetworkEnv, HTTPS_PROXY, HTTP_PROXY};

/// One proxy URL, with its credentials apart.
#[derive(Clone)]
pub struct ProxyUrl {
    /// The variable it came from, for messages.
    pub variable: &'static str,
    /// `host:port`.
    pub authority: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The URL as written (credentials included), for the matcher only.
    raw: Secret,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({}={self})", self.variable)
    }
}

/// `http://user:***@host:port`: safe for any log line.
impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.username, &self.password) {
            (Some(user), Some(_)) => write!(f, "http://{user}:***@{}", self.authority),
            (Some(user), None) => write!(f, "http://{user}@{}", self.authority),
            _ => write!(f, "http://{}", self.authority),
        }
    }
}

impl ProxyUrl {
    /// Parses `[http://][user[:password]@]host[:port][/]`.
    pub fn parse(variable: &'static str, value: &str) -> anyhow::Result<Self> {
        // Never echo the value: it may hold a password. The masked form is built below.
        let invalid = |reason: &str| {
            anyhow::anyhow!(
                "invalid value for {variable}: {reason} (expected http://[user:password@]host:port)"
            )
        };
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "the scheme `{scheme}` is not supported: the proxy must be reached over \
                     plain HTTP (CONNECT tunnels the TLS)"
                )))
            }
            None => value,
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((userinfo, authority)) => (Some(userinfo), authority),
            None => (None, rest),
        };
        if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
            return Err(invalid("no host name, or a path after it"));
        }
        let uri: Uri = format!("http://{authority}/")
            .parse()
            .map_err(|_| invalid("the host name is not valid"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("no host name"));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, pass)) => (
                Some(decode(user)),
                (!pass.is_empty()).then(|| Secret::new(decode(pass))),
            ),
            None => (None, None),
        };
        Ok(Self {
            variable,
            authority: authority.to_string(),
            username,
            password,
            raw: Secret::new(format!("http://{rest}")),
        })
    }

    /// `http://host:port`, without credentials.
    pub fn uri(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The password as written, decoded, and inside the `Proxy-Authorization` value.
    fn secrets(&self) -> Vec<String> {
        let Some(password) = &self.password else {
            return Vec::new();
        };
        let user = self.username.as_deref().unwrap_or("");
        let mut out = vec![
            password.expose().to_string(),
            base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose())),
        ];
        if let Some((_, written)) = self
            .raw
            .expose()
            .rsplit_once('@')
            .and_then(|(info, _)| info.split_once("//"))
            .and_then(|(_, info)| info.split_once(':'))
        {
            out.push(written.to_string());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Why a `CONNECT` through `proxy` failed, from the error's text (hyper-util's
/// `TunnelError`, which both clients use, cannot be named outside hyper-util; its
/// messages are stable): the reason to show, and whether another attempt could help.
pub fn explain_tunnel_failure(text: &str, proxy: &ProxyUrl) -> Option<(String, bool)> {
    const CONNECT_FAILED: &str = "failed to create underlying connection";
    if text.contains("proxy authorization required") {
        return Some((
            format!(
                "the proxy answered 407 Proxy Authentication Required: {} in {}",
                if proxy.password.is_some() {
                    "it refused the user and password"
                } else {
                    "give them as http://user:password@host:port"
                },
                proxy.variable
            ),
            false,
        ));
    }
    if text.ends_with("unsuccessful") {
        return Some((
            format!(
                "the proxy refused to open the tunnel (its answer to CONNECT was not 200): {}",
                if proxy.password.is_some() {
                    format!(
                        "check the user and password in {}, and that the proxy allows \
                         CONNECT to this host and port",
                        proxy.variable
                    )
                } else {
                    "check that it allows CONNECT to this host and port, or whether it wants \
                     credentials"
                        .to_string()
                }
            ),
            false,
        ));
    }
    let (_, cause) = text.split_once(CONNECT_FAILED)?;
    let cause = cause.trim_start_matches(": ");
    let unresolved = ["no record found", "NXDomain", "no records found"]
        .iter()
        .any(|m| cause.contains(m));
    Some((
        if unresolved {
            format!("the proxy's host name does not resolve: {cause}")
        } else {
            format!("cannot connect to the proxy: {cause}")
        },
        !unresolved,
    ))
}

/// The proxies in force and the hosts that bypass them.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    pub https: Option<ProxyUrl>,
    pub http: Option<ProxyUrl>,
    /// `NO_PROXY` as set, comma-separated.
    pub no_proxy: Option<String>,
}

impl Proxies {
    pub fn from_env(env: &NetworkEnv) -> anyhow::Result<Self> {
        let parse = |variable, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| ProxyUrl::parse(variable, v))
                .transpose()
        };
        Ok(Self {
            https: parse(HTTPS_PROXY, &env.https_proxy)?,
            http: parse(HTTP_PROXY, &env.http_proxy)?,
            no_proxy: env.no_proxy.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// hyper-util's matcher for these settings (it reads no variable itself this way).
    pub fn matcher(&self) -> Matcher {
        let mut builder = Matcher::builder();
        if let Some(proxy) = &self.https {
            builder = builder.https(proxy.raw.expose());
        }
        if let Some(proxy) = &self.http {
            builder = builder.http(proxy.raw.expose());
        }
        if let Some(no) = &self.no_proxy {
            builder = builder.no(no);
        }
        builder.build()
    }

    /// The proxy a connection to `uri` goes through, for messages (`None`: direct).
    pub fn route(&self, uri: &Uri) -> Option<&ProxyUrl> {
        self.matcher().intercept(uri)?;
        match uri.scheme_str() {
            Some("http") => self.http.as_ref(),
            _ => self.https.as_ref(),
        }
    }

    /// One line for the log: which proxy, and what bypasses it.
    pub fn describe(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(proxy) = &self.https {
            parts.push(format!("https via {proxy}"));
        }
        if let Some(proxy) = &self.http {
            parts.push(format!("http via {proxy}"));
        }
        if let Some(no) = &self.no_proxy {
            parts.push(format!("direct for NO_PROXY={no}"));
        }
        Some(parts.join(", "))
    }

    pub fn secrets(&self) -> Vec<String> {
        self.https
            .iter()
            .chain(&self.http)
            .flat_map(ProxyUrl::secrets)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(https: &str, no: Option<&str>) -> Proxies {
        Proxies::from_env(&NetworkEnv {
            https_proxy: Some(https.to_string()),
            no_proxy: no.map(ToString::to_string),
            ..NetworkEnv::default()
        })
        .unwrap()
    }

    /// The password never shows in `Display` or `Debug`, and is offered for masking in
    /// every form it travels in (as written, decoded, inside the Basic header).
    #[test]
    fn proxy_password_is_masked_everywhere() {
        let p = proxies("http://alice:s%40cret@proxy.corp:3128", None);
        let url = p.https.as_ref().unwrap();
        assert_eq!(url.to_string(), "http://alice:***@proxy.corp:3128");
        assert!(!format!("{p:?}").contains("cret"));
        let secrets = p.secrets();
        assert!(secrets.contains(&"s@cret".to_string()));
        assert!(secrets.contains(&"s%40cret".to_string()));
        assert!(secrets.contains(&base64::engine::general_purpose::STANDARD.encode("alice:s@cret")));
    }

    /// `NO_PROXY` names, suffixes, IPs, CIDRs and `*`, as curl reads them.
    #[test]
    fn no_proxy_forms() {
        let p = proxies(
            "proxy:3128",
            Some("registry.local, .amazonaws.com,10.0.0.0/8,192.168.1.7"),
        );
        let via = |url: &str| p.route(&url.parse().unwrap()).is_some();
        assert!(!via("https://registry.local/v2/"));
        assert!(!via("https://api.ecr.us-east-1.amazonaws.com/"));
        assert!(!via("https://10.1.2.3/"));
        assert!(!via("https://192.168.1.7/"));
        assert!(via("https://192.168.1.8/"));
        assert!(via("https://example.com/"));
        assert!(via("https://amazonaws.com.evil.example/"));
        let all = proxies("proxy:3128", Some("*"));
        assert!(all
            .route(&"https://example.com/".parse().unwrap())
            .is_none());
    }

    /// An `https://` or SOCKS proxy URL is refused with the variable's name, never its value.
    #[test]
    fn unsupported_proxy_schemes_are_refused_without_echoing_the_password() {
        for value in [
            "https://u:topsecret@proxy:3128",
            "socks5://u:topsecret@proxy:1080",
        ] {
            let err = ProxyUrl::parse(HTTPS_PROXY, value).unwrap_err().to_string();
            assert!(
                err.contains("HTTPS_PROXY") && err.contains("not supported"),
                "{err}"
            );
            assert!(!err.contains("topsecret"), "{err}");
        }
        assert!(ProxyUrl::parse(HTTPS_PROXY, "http:///path").is_err());
    }
}
