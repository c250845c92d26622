//! Redis connections for neo-commons: the one layer through which neo-cache and neo-coord
//! reach Redis.
//!
//! [`RedisConnections`] is a few multiplexed connections (redis-rs' `ConnectionManager`)
//! shared round robin by every call: a call never waits for a free connection and never pays
//! a health check first. Each opens on first use and is reopened by the next call after a
//! failure; connecting and each answer give up after the configured timeout.
//! [`ClusterConnections`] reaches a Redis Cluster and [`SentinelConnections`] the master that
//! Redis Sentinel names (following it across failovers).
//! [`RedisConfig`] says where Redis is (one server, TLS, a Redis Cluster or Sentinel; see
//! [`RedisMode`]) and how many connections to keep; settings that do not go together are
//! refused by [`RedisConfig::mode`] with an error naming them.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> neo_redis::Result<()> {
//! use neo_redis::{RedisConfig, RedisConnections};
//! let redis = RedisConnections::connect(&RedisConfig::new("redis://127.0.0.1:6379"))?;
//! let mut conn = redis.get()?;
//! let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
//! # let _ = pong; Ok(()) }
//! ```
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `env` | `RedisConfig::from_env()` (reads `NEO_REDIS_*`) |

mod cluster;
mod config;
mod connections;
mod error;
mod redact;
mod sentinel;
mod subscriber;
mod tls;

pub use cluster::ClusterConnections;
pub use config::{ClusterConfig, RedisConfig, RedisMode, SentinelConfig, TlsConfig};
pub use connections::{RedisConnections, redis_connections};
pub use error::{Error, Result};
pub use sentinel::{SentinelConnection, SentinelConnections};
pub use subscriber::Subscribers;
