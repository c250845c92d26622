//! neo-core integration tests: one binary, one module per area.

mod clock;
mod config;
mod cursor;
mod errors;
mod ids;
mod pagination;
mod properties;
mod values;
