//! notification-service (being built).
