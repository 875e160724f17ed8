//! ecs (being built).
