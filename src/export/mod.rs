//! Content generated from the mapping files for the SIEMs we feed: pure, it returns files as
//! text and the CLI writes them.

pub mod elastic;
pub mod qradar;
