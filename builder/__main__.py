from builder import console

raise SystemExit(console())
