//! The stand-in's other registries (`tests/standin/README.md`, "More registries, STS and
//! ECR Public"): a second region, a second account reached through a role, ECR Public.
//! Probes that look at each as a user would: its ECR API, `docker pull` and `run`.

use std::process::Command;

use super::{aws_json_call_in, Standin};

/// One registry of the stand-in, and how to log in to it.
pub struct Registry {
    /// `<account>.dkr.ecr.<region>.amazonaws.com` or `public.ecr.aws`.
    pub host: String,
    pub region: String,
    /// The access key its API calls are made with (an assumed role's, for account 2).
    pub access_key: String,
}

impl Standin {
    /// The second region of the primary account.
    pub fn region2(&self) -> Registry {
        Registry {
            host: self.var("STANDIN_REGION2_HOST"),
            region: self.var("STANDIN_REGION2"),
            access_key: super::own_access_key(),
        }
    }

    /// The second account, with the credentials of its role (assumed through the front's
    /// STS, so its keys act in that account).
    pub fn account2(&self) -> Registry {
        Registry {
            host: self.var("STANDIN_ACCOUNT2_HOST"),
            region: self.var("STANDIN_ACCOUNT2_REGION"),
            access_key: self.assume_role(&self.var("STANDIN_ACCOUNT2_ROLE")),
        }
    }

    /// `sts:AssumeRole` through the front; the access key it returns.
    pub fn assume_role(&self, role: &str) -> String {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-X", "POST", "https://sts.amazonaws.com/"])
            .arg("--cacert")
            .arg(&self.ca_cert)
            .args(["-H", "Content-Type: application/x-www-form-urlencoded"])
            .args(["-H", &format!("Authorization: AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=x", super::own_access_key())])
            .args([
                "--data",
                &format!(
                    "Action=AssumeRole&Version=2011-06-15&RoleSessionName=test&RoleArn={role}"
                ),
            ])
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "AssumeRole {role}: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        body.split("<AccessKeyId>")
            .nth(1)
            .and_then(|rest| rest.split("</AccessKeyId>").next())
            .unwrap_or_else(|| panic!("no AccessKeyId in {body}"))
            .to_string()
    }

    /// An ECR API call at `registry`'s API host, as its caller.
    pub fn api_at(
        &self,
        registry: &Registry,
        operation: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let url = format!("https://api.ecr.{}.amazonaws.com", registry.region);
        let target = format!("AmazonEC2ContainerRegistry_V20150921.{operation}");
        aws_json_call_in(
            &url,
            Some(&self.ca_cert),
            (&registry.access_key, &registry.region),
            ("ecr", &target),
            body,
        )
    }

    /// The catalog data ECR Public's API holds for `repository`.
    pub fn public_catalog(&self, repository: &str) -> serde_json::Value {
        let answer = aws_json_call_in(
            "https://api.ecr-public.us-east-1.amazonaws.com",
            Some(&self.ca_cert),
            (&super::own_access_key(), "us-east-1"),
            (
                "ecr-public",
                "SpencerFrontendService.GetRepositoryCatalogData",
            ),
            &serde_json::json!({"repositoryName": repository}),
        );
        answer["catalogData"].clone()
    }

    /// The digest `registry`'s ECR API holds for `repository:tag`.
    pub fn digest_at(&self, registry: &Registry, repository: &str, tag: &str) -> Option<String> {
        let answer = self.api_at(
            registry,
            "DescribeImages",
            &serde_json::json!({"repositoryName": repository, "imageIds": [{"imageTag": tag}]}),
        );
        answer["imageDetails"][0]["imageDigest"]
            .as_str()
            .map(ToString::to_string)
    }

    /// The digests of the referrers of `subject` in `registry`'s `repository`, as its
    /// `ListImageReferrers` lists them, sorted.
    pub fn referrers_at(
        &self,
        registry: &Registry,
        repository: &str,
        subject: &str,
    ) -> Vec<String> {
        let listed = self.api_at(
            registry,
            "ListImageReferrers",
            &serde_json::json!({"repositoryName": repository, "subjectId": {"imageDigest": subject}}),
        );
        let mut digests: Vec<String> = listed["referrers"]
            .as_array()
            .unwrap_or_else(|| panic!("ListImageReferrers: {listed}"))
            .iter()
            .filter_map(|r| r["digest"].as_str().map(String::from))
            .collect();
        digests.sort();
        digests
    }

    /// The registry password `registry`'s API issues to its caller.
    pub fn password_at(&self, registry: &Registry) -> String {
        let answer = self.api_at(registry, "GetAuthorizationToken", &serde_json::json!({}));
        let token = answer["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap_or_else(|| panic!("GetAuthorizationToken: {answer}"));
        super::base64_decode(token)
            .split_once(':')
            .expect("user:password")
            .1
            .to_string()
    }
}

/// `docker pull` of `reference` (logged in to `host` with `password` when given, else
/// anonymously), then `docker run --rm` of it; its output.
pub fn pull_and_run(host: &str, password: Option<&str>, reference: &str) -> String {
    let config = tempfile::tempdir().unwrap();
    let docker = |args: &[&str], stdin: Option<&str>| {
        let mut command = Command::new("docker");
        command.arg("--config").arg(config.path()).args(args);
        let output = match stdin {
            Some(text) => command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().unwrap().write_all(text.as_bytes())?;
                    child.wait_with_output()
                }),
            None => command.output(),
        }
        .expect("run docker");
        assert!(
            output.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    if let Some(password) = password {
        docker(
            &["login", "-u", "AWS", "--password-stdin", host],
            Some(password),
        );
    }
    docker(&["pull", "-q", reference], None);
    let out = docker(&["run", "--rm", reference], None);
    let _ = Command::new("docker")
        .args(["rmi", "-f", reference])
        .output();
    out
}
