//! Working under a lease: take it, do the work, announce what was committed, release it.
//!
//! [`Leases`] is the one way a flow works under a lease, so that none forgets to announce or to
//! release; [`Leased`] is what a flow's steps receive for one environment of one app.

use crate::config::AppConfig;
use crate::fleet::{Fleet, Target};
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
    /// as a [`Leased`] of the environment's first target.
    pub async fn with_env<T, E>(
        self,
        lease: Lease<'_>,
        fleet: &Fleet,
        app: &AppConfig,
        env: Environment,
        work: impl AsyncFnOnce(&mut Leased<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError> + From<crate::config::NoSuchEnvironment>,
    {
        self.with_target(lease, fleet, app, env, 0, work).await
    }

    /// [`Leases::with_env`] for target `index` of the environment.
    pub async fn with_target<T, E>(
        self,
        lease: Lease<'_>,
        fleet: &Fleet,
        app: &AppConfig,
        env: Environment,
        index: usize,
        work: impl AsyncFnOnce(&mut Leased<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError> + From<crate::config::NoSuchEnvironment>,
    {
        let target = fleet.target(app, app.target_at(env, index)?).await;
        let ledger = self.ledger;
        self.with(lease, async |held: &mut Held<EnvState>| {
            work(&mut Leased { app, env, index, target, fleet, held, ledger }).await
        })
        .await
    }
}

/// One environment of one app, under this invocation's lease: its config, where one of its
/// targets runs (`index`: its first, or with several targets another), and its state as the lease
/// was taken, which [`Leased::commit`] moves on. Every target's state lives in the environment's
/// one item ([`EnvState::targets`]), so one lease and one transaction cover the whole environment.
pub struct Leased<'a> {
    pub app: &'a AppConfig,
    pub env: Environment,
    /// Which of the environment's targets this view works on (0: the first).
    pub index: usize,
    pub target: Target<'a>,
    fleet: &'a Fleet,
    pub held: &'a mut Held<EnvState>,
    ledger: &'a Ledger,
}

impl Leased<'_> {
    /// Commits `change` under the lease (see [`Held::commit`]): `change.state` is this target's
    /// state, put in its place in the environment's.
    pub async fn commit(&mut self, mut change: Change<EnvState>) -> Result<(), LedgerError> {
        if self.index > 0 {
            let mut env = self.held.require_state()?.clone();
            let next = env.targets.len() + 1;
            match env.target_mut(self.index) {
                Some(recorded) => *recorded = change.state,
                // First contact: targets are contacted in order, so it is the next one.
                None if self.index == next => env.targets.push(change.state),
                None => {
                    return Err(LedgerError::Corrupt {
                        item: self.held.key.label(),
                        problem: format!("target {} is recorded before target {}", self.index + 1, self.index),
                    })
                }
            }
            change.state = env;
        }
        self.held.commit(self.ledger, change).await
    }

    /// The same lease, working on target `index` of the environment.
    pub async fn at(&mut self, index: usize) -> Result<Leased<'_>, crate::config::NoSuchEnvironment> {
        let (app, env, fleet) = (self.app, self.env, self.fleet);
        let target = fleet.target(app, app.target_at(env, index)?).await;
        Ok(Leased { app, env, index, target, fleet, held: &mut *self.held, ledger: self.ledger })
    }

    /// This target's state, if it was ever contacted. A state recorded for another service (the
    /// config's targets reordered, or one replaced) is not this target's: it starts afresh.
    pub fn target_state(&self) -> Option<&EnvState> {
        let service = self.target.service;
        let ours = |s: &&EnvState| self.index == 0 || (s.cluster == service.cluster && s.service == service.service);
        self.held.state.as_ref().and_then(|env| env.target(self.index)).filter(ours)
    }

    /// The environment's state (its first target's, with every other target's inside).
    pub fn env_state(&self) -> Result<&EnvState, LedgerError> {
        self.held.require_state()
    }

    /// Records `intent` before the call it announces (see [`Held::record_intent`]).
    pub async fn record_intent(&mut self, intent: crate::ledger::Intent) -> Result<(), LedgerError> {
        self.held.record_intent(self.ledger, intent).await
    }

    /// This target's state, which exists once the first contact was committed.
    pub fn state(&self) -> Result<&EnvState, LedgerError> {
        self.target_state().ok_or_else(|| LedgerError::Corrupt {
            item: self.held.key.label(),
            problem: format!("no state of target {}", self.index),
        })
    }

    /// The ledger, for reads beside the leased item (image facts, tags).
    pub fn ledger(&self) -> &Ledger {
        self.ledger
    }
}
