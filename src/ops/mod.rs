//! Day-2 operations on the state table: status, history, DORA metrics (used by the `conveyor` CLI).
