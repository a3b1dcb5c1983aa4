//! SNS: where every notification goes.

use aws_sdk_sns::types::MessageAttributeValue;

use super::AwsError;

#[derive(Clone)]
pub struct Sns {
    pub client: aws_sdk_sns::Client,
}

impl Sns {
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
