//! user-service (being built).
