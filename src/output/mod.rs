//! Where translated events go. Outputs do the I/O (sockets, files); what they send comes from
//! the pure `format` module.

pub mod syslog;
