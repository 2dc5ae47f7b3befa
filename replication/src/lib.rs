//! walship replication.
