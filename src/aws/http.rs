//! One HTTP client for every AWS SDK client, its TLS set up on the first request.
//!
//! The SDK's default client loads the trusted certificates when each SDK client is *built*
//! (`validate_base_client_config`), and each client builds its own: six times before a Lambda
//! function's first `/next`, STS's included. Shared, and set up on first use, the certificates are
//! read once, when the first AWS call is made — never for an invocation that makes none.

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

/// The SDK's own client (rustls with aws-lc, proxies from the environment), which caches one
/// connector per timeout setting; only its eager set-up at every client's construction is left out.
#[derive(Debug)]
struct OnFirstRequest(SharedHttpClient);

impl HttpClient for OnFirstRequest {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }
}

/// The HTTP client every SDK client of this process shares.
pub fn shared_client() -> SharedHttpClient {
    // `build_with_connector_fn` is what the SDK's default client is built with: the same
    // connector, the same proxy settings.
    let sdk_default = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    OnFirstRequest(sdk_default).into_shared()
}
