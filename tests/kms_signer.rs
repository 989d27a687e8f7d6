//! `sign: kms` against the stand-in's KMS (moto): the check before the build, and
//! signatures made by KMS (through the SDK, as the action calls it) that verify with the
//! key's public key over exactly the bytes cosign verifies: the simple-signing payload of
//! a `.sig` layer, the DSSE pre-authentication encoding of an attestation. Also the
//! refusals: a key that does not exist, a key that cannot sign.
//!
//! Each run makes its own keys under unique aliases: moto is shared, and never reset.

mod support;

use base64::Engine as _;
use ecr_build_push::ecr::kms::{Algorithm, KeyRef, KmsSigner};
use ecr_build_push::ecr::Ecr;
use ecr_build_push::env::Environment;
use ecr_build_push::network::Network;
use ecr_build_push::supply::cosign::{self, Subject};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sigstore_types::{Digest, Sha256Hash, Statement, Subject as StatementSubject};
use support::{standin, unique, Standin, REGION};

const HEX: &str = "5d3c1f0e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d";

/// A key of `spec` and `usage` in moto under a new alias; the alias.
fn create_key(standin: &Standin, usage: &str, spec: &str) -> String {
    let key = standin.moto_kms(
        "CreateKey",
        &serde_json::json!({"KeyUsage": usage, "KeySpec": spec, "Description": "kms_signer test"}),
    );
    let key_id = key["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("moto created no key: {key}"));
    let alias = format!("alias/{}", unique("kms-signer"));
    standin.moto_kms(
        "CreateAlias",
        &serde_json::json!({"AliasName": alias, "TargetKeyId": key_id}),
    );
    alias
}

async fn signer(ecr: &Ecr, env: &Environment, alias: &str) -> KmsSigner {
    let key = KeyRef::parse(&format!("awskms:///{alias}")).unwrap();
    KmsSigner::new(ecr, key, env.kms_endpoint.as_deref()).await
}

fn verify(public: &VerifyingKey, message: &[u8], der: &[u8]) {
    let signature = Signature::from_der(der).expect("KMS answers DER ECDSA");
    public
        .verify(message, &signature)
        .expect("the signature verifies over these bytes");
}

/// One test, so that the environment the SDK reads is set before any thread reads it.
#[tokio::test]
async fn kms_keys_sign_as_cosign_verifies_and_bad_keys_fail_first() {
    let standin = standin();
    for (name, value) in &standin.env {
        if name.starts_with("AWS_") {
            std::env::set_var(name, value);
        }
    }
    std::env::set_var("AWS_ENDPOINT_URL_KMS", &standin.moto_url);
    let env = Environment::capture(std::env::vars());
    let network = Network::from_env(&env.network, None).unwrap();
    let ecr = Ecr::connect(Some(REGION), env.ecr_endpoint.as_deref(), &network)
        .await
        .unwrap();

    // A P-256 key: the check keeps its public key; a signature and an attestation made
    // through KMS verify with it.
    let alias = create_key(standin, "SIGN_VERIFY", "ECC_NIST_P256");
    let kms = signer(&ecr, &env, &alias).await;
    assert_eq!(kms.endpoint, standin.moto_url);
    let checked = kms.check().await.unwrap().clone();
    assert_eq!(checked.algorithm, Algorithm::EcdsaSha256);
    assert_eq!(checked.spec, "ECC_NIST_P256");
    let public = VerifyingKey::from_public_key_der(&checked.public_key_der).unwrap();

    let subject = Subject {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: format!("sha256:{HEX}"),
        size: 321,
    };
    let reference = format!("{}/team/app", standin.registry);
    let sig = cosign::sign_image(&kms, &reference, &subject, None)
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&sig.manifest.bytes).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let signature = b64
        .decode(
            manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    verify(&public, &sig.blobs[1].bytes, &signature);

    let statement = Statement::new(
        vec![StatementSubject::new(
            &reference,
            Digest::sha256(Sha256Hash::from_hex(HEX).unwrap()),
        )],
        "https://slsa.dev/provenance/v1",
        serde_json::json!({}),
    );
    let att = cosign::attest(&kms, &statement, &subject, None)
        .await
        .unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&att.blobs[1].bytes).unwrap();
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let signature = b64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    verify(&public, &cosign::pae(&payload), &signature);

    // No such key: named, with the region and the IAM action, before anything is built.
    let missing = format!("alias/{}", unique("kms-signer-missing"));
    let err = signer(&ecr, &env, &missing)
        .await
        .check()
        .await
        .unwrap_err()
        .to_string();
    for needle in [
        missing.as_str(),
        REGION,
        "kms:GetPublicKey",
        "does not exist",
    ] {
        assert!(err.contains(needle), "{err}");
    }

    // A key for encryption cannot sign.
    let encrypting = create_key(standin, "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT");
    let err = signer(&ecr, &env, &encrypting)
        .await
        .check()
        .await
        .unwrap_err()
        .to_string();
    for needle in [encrypting.as_str(), "ENCRYPT_DECRYPT", "SIGN_VERIFY"] {
        assert!(err.contains(needle), "{err}");
    }
}
