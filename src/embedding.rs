//! Embedding bags. Being written.
