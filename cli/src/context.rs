//! What every command works with: the AWS SDK settings, Conveyor's names (from a stack's outputs
//! or the environment) and the clients, built when a command first needs them.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use conveyor::aws::Ssm;
use conveyor::config::Configs;
use conveyor::fleet::Fleet;
use conveyor::ledger::Ledger;
use conveyor::web::Endpoints;
use conveyor::DEFAULT_PREFIX;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::args::Global;
use crate::error::CliError;
use crate::output::Style;

/// Where a Conveyor installation keeps things.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Names {
    pub table: Option<String>,
    pub promote_function: Option<String>,
    pub stage_deploy_function: Option<String>,
    pub prefix: String,
    /// Native deployments: the hook function and the role ECS invokes it with (checked by
    /// `doctor`).
    pub hook_function_arn: Option<String>,
    pub hook_role_arn: Option<String>,
    /// `stack NAME` or `environment`.
    pub source: String,
}

impl Names {
    /// From `CONVEYOR_TABLE`, `CONVEYOR_PROMOTE_FUNCTION`, `CONVEYOR_STAGE_DEPLOY_FUNCTION`,
    /// `CONVEYOR_SSM_PREFIX` (and `CONVEYOR_HOOK_FUNCTION_ARN`, `CONVEYOR_HOOK_ROLE_ARN`).
    pub fn from_env() -> Names {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        Names {
            table: var("CONVEYOR_TABLE"),
            promote_function: var("CONVEYOR_PROMOTE_FUNCTION"),
            stage_deploy_function: var("CONVEYOR_STAGE_DEPLOY_FUNCTION"),
            prefix: var("CONVEYOR_SSM_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            hook_function_arn: var("CONVEYOR_HOOK_FUNCTION_ARN"),
            hook_role_arn: var("CONVEYOR_HOOK_ROLE_ARN"),
            source: "environment".into(),
        }
    }

    /// From a stack's outputs (`StateTableName`, `PromoteFunctionName`, `StageDeployFunctionName`)
    /// and its `SsmPrefix` (an output of that name, else the parameter).
    pub fn from_stack(stack: &str, outputs: &[(String, String)], parameters: &[(String, String)]) -> Names {
        let output = |key: &str| outputs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let parameter = |key: &str| parameters.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        Names {
            table: output("StateTableName"),
            promote_function: output("PromoteFunctionName"),
            stage_deploy_function: output("StageDeployFunctionName"),
            prefix: output("SsmPrefix").or_else(|| parameter("SsmPrefix")).unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            hook_function_arn: output("DeployHookFunctionArn"),
            hook_role_arn: output("EcsHookInvokeRoleArn"),
            source: format!("stack {stack}"),
        }
    }

    fn missing(&self, what: &str, output: &str, variable: &str) -> CliError {
        let how = if self.source == "environment" {
            format!("set {variable} or give --stack NAME")
        } else {
            format!("the {} has no output {output}", self.source)
        };
        CliError::config(format!("no {what} is known: {how}"))
    }

    pub fn table(&self) -> Result<&str, CliError> {
        self.table.as_deref().ok_or_else(|| self.missing("state table", "StateTableName", "CONVEYOR_TABLE"))
    }

    pub fn promote_function(&self) -> Result<&str, CliError> {
        self.promote_function
            .as_deref()
            .ok_or_else(|| self.missing("promote function", "PromoteFunctionName", "CONVEYOR_PROMOTE_FUNCTION"))
    }

    /// Where stage is paused and resumed (each function changes its own environment only).
    pub fn stage_deploy_function(&self) -> Result<&str, CliError> {
        self.stage_deploy_function.as_deref().ok_or_else(|| {
            self.missing("stage-deploy function", "StageDeployFunctionName", "CONVEYOR_STAGE_DEPLOY_FUNCTION")
        })
    }

    /// `{prefix}/apps/`.
    pub fn apps_path(&self) -> String {
        format!("{}/apps/", self.prefix.trim_end_matches('/'))
    }
}

pub struct Context {
    pub style: Style,
    stack: Option<String>,
    sdk: SdkConfig,
    names: OnceCell<Names>,
}

impl Context {
    /// The standard SDK settings (`--profile`, `--region`, the environment, `AWS_ENDPOINT_URL`).
    pub async fn new(global: &Global, tty: bool) -> Context {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &global.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &global.region {
            loader = loader.region(Region::new(region.clone()));
        }
        Context {
            style: Style::new(global.color, global.json, tty),
            stack: global.stack.clone(),
            sdk: loader.load().await,
            names: OnceCell::new(),
        }
    }

    /// The stack `--stack` (or `CONVEYOR_STACK`) names, if any.
    pub fn stack(&self) -> Option<&str> {
        self.stack.as_deref()
    }

    /// The SDK settings, which must name a region.
    /// The SDK settings as loaded (credentials and region).
    pub fn sdk(&self) -> Result<&SdkConfig, CliError> {
        match self.sdk.region() {
            Some(_) => Ok(&self.sdk),
            None => Err(CliError::config("no AWS region: give --region, set AWS_REGION, or set one in the profile")),
        }
    }

    /// Conveyor's names, read once (from the stack, if one is given).
    pub async fn names(&self) -> Result<&Names, CliError> {
        self.names
            .get_or_try_init(|| async {
                let Some(stack) = &self.stack else { return Ok(Names::from_env()) };
                let client = aws_sdk_cloudformation::Client::new(self.sdk()?);
                let described = client
                    .describe_stacks()
                    .stack_name(stack)
                    .send()
                    .await
                    .map_err(|e| {
                        let error = conveyor::aws::AwsError::from_sdk("CloudFormation DescribeStacks", e);
                        if error.code == "ValidationError" {
                            // CloudFormation's answer to a stack that does not exist here.
                            CliError::config(format!(
                                "no stack {stack} in this account and region ({}): give --stack (or CONVEYOR_STACK) the name of Conveyor's SAM stack",
                                error.message
                            ))
                        } else {
                            CliError::new(crate::error::AWS_OR_CONFIG, "AwsError", error.to_string())
                        }
                    })?;
                let found = described.stacks().first().ok_or_else(|| CliError::config(format!("no stack {stack}")))?;
                let outputs: Vec<(String, String)> = found
                    .outputs()
                    .iter()
                    .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                    .collect();
                let parameters: Vec<(String, String)> = found
                    .parameters()
                    .iter()
                    .filter_map(|p| {
                        Some((p.parameter_key()?.to_owned(), p.resolved_value().or(p.parameter_value())?.to_owned()))
                    })
                    .collect();
                Ok(Names::from_stack(stack, &outputs, &parameters))
            })
            .await
    }

    /// The SDK settings with the retry policy Conveyor's functions use.
    fn aws(&self) -> Result<SdkConfig, CliError> {
        Ok(conveyor::aws::with_retries(self.sdk()?))
    }

    /// The installation's app configs.
    pub async fn configs(&self) -> Result<Configs, CliError> {
        Ok(Configs::new(self.ssm()?, &self.names().await?.prefix, self.endpoints()?))
    }

    /// The installation's state table.
    pub async fn ledger(&self) -> Result<Ledger, CliError> {
        let table = self.names().await?.table()?.to_owned();
        Ok(Ledger::from_config(&self.aws()?, table))
    }

    /// ECS where the apps run (other accounts' through their read-only roles).
    pub fn fleet(&self) -> Result<Fleet, CliError> {
        Ok(Fleet::new(&self.aws()?, "conveyor").reading())
    }

    /// What the functions may call, as they are told (`CONVEYOR_ALLOW_LOCAL_ENDPOINTS`: tests and
    /// the local playground only): configs are judged, and Slack is posted to, by the same rule.
    pub fn endpoints(&self) -> Result<Endpoints, CliError> {
        Endpoints::from_variable(std::env::var(conveyor::web::LOCAL_ENDPOINTS_VARIABLE).ok().as_deref())
            .map_err(CliError::config)
    }

    pub fn ssm(&self) -> Result<Ssm, CliError> {
        Ok(Ssm::new(&self.aws()?))
    }

    pub fn lambda(&self) -> Result<aws_sdk_lambda::Client, CliError> {
        Ok(aws_sdk_lambda::Client::new(self.sdk()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn names_come_from_the_stacks_outputs_and_its_prefix_parameter() {
        let outputs = pairs(&[
            ("StateTableName", "conveyor-StateTable-1"),
            ("PromoteFunctionName", "conveyor-Promote-1"),
            ("AlertTopicArn", "arn:aws:sns:us-east-1:1:alerts"),
        ]);
        let names = Names::from_stack("conveyor", &outputs, &pairs(&[("SsmPrefix", "/deploy")]));
        assert_eq!(names.table().unwrap(), "conveyor-StateTable-1");
        assert_eq!(names.promote_function().unwrap(), "conveyor-Promote-1");
        assert_eq!(names.apps_path(), "/deploy/apps/");
        let missing = Names::from_stack("conveyor", &[], &[]).promote_function().unwrap_err();
        assert_eq!(missing.exit_code, crate::error::AWS_OR_CONFIG);
        assert!(missing.message.contains("stack conveyor has no output PromoteFunctionName"), "{missing}");
        assert_eq!(Names::from_stack("c", &[], &[]).prefix, "/conveyor");
    }
}
