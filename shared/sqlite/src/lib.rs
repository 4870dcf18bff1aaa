//! milink-sqlite: not built yet (work in progress in this session).
