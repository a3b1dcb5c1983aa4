//! Who makes each AWS call: every function binary and the CLI run with their own access key id,
//! `{principal}@{scope}` (`stage-deploy@t123x4z`, `operator@t123x4z`), the scope being the test's
//! id. moto accepts any key; the local AWS reads the caller from the request's SigV4 credential,
//! so the IAM test (`tests/integration/iam.rs`) can evaluate each call against the policy of the
//! principal that made it. The harness's own calls (seeding, reading state) keep the key `test`.

/// The principal of the `conveyor` CLI: the operator running it with their own credentials.
pub const OPERATOR: &str = "operator";

/// Second persons the tests and the demo run the CLI as (approvers): each its own identity in
/// the local STS, and, like the operator, no machine-readable policy in the IAM test
/// (`tests/localaws/iam_policy.py` lists them too).
pub const PEOPLE: [&str; 3] = [OPERATOR, "approver", "release-manager"];

/// A GitHub Actions job with the promote role of `infra/github-oidc.yaml` (the IAM test evaluates
/// that role's policy against its calls).
pub const GITHUB_PROMOTE: &str = "github-promote";

const KEY: &str = "AWS_ACCESS_KEY_ID";

/// The access key id of `principal` in the test `scope`.
pub fn access_key(principal: &str, scope: &str) -> String {
    format!("{principal}@{scope}")
}

/// `env` with its credentials made `principal`'s, in the scope its access key already names (an
/// environment from [`crate::World::function_env`]); an environment without a scoped key is
/// left as it is.
pub fn act_as(env: &[(String, String)], principal: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(name, value)| match value.split_once('@') {
            Some((_, scope)) if name == KEY => (name.clone(), access_key(principal, scope)),
            _ => (name.clone(), value.clone()),
        })
        .collect()
}
