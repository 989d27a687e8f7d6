use super::*;

#[test]
fn the_query_has_every_option_and_inline_cache() {
    let args = BTreeMap::from([("A".to_string(), "x y".to_string())]);
    let labels = BTreeMap::from([("l".to_string(), "v".to_string())]);
    let tags = vec!["r/a:1".to_string(), "r/a:2".to_string()];
    let cache = vec!["r/a:1".to_string()];
    let request = BuildkitBuild {
        dockerfile: "Dockerfile",
        dockerfile_text: None,
        tags: &tags,
        build_args: &args,
        labels: &labels,
        target: Some("final"),
        platform: Some("linux/amd64"),
        pull: true,
        no_cache: false,
        cache_from: &cache,
        registry_auth: None,
        secrets: &[],
        exporter_compression: Some(Compression::Zstd { level: 5 }),
    };
    let uri = build_uri(&request, "sess");
    assert!(
        uri.starts_with(
            "/build?version=2&remote=client-session&session=sess&dockerfile=Dockerfile"
        ),
        "{uri}"
    );
    assert!(uri.contains("&t=r%2Fa%3A1&t=r%2Fa%3A2"), "{uri}");
    assert!(uri.contains("BUILDKIT_INLINE_CACHE%22%3A%221%22"), "{uri}");
    assert!(uri.contains("&outputs=%5B%7B%22Attrs%22"), "{uri}");
    assert!(uri.contains("&cachefrom=%5B%22r%2Fa%3A1%22%5D"), "{uri}");
    assert!(
        uri.contains("&target=final&platform=linux%2Famd64&pull=1"),
        "{uri}"
    );
    assert!(!uri.contains("nocache"), "{uri}");
}

/// On the containerd store the exporter gets the compression: zstd with OCI media
/// types, never `force-compression` (base layers keep matching the registry's).
#[test]
fn the_exporter_gets_the_compression() {
    let outputs: serde_json::Value =
        serde_json::from_str(&exporter_outputs(Compression::Zstd { level: 5 })).unwrap();
    assert_eq!(
        outputs,
        serde_json::json!([{"Type": "moby", "Attrs": {
            "compression": "zstd", "compression-level": "5", "oci-mediatypes": "true"}}])
    );
    let gzip = exporter_outputs(Compression::default());
    assert!(gzip.contains(r#""compression":"gzip""#), "{gzip}");
    assert!(
        !gzip.contains("force-compression") && !gzip.contains("oci"),
        "{gzip}"
    );
}

#[test]
fn debug_never_shows_secrets_or_passwords() {
    let secrets = vec![("npm".to_string(), b"tok-123".to_vec())];
    let empty = BTreeMap::new();
    let request = BuildkitBuild {
        dockerfile: "Dockerfile",
        dockerfile_text: None,
        tags: &[],
        build_args: &empty,
        labels: &empty,
        target: None,
        platform: None,
        pull: false,
        no_cache: false,
        cache_from: &[],
        registry_auth: Some(RegistryCredentials {
            host: "h",
            username: "AWS",
            password: "pw-456",
        }),
        secrets: &secrets,
        exporter_compression: None,
    };
    let debug = format!("{request:?}");
    assert!(debug.contains("npm"), "{debug}");
    assert!(
        !debug.contains("tok-123") && !debug.contains("pw-456"),
        "{debug}"
    );
}
