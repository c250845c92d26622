//! neo-console against real PostgreSQL (and, in `browser`, headless Chromium).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod browser;
mod common;
mod pages;
mod security;
mod speed;
mod tenants;
mod webhooks;
