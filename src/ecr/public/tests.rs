use super::*;

fn sdk_in(region: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .region(Region::new(region.to_string()))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build()
}

/// The client is in us-east-1 whatever the loaded configuration's region, since ECR
/// Public's API is nowhere else.
#[test]
fn the_client_is_always_in_us_east_1() {
    let public = EcrPublic::from_sdk(&sdk_in("eu-west-1"), None);
    assert_eq!(
        public.client.config().region().map(ToString::to_string),
        Some(REGION.to_string())
    );
    assert_eq!(public.endpoint, DEFAULT_ENDPOINT);
}

/// An endpoint override is used and named in messages; without one, the SDK's global
/// `endpoint_url` (`AWS_ENDPOINT_URL`) is the one named.
#[test]
fn an_endpoint_override_is_used_and_named() {
    let public = EcrPublic::from_sdk(&sdk_in("eu-west-1"), Some("http://127.0.0.1:4566"));
    assert_eq!(public.endpoint, "http://127.0.0.1:4566");
    let global = aws_config::SdkConfig::builder()
        .endpoint_url("http://standin:5000")
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    assert_eq!(
        EcrPublic::from_sdk(&global, None).endpoint,
        "http://standin:5000"
    );
}

/// Only the given fields are sent: an empty badge list would clear the gallery's badges.
#[test]
fn catalog_input_sends_only_what_is_given() {
    let catalog = Catalog {
        description: Some("An app".into()),
        about: None,
        usage: Some("docker run".into()),
        architectures: Vec::new(),
        operating_systems: vec!["Linux".into()],
    };
    let input = catalog_input(&catalog);
    assert_eq!(input.description(), Some("An app"));
    assert_eq!(input.about_text(), None);
    assert_eq!(input.usage_text(), Some("docker run"));
    assert!(input.architectures.is_none());
    assert_eq!(input.operating_systems(), ["Linux"]);
}

/// A Bearer login sends the token as issued; the daemon's user and password are its
/// decoded halves; a renewal's Bearer credentials are taken apart the same way.
#[test]
fn a_public_login_is_bearer_with_the_raw_token() {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode("AWS:eyJwYXlsb2FkIjoi");
    let (username, password) = decode_token(&token).unwrap();
    let auth = RegistryAuth {
        registry: PUBLIC_REGISTRY.into(),
        username,
        password: Secret::new(password),
        token: Secret::new(token.clone()),
        expires_at: None,
        renew: None,
        scheme: registry::Scheme::Bearer,
    };
    let login = auth.login();
    assert_eq!(login.host, "public.ecr.aws");
    assert_eq!(login.credentials.scheme, registry::Scheme::Bearer);
    assert_eq!(login.credentials.password.expose(), token);
    assert_eq!(auth.password.expose(), "eyJwYXlsb2FkIjoi");
    assert!(!format!("{auth:?} {login:?}").contains("eyJwYXlsb2FkIjoi"));
}

/// The log line of each outcome says what happened, and which fields were put.
#[test]
fn catalog_changes_read_well_in_a_log() {
    assert_eq!(
        CatalogChange::Updated(vec!["description", "architectures"]).to_string(),
        "catalog data updated: description, architectures"
    );
    assert_eq!(
        CatalogChange::Unchanged.to_string(),
        "catalog data unchanged"
    );
    assert_eq!(repository_path("standin", "team/app"), "standin/team/app");
}
