//! Helpers for btd end-to-end tests live in the test files; this library is intentionally empty.
