//! `graywatch run`: the pipeline on Kafka. Configuration in [`config`].

pub mod config;
