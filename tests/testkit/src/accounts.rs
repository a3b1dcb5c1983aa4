//! A second AWS account in the local AWS: moto serves requests made with the credentials of a
//! role assumed in account B from B's own backends (clusters, services, task definitions), so a
//! cross-account deployment runs end to end on one moto; and another region of Conveyor's own
//! account (moto keeps a backend per region).

use aws_sdk_ecs::config::Credentials;
use serde_json::{json, Value};

use crate::local_aws::ACCOUNT;
use crate::world::{AppFixture, ServiceFixture, World};

/// The prod account of the cross-account scenarios.
pub const PROD_ACCOUNT: &str = "210987654321";

/// A region of Conveyor's own account other than its home region, for prod elsewhere.
pub const OTHER_REGION: &str = "eu-west-1";

/// The prod role Conveyor assumes in `account` (what infra/target-account.yaml creates for the
/// stack `conveyor`: `conveyor-{stack}-prod`, trusted by promote and deploy-monitor only).
pub fn target_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/conveyor-conveyor-prod")
}

impl World {
    /// SDK settings acting as `role_arn` (assumed through the local STS).
    pub async fn config_as(&self, role_arn: &str) -> aws_config::SdkConfig {
        let sts = aws_sdk_sts::Client::new(&self.config);
        let assumed = sts.assume_role().role_arn(role_arn).role_session_name("conveyor-tests").send().await.unwrap();
        let credentials = assumed.credentials.unwrap();
        let credentials = Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            None,
            "assumed",
        );
        self.config
            .to_builder()
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(credentials))
            .build()
    }

    /// What `infra/target-account.yaml` (stack `conveyor`) puts in `region` of the account
    /// `role_arn` acts in (Conveyor's own without one): the rule forwarding ECS's events to
    /// Conveyor's default bus, as EventBridge describes it to `conveyor doctor`, with `bus_region`
    /// as its `ConveyorRegion`. (The local AWS puts those events on the local bus itself.)
    pub async fn install_forwarding(&self, role_arn: Option<&str>, region: &str, bus_region: &str) {
        use aws_sdk_eventbridge::types::{RuleState, Target};
        let config = match role_arn {
            Some(role) => self.config_as(role).await,
            None => self.config.clone(),
        };
        let events = aws_sdk_eventbridge::Client::new(
            &config.to_builder().region(aws_config::Region::new(region.to_owned())).build(),
        );
        let rule = "conveyor-conveyor-deployments";
        let pattern =
            json!({ "source": ["aws.ecs"], "detail-type": ["ECS Deployment State Change", "ECS Hook State Change"] });
        events.put_rule().name(rule).event_pattern(pattern.to_string()).state(RuleState::Enabled).send().await.unwrap();
        let bus =
            Target::builder().id("conveyor").arn(format!("arn:aws:events:{bus_region}:{ACCOUNT}:event-bus/default"));
        events.put_targets().rule(rule).targets(bus.build().unwrap()).send().await.unwrap();
    }

    /// An ECS client working in `account` (through its Conveyor role).
    pub async fn ecs_in(&self, account: &str) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.config_as(&target_role(account)).await)
    }

    /// Seeds an app whose stage is here and whose prod runs in `account`: the prod cluster,
    /// service and task definition are created there (through the role), and the config names
    /// the role. The ECR repository, `{repository}-{id}` (the fixture's `repository`: the registry
    /// and repository policies are shared by every test), is created here, without a policy.
    pub async fn seed_app_across(&self, app: &str, repository: &str, account: &str) -> AppFixture {
        let repository = &self.name(repository);
        let mut fixture = self.seed_app(app, repository, false, json!({})).await;
        let b = self.ecs_in(account).await;
        fixture.prod = self.prod_service(&b, app, repository, account, "prod-b").await;
        let prod = json!({ "cluster": fixture.prod.cluster, "service": app, "role_arn": target_role(account) });
        self.put_app(app, &self.config_with_prod(repository, &fixture, prod)).await;
        let ecr = aws_sdk_ecr::Client::new(&self.config);
        ecr.create_repository().repository_name(repository).send().await.unwrap();
        fixture
    }

    /// Seeds an app whose stage is here and whose prod runs in this account's `region` (the
    /// config names the region): the prod cluster, service and task definition are created there.
    pub async fn seed_app_in_region(&self, app: &str, repository: &str, region: &str) -> AppFixture {
        let mut fixture = self.seed_app(app, repository, false, json!({})).await;
        let ecs = aws_sdk_ecs::Client::new(
            &self.config.to_builder().region(aws_config::Region::new(region.to_owned())).build(),
        );
        fixture.prod = self.prod_service(&ecs, app, repository, ACCOUNT, &format!("prod-{region}")).await;
        let prod = json!({ "cluster": fixture.prod.cluster, "service": app, "region": region });
        self.put_app(app, &self.config_with_prod(repository, &fixture, prod)).await;
        fixture
    }

    /// A service of `app` in this account's `region`, on cluster `{cluster}-{id}`, running
    /// `repository:v0.9.0` by tag.
    pub async fn service_in_region(&self, app: &str, repository: &str, region: &str, cluster: &str) -> ServiceFixture {
        let ecs = aws_sdk_ecs::Client::new(
            &self.config.to_builder().region(aws_config::Region::new(region.to_owned())).build(),
        );
        self.prod_service(&ecs, app, repository, ACCOUNT, cluster).await
    }

    /// Registers prod's task definition, creates its cluster (`{cluster}-{id}`) and service with
    /// `ecs` (a client of another account or region), running `repository:v0.9.0` by tag.
    async fn prod_service(
        &self,
        ecs: &aws_sdk_ecs::Client,
        app: &str,
        repository: &str,
        account: &str,
        cluster: &str,
    ) -> ServiceFixture {
        let image = format!("{}/{repository}:v0.9.0", self.registry());
        let family = self.name(&format!("{app}-{cluster}"));
        let cluster = self.name(cluster);
        let task_definition = ecs
            .register_task_definition()
            .family(&family)
            .execution_role_arn(crate::world::execution_role(account))
            .cpu("256")
            .memory("512")
            .container_definitions(
                aws_sdk_ecs::types::ContainerDefinition::builder()
                    .name("api")
                    .image(&image)
                    .memory(256)
                    .environment(aws_sdk_ecs::types::KeyValuePair::builder().name("ENVIRONMENT").value("prod").build())
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap()
            .task_definition_arn
            .unwrap();
        assert!(task_definition.contains(account), "moto put the revision in {task_definition}, not account {account}");
        ecs.create_cluster().cluster_name(&cluster).send().await.unwrap();
        ecs.create_service()
            .cluster(&cluster)
            .service_name(app)
            .task_definition(&task_definition)
            .desired_count(2)
            .send()
            .await
            .unwrap();
        ServiceFixture { cluster, service: app.to_owned(), family, initial_task_definition: task_definition }
    }

    /// The config of a seeded app with `prod` as its prod environment.
    fn config_with_prod(&self, repository: &str, fixture: &AppFixture, prod: Value) -> Value {
        json!({
            "repository": repository,
            "container": "api",
            "environments": {
                "stage": { "cluster": fixture.stage.cluster, "service": fixture.stage.service },
                "prod": prod,
            },
        })
    }

    /// Lets `account` pull `repository` (the statement promote asks for).
    pub async fn allow_pull(&self, repository: &str, account: &str) {
        let policy: Value = json!({ "Version": "2012-10-17", "Statement": [{
            "Sid": "ProdPull", "Effect": "Allow", "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"] }] });
        let ecr = aws_sdk_ecr::Client::new(&self.config);
        ecr.set_repository_policy().repository_name(repository).policy_text(policy.to_string()).send().await.unwrap();
    }

    /// The image the `api` container of a service in this account's `region` runs.
    pub async fn image_in_region(&self, region: &str, service: &ServiceFixture) -> String {
        let ecs = aws_sdk_ecs::Client::new(
            &self.config.to_builder().region(aws_config::Region::new(region.to_owned())).build(),
        );
        let current =
            ecs.describe_services().cluster(&service.cluster).services(&service.service).send().await.unwrap();
        let arn = current.services.unwrap()[0].task_definition.clone().unwrap();
        let described = ecs.describe_task_definition().task_definition(arn).send().await.unwrap();
        described.task_definition.unwrap().container_definitions()[0].image().unwrap().to_owned()
    }

    /// The image the `api` container of a service in `account` runs.
    pub async fn image_in(&self, account: &str, service: &ServiceFixture) -> String {
        let b = self.ecs_in(account).await;
        let current = b.describe_services().cluster(&service.cluster).services(&service.service).send().await.unwrap();
        let arn = current.services.unwrap()[0].task_definition.clone().unwrap();
        let described = b.describe_task_definition().task_definition(arn).send().await.unwrap();
        described.task_definition.unwrap().container_definitions()[0].image().unwrap().to_owned()
    }
}
