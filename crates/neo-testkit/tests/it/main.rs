//! neo-testkit integration tests: real servers, real clients.

mod faults;
mod postgres;
mod receiver;
mod redis;
mod setup;
