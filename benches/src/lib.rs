//! walship benchmarks: criterion micro-benchmarks and the comparison harness.
