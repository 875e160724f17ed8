//! lambda (being built).
