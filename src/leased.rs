//! Working under a lease: take it, do the work, announce what was committed, release it.
//!
//! [`Leases`] is the one way a flow works under a lease, so that none forgets to announce or to
//! release; [`Leased`] is what a flow's steps receive for one environment of one app.

use crate::config::AppConfig;
use crate::fleet::Target;
use crate::ledger::{Change, Held, Lease, LeasedState, Ledger, LedgerError};
use crate::metrics;
use crate::notify::Notifier;
use crate::record::EnvState;
use crate::types::Environment;

/// The ledger leases are held in, and the notifier that delivers their outbox before release.
#[derive(Clone, Copy)]
pub struct Leases<'a> {
    pub ledger: &'a Ledger,
    pub notifier: &'a Notifier,
}

impl<'a> Leases<'a> {
    /// Takes `lease`, runs `work` under it, then, whatever `work` returned: emits the metric of
    /// each transition it committed, delivers the outbox and releases the lease.
    pub async fn with<S, T, E>(
        self,
        lease: Lease<'_>,
        work: impl AsyncFnOnce(&mut Held<S>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        S: LeasedState,
        E: From<LedgerError>,
    {
        let mut held = self.ledger.acquire(lease).await?;
        let result = work(&mut held).await;
        for transition in held.committed() {
            metrics::transition(transition);
        }
        let deliveries = self.notifier.deliver(&held.outbox).await;
        held.release(self.ledger, &deliveries).await;
        result
    }

    /// [`Leases::with`] for the lease of `env` of `app` (the lease's key), the work receiving it
    /// as a [`Leased`].
    pub async fn with_env<T, E>(
        self,
        lease: Lease<'_>,
        app: &AppConfig,
        env: Environment,
        target: Target<'_>,
        work: impl AsyncFnOnce(&mut Leased<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError>,
    {
        let ledger = self.ledger;
        self.with(lease, async |held: &mut Held<EnvState>| work(&mut Leased { app, env, target, held, ledger }).await)
            .await
    }
}

/// One environment of one app, under this invocation's lease: its config, where its service
/// runs, and its state as the lease was taken, which [`Leased::commit`] moves on.
pub struct Leased<'a> {
    pub app: &'a AppConfig,
    pub env: Environment,
    pub target: Target<'a>,
    pub held: &'a mut Held<EnvState>,
    ledger: &'a Ledger,
}

impl Leased<'_> {
    /// Commits `change` under the lease (see [`Held::commit`]).
    pub async fn commit(&mut self, change: Change<EnvState>) -> Result<(), LedgerError> {
        self.held.commit(self.ledger, change).await
    }

    /// Records `intent` before the call it announces (see [`Held::record_intent`]).
    pub async fn record_intent(&mut self, intent: crate::ledger::Intent) -> Result<(), LedgerError> {
        self.held.record_intent(self.ledger, intent).await
    }

    /// The state, which exists once the first contact was committed.
    pub fn state(&self) -> Result<&EnvState, LedgerError> {
        self.held.require_state()
    }

    /// The ledger, for reads beside the leased item (image facts, tags).
    pub fn ledger(&self) -> &Ledger {
        self.ledger
    }
}
