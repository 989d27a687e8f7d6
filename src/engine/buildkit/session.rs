//! The BuildKit session: `POST /session` hijacked into an `h2c` stream, on which the
//! daemon is the gRPC client and we serve `FileSync` (the build context and the
//! Dockerfile, see [`super::filesync`]), Auth (registry credentials), Secrets and Health,
//! as the Docker CLI's session does.
//!
//! Nothing here logs a credential or a secret value: only hosts and secret ids.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::file_sync_server::FileSyncServer;
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tonic::{Response, Status};
use zeroize::Zeroizing;

use super::daemon::{self, DaemonAddress};
use super::filesync::FileSyncService;
use super::BuildkitError;
use crate::network::stall::{Turn, Watchdog};

/// The gRPC methods the session serves, announced to the daemon one header each. BuildKit
/// only calls a method that the session announced (it compares them lower-cased).
/// `FetchToken` and `GetTokenAuthority` are left out on purpose: without them BuildKit
/// asks `Credentials` and talks to the registry's token endpoint itself, which is what
/// the Docker CLI's default (no client-side token authority) amounts to.
const METHODS: &[&str] = &[
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    "/grpc.health.v1.Health/Check",
];

/// A registry login, answered to BuildKit's `Credentials` for its host only.
#[derive(Clone)]
pub(crate) struct RegistryLogin {
    pub host: String,
    pub username: String,
    pub password: Zeroizing<String>,
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Answers `Credentials` for the logged-in registry; any other host gets the empty answer
/// (anonymous), as the Docker CLI gives for a host it has no login for.
#[derive(Debug)]
struct AuthService {
    login: Option<RegistryLogin>,
}

/// Docker Hub's index address as the CLI config names it, for BuildKit's host.
fn normalize_host(host: &str) -> &str {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match host {
        "index.docker.io/v1" | "index.docker.io" | "docker.io" => "registry-1.docker.io",
        other => other,
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn credentials(
        &self,
        request: tonic::Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = &request.get_ref().host;
        match &self.login {
            Some(login) if normalize_host(host) == normalize_host(&login.host) => {
                tracing::debug!(host = %host, "session: registry credentials given");
                Ok(Response::new(CredentialsResponse {
                    username: login.username.clone(),
                    secret: login.password.to_string(),
                }))
            }
            _ => {
                tracing::debug!(host = %host, "session: no credentials for this registry");
                Ok(Response::new(CredentialsResponse::default()))
            }
        }
    }

    async fn fetch_token(
        &self,
        _request: tonic::Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented(
            "tokens are fetched by the daemon with the credentials",
        ))
    }

    async fn get_token_authority(
        &self,
        _request: tonic::Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unavailable("client-side authentication disabled"))
    }

    async fn verify_token_authority(
        &self,
        _request: tonic::Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unavailable("client-side authentication disabled"))
    }
}

/// Build secrets by id. `Debug` shows the ids only.
pub(crate) struct SecretStore {
    values: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl SecretStore {
    pub(crate) fn new(secrets: &[(String, Vec<u8>)]) -> Self {
        Self {
            values: secrets
                .iter()
                .map(|(id, value)| (id.clone(), Zeroizing::new(value.clone())))
                .collect(),
        }
    }
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.values.keys().collect();
        ids.sort();
        f.debug_struct("SecretStore")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: tonic::Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        if let Some(value) = self.values.get(id) {
            tracing::debug!(id = %id, "session: secret given");
            Ok(Response::new(GetSecretResponse {
                data: value.to_vec(),
            }))
        } else {
            tracing::debug!(id = %id, "session: unknown secret asked for");
            Err(Status::not_found(format!("secret {id} not found")))
        }
    }
}

/// BuildKit checks the session's health every 5 s and drops it when a check fails; each
/// check tells the build's watchdog the daemon is alive (its progress stream is silent
/// while a step is).
#[derive(Debug)]
struct HealthService {
    alive: Watchdog,
}

#[tonic::async_trait]
impl Health for HealthService {
    type WatchStream = Pin<
        Box<dyn futures_util::Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>,
    >;

    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.alive.moved(Turn::Peer);
        // The empty name is the server as a whole, which is what BuildKit asks about.
        if request.get_ref().service.is_empty() {
            Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            }))
        } else {
            Err(Status::not_found("unknown service"))
        }
    }

    async fn list(
        &self,
        _request: tonic::Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("not served"))
    }

    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not served"))
    }
}

/// A running session. Dropping it closes the connection, which ends the session in the
/// daemon.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    server: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Opens the session: `POST /session` upgraded to `h2c` (within `control`), then serves
/// gRPC on it in a task; the daemon's health checks are reported to `alive`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    address: &DaemonAddress,
    name: &str,
    shared_key: &str,
    login: Option<RegistryLogin>,
    secrets: SecretStore,
    files: FileSyncService,
    control: Duration,
    alive: Watchdog,
) -> Result<Session, BuildkitError> {
    let id = crate::random::token();
    let mut sender = daemon::connect_within(address, control)
        .await
        .map_err(|e| BuildkitError::Daemon(format!("cannot connect to the daemon: {e}")))?;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/session")
        .header(HOST, address.host_header())
        .header(UPGRADE, "h2c")
        .header(CONNECTION, "Upgrade")
        .header("X-Docker-Expose-Session-Uuid", &id)
        .header("X-Docker-Expose-Session-Name", name)
        .header("X-Docker-Expose-Session-Sharedkey", shared_key);
    for method in METHODS {
        builder = builder.header("X-Docker-Expose-Session-Grpc-Method", *method);
    }
    let request = builder
        .body(daemon::empty())
        .map_err(|e| BuildkitError::Daemon(format!("cannot make the session request: {e}")))?;
    let response = tokio::time::timeout(control, sender.send_request(request))
        .await
        .map_err(|_| {
            BuildkitError::Daemon(format!(
                "the daemon did not answer the session request within {}",
                crate::network::stall::human(control)
            ))
        })?
        .map_err(|e| BuildkitError::Daemon(format!("the session request failed: {e}")))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let text = daemon::body_text(response.into_body()).await;
        return Err(BuildkitError::Daemon(format!(
            "the daemon refused the BuildKit session ({status}): {text}"
        )));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| BuildkitError::Daemon(format!("the session upgrade failed: {e}")))?;

    let routes = tonic::service::Routes::new(HealthServer::new(HealthService { alive }))
        .add_service(AuthServer::new(AuthService { login }))
        .add_service(SecretsServer::from_arc(Arc::new(secrets)))
        .add_service(FileSyncServer::new(files))
        .prepare();
    let service = hyper_util::service::TowerToHyperService::new(routes);
    let session_id = id.clone();
    let server = tokio::spawn(async move {
        let result = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(upgraded, service)
            .await;
        match result {
            Ok(()) => tracing::debug!(session = %session_id, "session closed by the daemon"),
            Err(err) => tracing::debug!(session = %session_id, "session ended: {err}"),
        }
    });
    tracing::debug!(session = %id, "BuildKit session attached");
    Ok(Session { id, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<T>(message: T) -> tonic::Request<T> {
        tonic::Request::new(message)
    }

    /// Secrets are served by id, an unknown id is `NotFound`, and `Debug` shows no value.
    #[tokio::test]
    async fn secrets_by_id_and_debug_hides_values() {
        let store = SecretStore::new(&[("token".into(), b"s3cr3t-value".to_vec())]);
        let found = store
            .get_secret(request(GetSecretRequest {
                id: "token".into(),
                annotations: HashMap::new(),
            }))
            .await
            .unwrap();
        assert_eq!(found.get_ref().data, b"s3cr3t-value");
        let missing = store
            .get_secret(request(GetSecretRequest {
                id: "other".into(),
                annotations: HashMap::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let debug = format!("{store:?}");
        assert!(
            debug.contains("token") && !debug.contains("s3cr3t"),
            "{debug}"
        );
    }

    /// Credentials go to the logged-in registry only; Debug hides the password.
    #[tokio::test]
    async fn credentials_only_for_the_registry() {
        let login = RegistryLogin {
            host: "123.dkr.ecr.us-east-1.amazonaws.com".into(),
            username: "AWS".into(),
            password: Zeroizing::new("pw-value".into()),
        };
        assert!(!format!("{login:?}").contains("pw-value"));
        let auth = AuthService { login: Some(login) };
        let ours = auth
            .credentials(request(CredentialsRequest {
                host: "123.dkr.ecr.us-east-1.amazonaws.com".into(),
            }))
            .await
            .unwrap();
        assert_eq!(ours.get_ref().username, "AWS");
        assert_eq!(ours.get_ref().secret, "pw-value");
        let other = auth
            .credentials(request(CredentialsRequest {
                host: "registry-1.docker.io".into(),
            }))
            .await
            .unwrap();
        assert_eq!(other.get_ref(), &CredentialsResponse::default());
    }
}
