//! Multi-process integration tests and the crash-recovery harness for walship.
