//! The IAM proof's wiring: a world whose function binaries' and CLI's calls the local AWS keeps
//! with their callers ([`crate::principals`]), and the templates resolved for that world — its
//! clusters, table, topic, the apps' execution roles, the second account — evaluated against those
//! calls by `tests/localaws/iam_policy.py`.

use serde_json::{json, Value};

use crate::accounts::{OTHER_REGION, PROD_ACCOUNT};
use crate::local_aws::{ACCOUNT, REGION};
use crate::world::{execution_role, World};
use crate::{repo_root, LocalAws};

/// What the templates decide about one scenario's calls ([`World::iam_verdict`]).
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The calls kept for the world.
    pub calls: u64,
    /// The authorisations they needed (a transaction needs one per item, a registration passes
    /// roles and tags the revision, a publish to an encrypted topic uses its key).
    pub authorizations: u64,
    /// `{principal, action, resource, account, region, operation, write, why}` of each call IAM
    /// would refuse.
    pub denied: Vec<Value>,
    /// The same for calls of principals without a machine-readable policy (the operator).
    pub unknown: Vec<Value>,
    /// Operations the action table does not know (`tests/localaws/iam_actions.py`).
    pub unmapped: Vec<Value>,
    /// Every Allow statement of the principals: `{id, principal, actions, used_actions}`.
    pub statements: Vec<Value>,
}

impl World {
    /// A world whose binaries' and CLI's calls are kept for [`World::iam_verdict`].
    pub async fn watched() -> World {
        let world = World::new().await;
        world.aws.iam_watch(&world.id).await;
        world
    }

    /// The templates as deployed for this world: Conveyor's stack in the home account (its
    /// clusters, in [`OTHER_REGION`] too, the apps' execution role, the second account as a
    /// target) and the target account's stack in [`PROD_ACCOUNT`]; the physical names of the
    /// template's resources (the others get placeholders no call matches).
    pub fn iam_spec(&self) -> Value {
        let root = repo_root();
        // The pipeline scenarios' clusters too: `dev` is an entry environment (stage-deploy's),
        // `stage` and `prod` are promoted into (promote's).
        let stage_clusters = [self.name("stage"), self.name("stage-batch"), self.name("pipeline-dev")].join(",");
        let prod_clusters = [
            self.name("prod"),
            self.name(&format!("prod-{OTHER_REGION}")),
            self.name("pipeline-stage"),
            self.name("pipeline-prod"),
            self.name("pipeline-prod-eu"),
        ]
        .join(",");
        json!({
            "scope": self.id,
            "region": REGION,
            "account": ACCOUNT,
            "template": root.join("infra/template.yaml"),
            "parameters": {
                "StageClusterNames": stage_clusters,
                "ProdClusterNames": prod_clusters,
                "TaskRoleArns": execution_role(ACCOUNT),
                "TargetAccountIds": PROD_ACCOUNT,
                "DeployRegions": OTHER_REGION,
                "SsmPrefix": self.prefix,
            },
            "resources": {
                "StateTable": { "Ref": self.table, "Arn": format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", self.table) },
                "AlertTopic": { "Ref": self.topic_arn, "TopicArn": self.topic_arn },
                "AlertTopicKey": { "Ref": "alert-topic-key", "Arn": format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/alert-topic-key") },
            },
            // The GitHub Actions roles, for this world's repository, table and prefix.
            "github_template": root.join("infra/github-oidc.yaml"),
            "github_parameters": {
                "GitHubRepository": "example/shop-api",
                "RepositoryNames": "shop-api",
                "StateTableName": self.table,
                "SsmPrefix": self.prefix,
            },
            "target_template": root.join("infra/target-account.yaml"),
            // Only prod runs in the target account. (A parameter the template does not declare
            // is ignored: ClusterNames for one role, Stage/ProdClusterNames for a role per side.)
            "target_parameters": {
                "ConveyorAccountId": ACCOUNT,
                "ClusterNames": self.name("prod-b"),
                "StageClusterNames": "",
                "ProdClusterNames": self.name("prod-b"),
                "TaskRoleArns": execution_role(PROD_ACCOUNT),
                // The people the tests run the CLI as read the services there through the read role.
                "OperatorPrincipalArns": crate::principals::PEOPLE
                    .iter()
                    .map(|person| format!("arn:aws:iam::{ACCOUNT}:role/{person}"))
                    .collect::<Vec<_>>()
                    .join(","),
            },
        })
    }

    /// What the templates decide when `principal` (a function's name, or the operator) asks for
    /// `action` on `resource` with the condition keys `context`: `allowed`, `denied` or `unknown`.
    pub async fn iam_decide(&self, principal: &str, action: &str, resource: &str, context: Value) -> String {
        let question = json!({ "principal": principal, "action": action, "resource": resource, "context": context });
        let answer = self.aws.iam_decide(&self.iam_spec(), question).await;
        answer["verdict"].as_str().unwrap_or_default().to_owned()
    }

    /// The templates' verdict on every call this (watched) world's binaries and CLI made.
    pub async fn iam_verdict(&self) -> Verdict {
        verdict(self.aws, &self.iam_spec()).await
    }
}

async fn verdict(aws: &LocalAws, spec: &Value) -> Verdict {
    let answer = aws.iam_evaluate(spec).await;
    let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    Verdict {
        calls: answer["calls"].as_u64().unwrap_or_default(),
        authorizations: answer["authorizations"].as_u64().unwrap_or_default(),
        denied: list("denied"),
        unknown: list("unknown"),
        unmapped: list("unmapped"),
        statements: list("statements"),
    }
}
