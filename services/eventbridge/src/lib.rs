//! eventbridge (being built).
