"""The retrieval service: app, settings, versioned bundles, write-ahead log."""
