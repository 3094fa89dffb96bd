//! Integration tests (one binary to keep link time low).
