//! The `ward` command: wiring of configuration, data dir, storage, domain services and
//! the HTTP server, plus the administrative commands that run on the same data dir or
//! database as a running server.
//!
//! * [`cli`]: the command line (clap), exit codes, one-line errors.
//! * [`startup`]: configuration layers, logging, the data dir, opening storage, building
//!   the domain services: everything `serve` and the admin commands share.
//! * [`serve`]: `ward serve`.
//! * [`admin`]: `ward user …`; [`audit_cmd`]: `ward audit …`; [`keys_cmd`]: `ward keys …`;
//!   [`access_cmd`]: `ward access review`.

pub mod access_cmd;
pub mod admin;
pub mod audit_cmd;
pub mod cli;
pub mod cluster;
pub mod datadir;
pub mod keys_cmd;
pub mod serve;
pub mod startup;
