"""Layer tarballs: deterministic writing, safe extraction, compression, whiteouts."""
