//! An operations console for neo-commons services: a mountable axum router of server-rendered
//! pages over the job queues and their dead letters, webhook endpoints and deliveries, the
//! outboxes, the caches and the database.
//!
//! - **Queues**: capped counts per state and queue, the oldest pending job, dead letters one
//!   keyset page at a time with their error and attempts; retry or discard one or many;
//!   pause and resume a queue; jobs enqueued and finished per second over the last minutes
//!   as an inline SVG chart (sampled from PostgreSQL's row counts of the `jobs` table,
//!   nothing written on the queue's hot path).
//! - **Webhooks**: endpoints one keyset page at a time with their health over their latest
//!   deliveries (success rate, p50/p99 duration, pending, dead), disabled reason; one
//!   endpoint's deliveries, each with every attempt kept (outcome, status, duration, response
//!   excerpt); one delivery with its attempts and payload; replay one; recover every delivery
//!   dead since a time; enable or disable; rotate the secret (shown once, in the answer to the
//!   POST).
//! - **Outbox**: lag, pending, last dispatch. **Cache**: hit ratio, entries, evictions, loads.
//!   **Database**: pool use, the top statements beside a query baseline
//!   ([`ConsoleBuilder::baselines`]), and the sessions waiting on locks with who blocks them.
//!
//! # Security
//! Every request goes through the host's [`Authorizer`] ([`BearerToken`] by default: a
//! bearer header or the cookie its login form sets); without a principal the console answers
//! 401. Every action is a POST whose form carries a CSRF token bound to the principal (403
//! without it). Every value is escaped by maud's templates; pages carry a
//! `Content-Security-Policy` that runs no script at all. Endpoint secrets and header values are
//! never read for a page; a rotated secret is shown once, in the answer to the rotation.
//!
//! # Tenants
//! [`ConsoleBuilder::tenant`] builds the same router for one tenant: only its endpoints and
//! deliveries, and its own jobs' counts and dead letters (by the jobs' tenant key), are
//! listed, and an id of another tenant's is 404 for every page and action.
//!
//! # Example
//! ```no_run
//! # fn demo(db: neo_db::Db, queue: neo_queue::Queue, webhooks: neo_events::Webhooks) -> neo_console::Result<()> {
//! use neo_console::{BearerToken, Console, ConsoleConfig};
//! let config = ConsoleConfig::default();
//! let auth = BearerToken::new("a long random operator token".to_owned().into(), &config.cookie_name)?;
//! let console = Console::builder(config, auth)
//!     .db(&db, Default::default())
//!     .queue(queue)
//!     .webhooks(webhooks)
//!     .outbox("neo_events")
//!     .build()?;
//! let app: axum::Router = axum::Router::new().nest("/ops", console.router());
//! # Ok(()) }
//! ```

mod auth;
mod chart;
mod config;
mod console;
mod error;
mod html;
mod pages;
mod throughput;

pub use auth::{Authorizer, BearerToken, Principal};
pub use config::ConsoleConfig;
pub use console::{Console, ConsoleBuilder};
pub use error::{Error, Result};
