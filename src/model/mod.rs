//! Pure domain types (MAC, model catalogue, records, settings) and the layered merge.
//! No axum, sled or tera types; the only I/O is the explicit catalogue loader.

pub mod agent;
pub mod catalogue;
pub mod json;
pub mod mac;
pub mod merge;
pub mod records;
pub mod rules;
pub mod settings;

pub use catalogue::{Catalogue, FileRef, FileSpec, Format, Model};
pub use mac::Mac;
pub use merge::{Layer, Merged};
pub use records::{
    Account, AuthScheme, Domain, Gate, LineType, Member, Overrides, Phone, PreviousCredentials,
    Token, sample_phone,
};
pub use settings::Settings;
