//! Whether an environment's account can pull an image from the registry it was pushed to: the
//! same account, a repository policy that lets it, or ECR replication into it. Promote refuses
//! what could never be pulled (a rollout that would fail every task), and `conveyor doctor`
//! checks the same before the first promotion.

use serde_json::Value;
use tracing::warn;

use crate::error::PullNotAllowed;
use crate::fleet::Fleet;
use crate::image::EcrImage;
use crate::types::Environment;

/// How `account` (in `region`) pulls an image pushed to another registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAccess {
    /// The image is in the account's own registry.
    SameAccount,
    /// The repository policy lets the account pull.
    Policy,
    /// ECR replicates the repository into the account and region: pull the replica, from this
    /// registry.
    Replica { registry: String },
    /// The repository policy could not be read (another account's registry): ECS will tell.
    Unknown { why: String },
    /// Neither: every task would fail to pull it.
    Denied(Box<PullNotAllowed>),
}

/// Where `environment` (in `account` and `region`) stands to pull images of `pushed`'s
/// repository: at most a `GetRepositoryPolicy` and a `DescribeRegistry`.
pub async fn access(
    fleet: &Fleet,
    pushed: &EcrImage<'_>,
    environment: Environment,
    account: &str,
    region: &str,
) -> PullAccess {
    if pushed.account == account {
        return PullAccess::SameAccount;
    }
    let ecr = fleet.ecr_in(pushed.region);
    let policy =
        ecr.get_repository_policy().registry_id(pushed.account).repository_name(pushed.repository).send().await;
    let policy = match policy {
        Ok(output) => output.policy_text.and_then(|text| serde_json::from_str::<Value>(&text).ok()),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_repository_policy_not_found_exception()) => None,
        Err(error) => {
            let error = crate::aws::AwsError::from_sdk("GetRepositoryPolicy", error);
            warn!(repository = pushed.repository, error = %error, "cannot read the repository policy: ECS will tell whether the image can be pulled");
            return PullAccess::Unknown { why: error.to_string() };
        }
    };
    if policy.as_ref().is_some_and(|policy| crate::image::policy_lets_pull(policy, account)) {
        return PullAccess::Policy;
    }
    if replicated(&ecr, pushed.repository, account, region).await {
        return PullAccess::Replica { registry: crate::image::ecr_registry(account, region) };
    }
    let statement = serde_json::json!({
        "Sid": format!("ConveyorPull{account}"),
        "Effect": "Allow",
        "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
    });
    PullAccess::Denied(Box::new(PullNotAllowed {
        environment,
        repository: pushed.repository.to_owned(),
        registry_account: pushed.account.to_owned(),
        registry_region: pushed.region.to_owned(),
        account: account.to_owned(),
        region: region.to_owned(),
        statement,
    }))
}

/// Whether ECR replicates `repository` to `account` in `region`.
async fn replicated(ecr: &aws_sdk_ecr::Client, repository: &str, account: &str, region: &str) -> bool {
    let Ok(registry) = ecr.describe_registry().send().await else { return false };
    registry.replication_configuration().is_some_and(|configuration| {
        configuration.rules().iter().any(|rule| {
            let filtered = rule.repository_filters();
            let selected = filtered.is_empty() || filtered.iter().any(|f| repository.starts_with(f.filter()));
            selected && rule.destinations().iter().any(|d| d.registry_id() == account && d.region() == region)
        })
    })
}
