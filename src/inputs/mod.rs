//! Where payloads come from. Inputs hand payloads to the [`crate::pipeline::Pipeline`] and
//! acknowledge their source only once it answered.

pub mod http;
pub mod tls;
