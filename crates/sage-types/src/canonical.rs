//! Python-compatible canonical JSON (the legacy protocol's signed bytes).
