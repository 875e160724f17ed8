//! cloudwatch (being built).
