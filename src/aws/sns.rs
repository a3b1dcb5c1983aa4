//! SNS: where every notification goes.

use aws_sdk_sns::types::MessageAttributeValue;

use super::AwsError;

#[derive(Clone)]
pub struct Sns {
    pub client: aws_sdk_sns::Client,
}

impl Sns {
    /// A notification that cannot go out stays in the outbox and is sent later: an outage of SNS
    /// must not slow every deployment down, so two attempts only.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let config = aws_sdk_sns::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .build();
        Sns { client: aws_sdk_sns::Client::from_conf(config) }
    }

    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        let mut request = self.client.publish().topic_arn(topic_arn).subject(subject).message(message);
        for (name, value) in attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .map_err(|e| AwsError::new("Publish", "InvalidAttribute", e.to_string()))?;
            request = request.message_attributes(*name, value);
        }
        let output = request.send().await.map_err(|e| AwsError::from_sdk("Publish", e))?;
        Ok(output.message_id.unwrap_or_default())
    }
}
