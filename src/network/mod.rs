//! How the action's own connections leave the machine: through an HTTP proxy or not
//! ([`proxy`]), trusting which CA certificates ([`trust`]), and for the registry, to which
//! address ([`Network::registry_endpoint`], a VPC endpoint without private DNS).
//!
//! How long a connection may move nothing before the action gives up on it is set here
//! too ([`stall`]): the registry client and the Docker engine's long transfers share it.
//!
//! Both HTTP clients take their settings from one [`Network`]: the AWS SDK's (the ECR API,
//! STS) in `ecr`, and the direct push's registry client (the registry and the S3 URLs
//! it redirects blob reads to) in `registry`. The Docker daemon's own
//! connections (its pusher, BuildKit's pulls) follow the daemon's configuration, not
//! this one.

pub mod proxy;
pub mod stall;
pub mod trust;

pub use proxy::{Proxies, ProxyUrl};
pub use trust::Trust;

use crate::env::NetworkEnv;

/// Proxy, trust roots and registry endpoint, validated.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub proxies: Proxies,
    pub trust: Trust,
    /// Host (and port) the registry's connections are made to instead of the registry host
    /// name, which TLS still verifies (the `registry-endpoint` input).
    pub registry_endpoint: Option<String>,
    /// How long the registry client waits on a connection that moves nothing
    /// (`ECR_BUILD_PUSH_STALL_TIMEOUT`).
    pub stall_timeout: stall::StallTimeout,
}

impl Network {
    /// Validates the variables (a proxy URL that cannot be used, a CA file that cannot be
    /// read, fail here, before anything else).
    pub fn from_env(env: &NetworkEnv, registry_endpoint: Option<String>) -> anyhow::Result<Self> {
        Ok(Self {
            proxies: Proxies::from_env(env)?,
            trust: Trust::from_env(env)?,
            registry_endpoint,
            stall_timeout: env.stall_timeout,
        })
    }

    /// Values the runner must mask: proxy passwords, as written and as sent.
    pub fn secrets(&self) -> Vec<String> {
        self.proxies.secrets()
    }
}
