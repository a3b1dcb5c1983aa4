//! SSM Parameter Store: the apps' configuration and the Slack webhook secret (read only; Conveyor
//! writes nothing to SSM, but `conveyor config put` writes a validated app config for people).

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::ParameterType;
use chrono::{DateTime, Utc};

use super::AwsError;

#[derive(Clone)]
pub struct Ssm {
    pub client: aws_sdk_ssm::Client,
}

/// A parameter's name, value, version and when it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub value: String,
    pub version: i64,
    pub modified: Option<DateTime<Utc>>,
}

impl Parameter {
    fn from_sdk(parameter: aws_sdk_ssm::types::Parameter) -> Option<Self> {
        let modified =
            parameter.last_modified_date.and_then(|at| DateTime::from_timestamp(at.secs(), at.subsec_nanos()));
        Some(Parameter {
            name: parameter.name?,
            value: parameter.value.unwrap_or_default(),
            version: parameter.version,
            modified,
        })
    }
}

impl Ssm {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ssm { client: aws_sdk_ssm::Client::new(config) }
    }

    /// All parameters directly under `path` (every page).
    pub async fn parameters_by_path(&self, path: &str, decrypt: bool) -> Result<Vec<Parameter>, AwsError> {
        let mut pages = self
            .client
            .get_parameters_by_path()
            .path(path)
            .recursive(false)
            .with_decryption(decrypt)
            .into_paginator()
            .send();
        let mut parameters = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("GetParametersByPath", e))?;
            parameters.extend(page.parameters.unwrap_or_default().into_iter().filter_map(Parameter::from_sdk));
        }
        Ok(parameters)
    }

    /// One parameter, or `None` if it does not exist.
    pub async fn get(&self, name: &str, decrypt: bool) -> Result<Option<Parameter>, AwsError> {
        match self.client.get_parameter().name(name).with_decryption(decrypt).send().await {
            Ok(output) => Ok(output.parameter.and_then(Parameter::from_sdk)),
            Err(SdkError::ServiceError(e)) if e.err().is_parameter_not_found() => Ok(None),
            Err(e) => Err(AwsError::from_sdk("GetParameter", e)),
        }
    }

    /// Writes a `String` parameter (overwriting), returning its new version.
    pub async fn put(&self, name: &str, value: &str, description: &str) -> Result<i64, AwsError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .description(description)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map(|output| output.version)
            .map_err(|e| AwsError::from_sdk("PutParameter", e))
    }
}
