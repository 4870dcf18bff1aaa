//! milink-azure: not built yet (work in progress in this session).
