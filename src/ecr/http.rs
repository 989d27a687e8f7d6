//! The SDK's HTTP client, built from the action's [`Network`] settings.

use anyhow::Context as _;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls;

use crate::network::{Network, ProxyUrl};

/// The SDK's HTTP client: rustls with ring and the action's trust roots, hickory, and the
/// proxy for the API's scheme (`HTTPS_PROXY`; `HTTP_PROXY` for an `http://` endpoint
/// override) with `NO_PROXY`, through aws-smithy-http-client's own proxy support (the
/// same hyper-util matcher and CONNECT tunnel as the registry client). The credential
/// providers share it: STS (https) goes through the proxy like the API; the link-local
/// instance and container metadata endpoints (http) are reached directly unless the
/// API itself is `http://`. Returns the client and the proxy it uses.
pub fn client(
    network: &Network,
    plain_http: bool,
) -> anyhow::Result<(
    aws_smithy_runtime_api::client::http::SharedHttpClient,
    Option<ProxyUrl>,
)> {
    let tls_context = tls::TlsContext::builder()
        .with_trust_store(network.trust.aws_trust_store())
        .build()
        .context("cannot set up TLS for the AWS client")?;
    let proxies = &network.proxies;
    let (proxy, config) = match if plain_http {
        &proxies.http
    } else {
        &proxies.https
    } {
        Some(url) => {
            let uri = url.uri();
            let config = if plain_http {
                ProxyConfig::http(uri.as_str())
            } else {
                ProxyConfig::https(uri.as_str())
            }
            .with_context(|| format!("{url} cannot serve as the AWS client's proxy"))?;
            let config = match (&url.username, &url.password) {
                (Some(user), password) => config
                    .with_basic_auth(user.as_str(), password.as_ref().map_or("", |p| p.expose())),
                (None, _) => config,
            };
            let config = match &proxies.no_proxy {
                Some(no) => config.no_proxy(no),
                None => config,
            };
            (Some(url.clone()), config)
        }
        None => (None, ProxyConfig::disabled()),
    };
    let client = aws_smithy_http_client::Builder::new().build_with_connector_fn(
        move |settings, components| {
            let mut builder = aws_smithy_http_client::Connector::builder()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .tls_context(tls_context.clone())
                .proxy_config(config.clone());
            if let Some(settings) = settings {
                builder = builder.connector_settings(settings.clone());
            }
            if let Some(sleep) =
                components.and_then(aws_sdk_ecr::config::RuntimeComponents::sleep_impl)
            {
                builder = builder.sleep_impl(sleep);
            }
            builder.build_with_resolver(aws_smithy_dns::HickoryDnsResolver::default())
        },
    );
    Ok((client, proxy))
}
