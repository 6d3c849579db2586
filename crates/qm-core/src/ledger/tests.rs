//! Ledger unit tests.
