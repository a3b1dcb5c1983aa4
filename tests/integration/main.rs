//! Integration tests against a real local AWS (moto server, started by the test kit).
//! One test binary, so one link step; every test gets its own resources and runs in parallel.
#![allow(clippy::unwrap_used)]

mod alarms;
mod approvals;
mod aws_calls;
mod burst;
mod channels;
mod cleanup;
mod cli;
mod cli_docs;
mod cross_account;
mod deploy_monitor;
mod doctor;
mod e2e;
mod fault_matrix;
mod holes_monitor;
mod holes_state;
mod iam;
mod localaws_faults;
mod model;
mod native;
mod pipelines;
mod playground;
mod promote;
mod real_taskdefs;
mod routing;
mod stage_deploy;
mod stage_deploy_binary;
mod support;
mod taskdef_roundtrip;
mod trust_boundary;
mod waves;
