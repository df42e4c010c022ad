//! Access control (HIPAA 164.312(a)(1), (a)(2)(ii); 164.308(a)(4)).
//!
//! * [`policy`]: the policy language, IAM-style JSON documents of statements, parsed and
//!   checked once into a compiled form.
//! * [`engine`]: evaluation. An explicit deny wins, then an allow, else deny; statement
//!   and policy order never matter.
//! * [`managed`]: the built-in roles as managed (read-only) policies.
//! * [`service`]: principals, audited decisions, custom policies and their attachments,
//!   and the per-node policy cache.
//! * [`breakglass`]: emergency access with a stated reason, alerts and revocation.
//! * [`review`]: the access review of every account.
//!
//! This crate never imports the web framework: the API asks it for decisions.

pub mod actions;
pub mod breakglass;
pub mod engine;
mod glob;
pub mod managed;
pub mod policy;
pub mod review;
pub mod service;

pub use breakglass::GrantView;
pub use engine::{CredentialKind, Decision, Matched, RequestContext, evaluate, evaluate_with_session};
pub use policy::{Conditions, Effect, Policy, PolicyDocument, PolicyError, Statement};
pub use service::{
    Access, AccessError, AccessSettings, Attachments, Facts, PolicyView, Principal, Simulation, Subject, denial_event,
};
