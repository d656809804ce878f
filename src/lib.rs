//! repdist service
