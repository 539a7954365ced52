//! `keyward serve`: an AWS-compatible IAM and STS endpoint where every request is really authenticated.
//!
//! The HTTP layer ([`http`]) hands each request to [`app::App::handle`], which authenticates it
//! ([`auth`]), checks what the caller may do ([`authz`]) and runs the IAM, STS or S3 handler. Errors are
//! [`keyward_protocol::ApiError`] values rendered in the dialect of the addressed service.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod caller;
mod cloudtrail;
pub mod http;
mod iam;
pub mod keycache;
pub mod metrics;
mod respond;
mod s3;
pub mod session;
mod sts;
pub mod throttle;
pub mod tls;

pub use app::{App, AppConfig};
pub use bootstrap::{serve, ServeConfig};
