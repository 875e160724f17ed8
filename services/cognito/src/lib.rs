//! cognito (being built).
