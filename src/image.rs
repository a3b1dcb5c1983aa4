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
