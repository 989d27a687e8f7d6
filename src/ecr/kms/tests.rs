use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::operation::get_public_key::GetPublicKeyError;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;

use super::*;
use crate::inputs::signing_key::is_key_uuid;

const UUID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

fn parsed(value: &str) -> KeyRef {
    KeyRef::parse(value).unwrap_or_else(|err| panic!("{value}: {err}"))
}

/// Every form cosign's patterns accept (client.go's examples), with and without an
/// endpoint, and the bare forms; each names itself back as cosign takes it.
#[test]
fn key_references_parse_as_cosign_parses_them() {
    let key_arn = format!("arn:aws:kms:us-east-2:111122223333:key/{UUID}");
    let alias_arn = "arn:aws:kms:us-east-2:111122223333:alias/ExampleAlias";
    for (value, key_id, endpoint) in [
        (
            "awskms:///alias/release-signing".to_string(),
            "alias/release-signing",
            None,
        ),
        (format!("awskms:///{UUID}"), UUID, None),
        (
            "awskms:///mrk-1234abcd12ab34cd56ef1234567890ab".into(),
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            None,
        ),
        (format!("awskms:///{key_arn}"), &key_arn, None),
        (format!("awskms:///{alias_arn}"), alias_arn, None),
        (
            "awskms://localhost:4566/alias/ExampleAlias".into(),
            "alias/ExampleAlias",
            Some("localhost:4566"),
        ),
        (
            format!("awskms://kms.eu-west-1.amazonaws.com/{key_arn}"),
            &key_arn,
            Some("kms.eu-west-1.amazonaws.com"),
        ),
        ("alias/team/app".into(), "alias/team/app", None),
        (UUID.into(), UUID, None),
        (format!(" {alias_arn} "), alias_arn, None),
    ] {
        let key = parsed(&value);
        assert_eq!(key.key_id, key_id, "{value}");
        assert_eq!(key.endpoint.as_deref(), endpoint, "{value}");
        assert_eq!(parsed(&key.cosign_ref()), key, "{value}");
    }
    assert_eq!(parsed("alias/x").cosign_ref(), "awskms:///alias/x");
    assert_eq!(
        parsed("awskms://localhost:4566/alias/x").to_string(),
        "awskms://localhost:4566/alias/x"
    );
}

/// Bad values fail as input errors naming the value, with the reason and the way out.
#[test]
fn bad_key_references_say_what_is_wrong() {
    for (value, reason) in [
        ("", "no key is named"),
        ("awskms://", "followed by [HOST:PORT]/"),
        ("awskms:///", "no key is named"),
        (
            "awskms://alias/release",
            "write three slashes, awskms:///alias/release",
        ),
        (
            "awskms://arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "write three slashes",
        ),
        ("awskms://host name/alias/x", "is not an endpoint"),
        (
            "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "`gcpkms://` key",
        ),
        ("alias/", "names no alias"),
        ("alias/aws/ecr", "AWS managed key"),
        ("alias/app signing", "not ` `"),
        ("release-key", "is not a KMS key ID"),
        ("1234abcd-12ab-34cd-56ef-1234567890", "is not a KMS key ID"),
        ("arn:aws:kms:us-east-1:111122223333", "is not a KMS ARN"),
        (
            "arn:aws-iso:kms:us-iso-east-1:111122223333:alias/x",
            "not `aws-iso`",
        ),
        ("arn:aws:s3:us-east-1:111122223333:alias/x", "an ARN of s3"),
        ("arn:aws:kms::111122223333:alias/x", "is not a region"),
        ("arn:aws:kms:us-east-1:1111:alias/x", "not an account ID"),
        (
            "arn:aws:kms:us-east-1:111122223333:key/nope",
            "`nope` in the ARN",
        ),
        (
            "arn:aws:kms:us-east-1:111122223333:grant/x",
            "neither key/KEY-ID",
        ),
    ] {
        let err = KeyRef::parse(value).unwrap_err().to_string();
        // A long value is shown by its start (InputError::invalid).
        let shown: String = value.chars().take(60).collect();
        assert!(
            err.starts_with(&format!("invalid value `{shown}")),
            "{value}: {err}"
        );
        assert!(
            err.contains("` for input `signing-key`: "),
            "{value}: {err}"
        );
        assert!(err.contains(reason), "{value}: {err}");
    }
}

/// Key IDs: dashes optional, hex of either case, `mrk-` for multi-Region keys; the groups'
/// lengths are checked.
#[test]
fn key_ids_are_uuids() {
    assert!(is_key_uuid(UUID));
    assert!(is_key_uuid(&UUID.replace('-', "")));
    assert!(is_key_uuid(&UUID.to_uppercase()));
    assert!(is_key_uuid(&format!("mrk-{}", UUID.replace('-', ""))));
    assert!(!is_key_uuid(&format!("{UUID}0")));
    assert!(!is_key_uuid("1234abcd-12ab-34cd-56ef-1234567890ag"));
    assert!(!is_key_uuid("1234abc-d12ab-34cd-56ef-1234567890ab"));
    assert!(!is_key_uuid(""));
}

/// The algorithm is the key's first, as cosign signs and verifies with; a key of another
/// usage or spec is refused with the way out.
#[test]
fn the_algorithm_is_the_first_the_key_lists() {
    use KeySpec as S;
    use SigningAlgorithmSpec as A;
    let sign = Some(&KeyUsageType::SignVerify);
    let choose = |spec: KeySpec, algorithms: &[A]| choose_algorithm(sign, Some(&spec), algorithms);
    assert_eq!(
        choose(S::EccNistP256, &[A::EcdsaSha256]),
        Ok(Algorithm::EcdsaSha256)
    );
    assert_eq!(
        choose(S::EccNistP384, &[A::EcdsaSha384]),
        Ok(Algorithm::EcdsaSha384)
    );
    assert_eq!(
        choose(S::EccNistP521, &[A::EcdsaSha512]),
        Ok(Algorithm::EcdsaSha512)
    );
    let rsa = [
        A::RsassaPkcs1V15Sha256,
        A::RsassaPssSha256,
        A::RsassaPssSha512,
    ];
    assert_eq!(choose(S::Rsa3072, &rsa), Ok(Algorithm::RsaPkcs1Sha256));
    assert_eq!(
        choose(S::Rsa2048, &[A::RsassaPssSha384, A::RsassaPkcs1V15Sha256]),
        Ok(Algorithm::RsaPssSha384)
    );

    let err = choose_algorithm(
        Some(&KeyUsageType::EncryptDecrypt),
        Some(&S::SymmetricDefault),
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("ENCRYPT_DECRYPT") && err.contains("SIGN_VERIFY"),
        "{err}"
    );
    for spec in [S::EccSecgP256K1, S::MlDsa65, S::Sm2, S::EccNistEdwards25519] {
        let name = spec.as_str().to_string();
        let err = choose(spec, &[A::EcdsaSha256]).unwrap_err();
        assert!(
            err.contains(&name) && err.contains("ECC_NIST_P256, "),
            "{err}"
        );
    }
    let err = choose(S::EccNistP256, &[]).unwrap_err();
    assert!(err.contains("no signing algorithm"), "{err}");
}

/// The digest sent is the message's hash by the algorithm's hash function.
#[test]
fn the_digest_is_the_algorithms_hash() {
    let message = b"payload";
    assert_eq!(
        Algorithm::EcdsaSha256.digest(message),
        Sha256::digest(message).to_vec()
    );
    assert_eq!(Algorithm::RsaPssSha384.digest(message).len(), 48);
    assert_eq!(
        Algorithm::RsaPkcs1Sha512.digest(message),
        Sha512::digest(message).to_vec()
    );
    for algorithm in [Algorithm::EcdsaSha384, Algorithm::RsaPkcs1Sha256] {
        assert_eq!(Algorithm::from_kms(&algorithm.kms()), Some(algorithm));
    }
}

/// The PEM has the PUBLIC KEY armour and 64-character lines.
#[test]
fn the_public_key_is_pem() {
    let key = CheckedKey {
        arn: "arn".into(),
        spec: "ECC_NIST_P256".into(),
        algorithm: Algorithm::EcdsaSha256,
        public_key_der: (0..=90).collect(),
    };
    let pem = key.public_key_pem();
    let lines: Vec<&str> = pem.lines().collect();
    assert_eq!(lines.first(), Some(&"-----BEGIN PUBLIC KEY-----"));
    assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
    assert_eq!(lines[1].len(), 64);
    let body: String = lines[1..lines.len() - 1].concat();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    assert_eq!(decoded, key.public_key_der);
}

fn signer() -> KmsSigner {
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .build();
    KmsSigner {
        client: aws_sdk_kms::Client::from_conf(config),
        key: parsed("alias/release"),
        region: "eu-west-1".into(),
        endpoint: "https://kms.eu-west-1.amazonaws.com".into(),
        trust_hint: "trusted: the system roots".into(),
        checked: OnceCell::new(),
    }
}

fn service_error(code: &str, message: &str) -> SdkError<GetPublicKeyError, Response> {
    let error =
        GetPublicKeyError::generic(ErrorMetadata::builder().code(code).message(message).build());
    let response = Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
    SdkError::service_error(error, response)
}

/// KMS's refusals name the key, the region and the IAM action, and say what to do.
#[test]
fn kms_errors_name_key_region_and_action() {
    let signer = signer();
    for (code, action, needles) in [
        (
            "NotFoundException",
            "kms:GetPublicKey",
            &["does not exist", "region"][..],
        ),
        (
            "AccessDeniedException",
            "kms:Sign",
            &[
                "may not call kms:Sign",
                "allow kms:GetPublicKey and kms:Sign",
                "key policy",
            ],
        ),
        ("DisabledException", "kms:Sign", &["is disabled"]),
        (
            "KMSInvalidStateException",
            "kms:Sign",
            &["pending deletion"],
        ),
        (
            "ThrottlingException",
            "kms:Sign",
            &["ThrottlingException: slow down"],
        ),
    ] {
        let err = signer
            .error(&service_error(code, "slow down"), action)
            .to_string();
        assert!(
            err.contains("alias/release") && err.contains("eu-west-1"),
            "{err}"
        );
        assert!(err.contains(action), "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{code}: {err}");
        }
    }
}
