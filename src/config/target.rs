//! Where an app runs (a target: one ECS service in an account and region) and where its images
//! come from (the registry).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::fields::{Fields, Problems};
use crate::types::ImageDigest;
use crate::web::Endpoints;

/// One ECS service an app runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    pub cluster: String,
    pub service: String,
    /// https (plain http only with `health_allow_http`, or to this machine with
    /// [`Endpoints::Local`]), never to a loopback, link-local, unspecified or metadata address.
    pub health_url: Option<String>,
    /// `health_allow_http`: the config allows a plain-http `health_url` (and `test_health_url`).
    pub health_allow_http: bool,
    /// Where the lifecycle hook of a native (blue/green, linear, canary) deployment probes the new
    /// revision on test traffic: the test listener, or the test header route. Same rules as
    /// `health_url`.
    pub test_health_url: Option<String>,
    /// How many probes of `test_health_url` in a row must answer 2xx ([`DEFAULT_TEST_PROBES`]).
    pub test_probes: u32,
    /// Another AWS account, reached through `role_arn` (`None`: Conveyor's own account).
    pub account: Option<String>,
    /// Another region (`None`: Conveyor's own region).
    pub region: Option<String>,
    /// The role Conveyor assumes for every ECS call of this target.
    pub role_arn: Option<String>,
}

/// The keys that describe one target (an environment's own keys, or an item of `targets`).
pub(crate) const TARGET_KEYS: [&str; 9] = [
    "cluster",
    "service",
    "health_url",
    "health_allow_http",
    "test_health_url",
    "test_probes",
    "account",
    "region",
    "role_arn",
];

/// Probes of `test_health_url` in a row that pass a native deployment's hook, unless configured.
pub const DEFAULT_TEST_PROBES: u32 = 3;
/// The range of `test_probes`.
pub const TEST_PROBES_RANGE: (u32, u32) = (1, 20);

/// Where a service lives, as its ARN says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    /// `None` for old short-format service ARNs, which carry no cluster.
    pub cluster: Option<&'a str>,
    pub service: &'a str,
}

/// The account and region Conveyor itself runs in (what a target without `account` or `region`
/// means), when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Home {
    pub account: Option<String>,
    pub region: Option<String>,
}

impl ServiceTarget {
    /// The same service as `other` (account, region, cluster and name).
    pub fn same_service(&self, other: &ServiceTarget) -> bool {
        self.account == other.account
            && self.region == other.region
            && self.cluster == other.cluster
            && self.service == other.service
    }

    /// Whether the service at `place` is this one; a target without account or region means
    /// Conveyor's own (`home`), and what is unknown on either side does not rule it out.
    pub fn is_at(&self, place: &Place<'_>, home: &Home) -> bool {
        self.service == place.service
            && place.cluster.is_none_or(|cluster| cluster == self.cluster)
            && self.is_in(place.account, place.region, home)
    }

    /// Whether this target runs in `account` and `region` (the same rules as [`Self::is_at`]).
    pub fn is_in(&self, account: Option<&str>, region: Option<&str>, home: &Home) -> bool {
        let matches = |wanted: Option<&str>, own: Option<&str>, seen: Option<&str>| match (wanted.or(own), seen) {
            (Some(wanted), Some(seen)) => wanted == seen,
            _ => true,
        };
        matches(self.account.as_deref(), home.account.as_deref(), account)
            && matches(self.region.as_deref(), home.region.as_deref(), region)
    }

    /// `cluster/service`, with the account and region when they are not Conveyor's own.
    pub fn label(&self) -> String {
        match (&self.account, &self.region) {
            (None, None) => format!("{}/{}", self.cluster, self.service),
            (account, region) => format!(
                "{}/{} ({})",
                self.cluster,
                self.service,
                [account.as_deref(), region.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Checks one target's keys (the caller has checked which keys the object may have).
    pub(crate) fn parse(fields: &Fields<'_>, endpoints: Endpoints) -> Option<Self> {
        let cluster = fields.string("cluster", true, &NAME, "an ECS cluster name (not an ARN)");
        let service = fields.string("service", true, &NAME, "an ECS service name (not an ARN)");
        let allow_http = fields.boolean("health_allow_http").unwrap_or(false);
        let url = |key: &str| {
            let url = fields.string(key, false, &HTTP_URL, "an https:// URL")?;
            match health_url_rule(key, &url, allow_http, endpoints, &fields.key("health_allow_http")) {
                Ok(()) => Some(url),
                Err(problem) => {
                    fields.problem(key, problem);
                    None
                }
            }
        };
        let health_url = url("health_url");
        let test_health_url = url("test_health_url");
        let (min, max) = TEST_PROBES_RANGE;
        let test_probes = fields.count("test_probes", min, max).unwrap_or(DEFAULT_TEST_PROBES);
        let account = fields.string("account", false, &ACCOUNT, "a 12-digit AWS account id");
        let region = fields.string("region", false, &REGION, "an AWS region such as eu-west-1");
        let role_arn =
            fields.string("role_arn", false, &ROLE_ARN, "an IAM role ARN (arn:aws:iam::123456789012:role/name)");
        let role_account = role_arn.as_deref().and_then(|arn| ROLE_ARN.captures(arn)).map(|c| c[1].to_owned());
        let account = match (account, role_account) {
            (Some(account), Some(role)) if account != role => {
                fields.problem(
                    "role_arn",
                    format!("the role is in account {role}, not in `account` {account}: Conveyor assumes a role in the account it deploys to"),
                );
                None
            }
            (None, Some(role)) => Some(role),
            (Some(account), None) => {
                fields.problem(
                    "role_arn",
                    "missing: with `account`, Conveyor needs the role to assume there (deploy infra/target-account.yaml in that account)",
                );
                Some(account)
            }
            (account, _) => account,
        };
        Some(ServiceTarget {
            cluster: cluster?,
            service: service?,
            health_url,
            health_allow_http: allow_http,
            test_health_url,
            test_probes,
            account,
            region,
            role_arn,
        })
    }
}

/// Where a `health_url` (or `test_health_url`: `key`) may point: https, or plain http with
/// `health_allow_http` (or to this machine with [`Endpoints::Local`]); never a loopback (unless
/// local), link-local, unspecified or metadata address. Names are checked again when they are
/// resolved ([`crate::web::Guarded`]).
fn health_url_rule(
    key: &str,
    url: &str,
    allow_http: bool,
    endpoints: Endpoints,
    allow_key: &str,
) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    if let Some(refused) = crate::web::refused_host(&parsed, endpoints) {
        return Err(format!(
            "{url:?} points to {refused}: Conveyor never calls loopback, link-local or metadata addresses"
        ));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http || (endpoints == Endpoints::Local && crate::web::is_loopback_host(&parsed)) => Ok(()),
        "http" => Err(format!(
            "{url:?} is plain http: {key} must be https:// (to check over http, set `{allow_key}` to true)"
        )),
        other => Err(format!("{url:?} is {other}: {key} must be https://")),
    }
}

/// The ECR registry an app's repository lives in: the only place its images are deployed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub account: String,
    pub region: String,
}

impl Registry {
    /// `{account}.dkr.ecr.{region}.amazonaws.com/{repository}@{digest}`: the image Conveyor deploys.
    pub fn image(&self, repository: &str, digest: &ImageDigest) -> String {
        crate::image::pinned(&crate::image::ecr_registry(&self.account, &self.region), repository, digest)
    }

    /// Whether a push event's envelope (which any invoker of stage-deploy can write) names this
    /// registry; what it leaves out does not rule it out.
    pub fn admits(&self, account: Option<&str>, region: Option<&str>) -> bool {
        account.is_none_or(|a| a == self.account) && region.is_none_or(|r| r == self.region)
    }

    pub(crate) fn parse(value: &Value, path: String, problems: &Problems) -> Option<Self> {
        let fields = Fields::new(value, path, problems)?;
        fields.only(&["account", "region"]);
        let account = fields.string("account", true, &ACCOUNT, "a 12-digit AWS account id");
        let region = fields.string("region", true, &REGION, "an AWS region such as eu-west-1");
        Some(Registry { account: account?, region: region? })
    }
}

#[allow(clippy::unwrap_used)] // literal patterns, covered by tests
pub(crate) static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_-]{1,255}$").unwrap());
#[allow(clippy::unwrap_used)]
static ACCOUNT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[0-9]{12}$").unwrap());
#[allow(clippy::unwrap_used)]
static REGION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$").unwrap());
#[allow(clippy::unwrap_used)]
static ROLE_ARN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/[A-Za-z0-9+=,.@_/-]{1,512}$").unwrap());
#[allow(clippy::unwrap_used)]
static HTTP_URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^https?://[^\s/?#]+[^\s]*$").unwrap());
