//! not built yet
