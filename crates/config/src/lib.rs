//! Ward's configuration.
//!
//! One typed tree ([`Config`]) assembled from four layers, later layers winning:
//! built-in defaults, a TOML file (`--config`), `WARD_<SECTION>_<KEY>` environment
//! variables, and command-line flags. The merged tree is deserialized with
//! `deny_unknown_fields` and then [`Config::validate`]d, so an unknown key, a wrong type
//! or an out-of-range value becomes one [`ConfigError`] that names the key and where the
//! value came from. Nothing here reads the process environment or the disk on its own:
//! the caller passes the file text and the variables in, which keeps loading testable.
//!
//! Sections without settings yet (`files`, `retention`,
//! `backup`) are accepted as empty tables; they gain keys as their features land, and
//! until then any key in them is reported as unknown rather than silently ignored.

mod load;
mod model;

pub use load::{ConfigError, Layers, load};
pub use model::*;
