//! milink-postgres: not built yet (work in progress in this session).
