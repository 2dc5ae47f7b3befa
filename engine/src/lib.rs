//! walship engine.
