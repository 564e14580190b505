//! Measured detection quality: graywatch against ground truth.

pub mod collect;
pub mod trainticket;
