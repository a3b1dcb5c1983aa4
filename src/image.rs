//! Container image references: where Conveyor reads a digest from an image and builds the
//! digest-pinned ECR URI it deploys.

use std::sync::LazyLock;

use regex::Regex;

use crate::types::ImageDigest;

/// An ECR registry host: `{account}.dkr.ecr.{region}.amazonaws.com` (or `.amazonaws.com.cn`).
#[allow(clippy::unwrap_used)] // a literal pattern, covered by tests
static ECR_REGISTRY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9]{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$").unwrap());

/// The registry host for an account and region.
pub fn ecr_registry(account: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("{account}.dkr.ecr.{region}.{suffix}")
}

/// The ECR registry an image is pulled from, if it is an ECR image.
pub fn ecr_registry_of(image: &str) -> Option<&str> {
    let (registry, _) = image.split_once('/')?;
    ECR_REGISTRY.is_match(registry).then_some(registry)
}

/// An image in ECR: which registry (account, region) and repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrImage<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub repository: &'a str,
}

/// Splits an ECR image reference into registry account, region and repository.
pub fn ecr_parts(image: &str) -> Option<EcrImage<'_>> {
    let registry = ecr_registry_of(image)?;
    let rest = &image[registry.len() + 1..];
    let repository = rest.split_once('@').map_or_else(|| rest.rsplit_once(':').map_or(rest, |(r, _)| r), |(r, _)| r);
    let mut parts = registry.split('.');
    let account = parts.next()?;
    let region = parts.nth(2)?;
    Some(EcrImage { account, region, repository })
}

/// Whether an ECR repository policy lets `account` pull images (both `ecr:BatchGetImage` and
/// `ecr:GetDownloadUrlForLayer`, for that account or everyone).
pub fn policy_lets_pull(policy: &serde_json::Value, account: &str) -> bool {
    use serde_json::Value;
    let list = |value: &Value| -> Vec<String> {
        match value {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let statements = match &policy["Statement"] {
        Value::Array(statements) => statements.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        _ => Vec::new(),
    };
    let mut allowed = (false, false);
    for statement in statements.iter().filter(|s| s["Effect"] == "Allow") {
        let principals = match &statement["Principal"] {
            Value::String(star) => vec![star.clone()],
            principal => list(&principal["AWS"]),
        };
        let covers = principals.iter().any(|p| p == "*" || p == account || p.contains(&format!("::{account}:")));
        if !covers {
            continue;
        }
        for action in list(&statement["Action"]) {
            let action = action.to_ascii_lowercase();
            allowed.0 |= matches!(action.as_str(), "*" | "ecr:*" | "ecr:batchgetimage");
            allowed.1 |= matches!(action.as_str(), "*" | "ecr:*" | "ecr:getdownloadurlforlayer");
        }
    }
    allowed == (true, true)
}

/// The digest an image reference is pinned to (`repo@sha256:...`), if any.
pub fn digest_of(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, digest)| digest)
}

/// `{registry}/{repository}@{digest}`: what Conveyor writes into the task definition.
pub fn pinned(registry: &str, repository: &str, digest: &ImageDigest) -> String {
    format!("{registry}/{repository}@{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_digest_pinned_ecr_uris() {
        let digest = ImageDigest::parse(format!("sha256:{}", "0".repeat(64))).unwrap();
        let registry = ecr_registry("123456789012", "eu-west-1");
        assert_eq!(
            pinned(&registry, "shop-api", &digest),
            format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop-api@sha256:{}", "0".repeat(64))
        );
        assert_eq!(ecr_registry("123456789012", "cn-north-1"), "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn ecr_images_split_into_registry_and_repository() {
        let image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/shop-api@sha256:abc";
        assert_eq!(
            ecr_parts(image),
            Some(EcrImage { account: "123456789012", region: "eu-west-1", repository: "team/shop-api" })
        );
        assert_eq!(
            ecr_parts("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop:v1").map(|i| i.repository),
            Some("shop")
        );
        assert_eq!(ecr_parts("nginx:1"), None);
    }

    #[test]
    fn repository_policies_that_let_an_account_pull() {
        let pull = serde_json::json!({ "Version": "2012-10-17", "Statement": [{
            "Sid": "ProdPull", "Effect": "Allow", "Principal": { "AWS": ["arn:aws:iam::210987654321:root"] },
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"] }] });
        assert!(policy_lets_pull(&pull, "210987654321"));
        assert!(!policy_lets_pull(&pull, "999999999999"));
        let half = serde_json::json!({ "Statement": { "Effect": "Allow", "Principal": { "AWS": "210987654321" }, "Action": "ecr:BatchGetImage" } });
        assert!(!policy_lets_pull(&half, "210987654321"), "layers cannot be downloaded");
        let everyone = serde_json::json!({ "Statement": [{ "Effect": "Allow", "Principal": "*", "Action": "ecr:*" }] });
        assert!(policy_lets_pull(&everyone, "210987654321"));
        let denied = serde_json::json!({ "Statement": [{ "Effect": "Deny", "Principal": "*", "Action": "ecr:*" }] });
        assert!(!policy_lets_pull(&denied, "210987654321"));
    }

    #[test]
    fn reads_registry_and_digest_from_images() {
        let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/shop-api@sha256:abc";
        assert_eq!(ecr_registry_of(image), Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"));
        assert_eq!(digest_of(image), Some("sha256:abc"));
        assert_eq!(
            ecr_registry_of("123456789012.dkr.ecr.us-east-1.amazonaws.com/shop-api:v1"),
            Some("123456789012.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_eq!(ecr_registry_of("nginx:1.25"), None);
        assert_eq!(ecr_registry_of("docker.io/library/nginx"), None);
        assert_eq!(ecr_registry_of("public.ecr.aws/nginx/nginx:1"), None);
        assert_eq!(digest_of("nginx:1.25"), None);
    }
}
